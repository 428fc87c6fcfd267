//! `multipart/form-data`, both ways.
//!
//! * [`MultipartBody`] encodes a body as head bytes, the caller's data, and tail bytes, with
//!   the exact total length known up front, so an adapter streams a Part straight from disk.
//! * [`MultipartDecoder`] is a push parser: feed it chunks as they arrive, take [`Event`]s
//!   out (field headers, data as slices of the chunks, field end, end of body). It enforces
//!   [`DecoderLimits`] as soon as one is crossed, naming the field at fault, never panics,
//!   and never buffers more than one header block or a boundary-sized tail.
//!   [`boundary_from_content_type`] reads the boundary out of the request's `Content-Type`.

mod decode;
mod encode;

pub use decode::{
    DecoderLimits, Event, FieldHeaders, MultipartDecoder, MultipartError,
    boundary_from_content_type,
};
pub use encode::{Boundary, FileField, MultipartBody};
