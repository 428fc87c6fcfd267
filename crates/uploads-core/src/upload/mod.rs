//! What every driver's high-level upload shares, so the async and the blocking clients are
//! the same product with different transports: the options of `upload_file`, their checks
//! before any request (of a new upload and of a resume), the error of one request
//! ([`RequestError`]) and of a whole upload ([`UploadError`]), each generic over the driver's
//! transport error, and the fingerprint that ties a resume snapshot to its source. The
//! [`Uploader`](crate::uploader::Uploader) runs the upload itself; its parts phase is
//! `UploadRun` here, which turns each part attempt's result into the session's update or the
//! reason to give up.

mod connect;
mod error;
mod options;
mod request_error;
mod resume;
mod run;
#[cfg(test)]
mod tests;

pub use connect::{connect_address, connect_failure};
pub use error::{AbortCause, OptionsError, UploadError};
pub use options::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_PARTS, MIN_DEFAULT_PART_SIZE, ProgressCallback, UploadOptions,
    default_part_size,
};
pub use request_error::{ConnectFailure, RequestError, error_chain, is_loopback_address};
pub use resume::{SnapshotSource, source_fingerprint};
pub(crate) use run::{NextStep, UploadRun};
