//! Sans-IO core of OpenAI's multipart Uploads API.

pub mod api;
pub mod auth;
pub mod digest;
pub mod ledger;
pub mod limits;
pub mod multipart;
pub mod rejection;
pub mod retry;
pub mod route;
pub mod session;
pub mod types;
pub mod upload;

pub use http;
