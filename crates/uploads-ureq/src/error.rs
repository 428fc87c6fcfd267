//! The errors of this client: the core's [`RequestError`](uploads_core::upload::RequestError)
//! and [`UploadError`](uploads_core::upload::UploadError) over this crate's
//! [`TransportError`].

/// What went wrong on the way, below HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Connecting, sending the request or reading the response failed.
    #[error("the request failed: {0}")]
    Http(#[source] ureq::Error),
}

/// The error of one request.
pub type Error = uploads_core::upload::RequestError<TransportError>;

/// The error of a high-level upload.
pub type UploadError = uploads_core::upload::UploadError<TransportError>;

/// What made a high-level upload give up after its Upload was created.
pub type AbortCause = uploads_core::upload::AbortCause<TransportError>;
