//! `multipart/form-data`, both ways.
//!
//! * [`MultipartBody`] encodes a body as head bytes, the caller's data, and tail bytes, with
//!   the exact total length known up front, so an adapter streams a Part straight from disk.
//! * The decoder is a push parser: feed it bytes as they arrive, take events out; it has hard
//!   limits, never panics and never buffers a whole field.

mod decode;
mod encode;

pub use encode::{Boundary, FileField, MultipartBody};
