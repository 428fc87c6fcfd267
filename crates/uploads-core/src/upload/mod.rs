//! What every driver's upload shares, so the async and the blocking clients are the same
//! product with different transports: the options of `upload_file` and their checks before
//! any request, the error of one request ([`RequestError`]) and of a whole upload
//! ([`UploadError`]), each generic over the driver's transport error. The
//! [`Uploader`](crate::uploader::Uploader) runs the upload itself.

mod connect;
mod error;
mod options;
mod request_error;
#[cfg(test)]
mod tests;

pub use connect::{connect_address, connect_failure};
pub use error::{AbortCause, OptionsError, UploadError};
pub use options::{
    DEFAULT_CONCURRENCY, DEFAULT_STALL_TIMEOUT, MIN_DEFAULT_PART_SIZE, ProgressCallback,
    UploadOptions, default_part_size,
};
pub use request_error::{ConnectFailure, RequestError, error_chain, is_loopback_address};
