//! The errors of this client: the core's [`RequestError`](uploads_core::upload::RequestError)
//! and [`UploadError`](uploads_core::upload::UploadError) over this crate's
//! [`TransportError`].

/// What went wrong on the way, below HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Connecting, sending the request or reading the response failed.
    #[error("the request failed")]
    Http(#[source] ureq::Error),
}

/// The error of one request. A connection that could not be made is
/// [`RequestError::Connect`](uploads_core::upload::RequestError::Connect): its `address`
/// (`host:port`) and `kind` ([`ConnectFailure`](uploads_core::upload::ConnectFailure):
/// refused, timed out, TLS) say what to tell the user, e.g. `cannot connect to
/// 127.0.0.1:18099 (connection refused)`; the transport's error is its source. A peer that
/// answered, but not in HTTP (an `http://` URL to a port that speaks https), is
/// [`RequestError::Protocol`](uploads_core::upload::RequestError::Protocol), with the
/// address. A refusal on this machine's own address, a failed TLS handshake and a `Protocol`
/// error are not retried.
pub type Error = uploads_core::upload::RequestError<TransportError>;

/// The error of a high-level upload.
pub type UploadError = uploads_core::upload::UploadError<TransportError>;

/// What made a high-level upload give up after its Upload was created.
pub type AbortCause = uploads_core::upload::AbortCause<TransportError>;
