//! The error of one request, how the retry policy sees it, and how a program shows it.

use std::time::Duration;

use crate::api::{ApiError, BuildError, ResponseError};
use crate::retry::Failure;

/// How connecting to the service failed, as a driver tells it from its transport's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens at the address.
    #[error("connection refused")]
    Refused,
    /// No answer to the connection attempt in time.
    #[error("timed out")]
    TimedOut,
    /// The TLS handshake failed (an unknown certificate, a protocol mismatch...).
    #[error("TLS handshake failed")]
    Tls,
    /// Anything else (the name does not resolve, the network is unreachable...).
    #[error("connection failed")]
    Other,
}

/// Whether `address` (`host:port`, the host maybe a bracketed IPv6 address) is this
/// machine's own: `localhost` or a loopback IP address.
pub fn is_loopback_address(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The error of one request: what the low-level calls of every adapter return. `E` is the
/// adapter's transport error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError<E> {
    /// The request could not be built (bad base URL, key with invalid characters, ...).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The service answered with an error (or a body that is not what it should be).
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// Connecting to the service failed: the address (`host:port`) and how are kept so a
    /// program can say `cannot connect to 127.0.0.1:8000 (connection refused)`.
    #[error("cannot connect to {address} ({kind})")]
    Connect {
        /// The `host:port` the request went to.
        address: String,
        /// How connecting failed.
        kind: ConnectFailure,
        /// The transport's own error.
        #[source]
        source: E,
    },
    /// The request or its response failed on the way.
    #[error("transport error")]
    Transport(#[source] E),
    /// Reading the data to send failed: the file could not be read, or is shorter than it
    /// was. The request was cut short; no retry can fix it.
    #[error("reading the data to send failed")]
    Source(#[source] std::io::Error),
    /// No answer in time.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
    /// The request moved no bytes and got no answer for this long: the uploader's stall
    /// rule gave up on the attempt (and retries it like a timeout).
    #[error("the request stalled: no bytes moved and no answer for {0:?}")]
    Stalled(Duration),
    /// The driver's task for the request ended without an answer: it panicked, or was
    /// dropped. Not retried, since it would likely end the same way.
    #[error("the driver's task ended without an answer")]
    Unanswered,
}

impl<E> RequestError<E> {
    /// The service's error, when it answered with a non-2xx status.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Response(response) => response.api_error(),
            _ => None,
        }
    }

    /// Whether sending the request again may succeed, by the retry policy's rule (408, 409,
    /// 429, 5xx, a broken connection or a timeout; never a request that cannot be built or
    /// read). The clock only dates a `Retry-After`, which does not change that answer.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.as_failure(0)
            .is_some_and(|failure| failure.is_retryable())
    }

    /// How the retry policy sees this error; `None` for an error no retry can fix (the
    /// request cannot be built, or its data cannot be read).
    pub fn as_failure(&self, now_unix_ms: u64) -> Option<Failure> {
        match self {
            Self::Build(_) | Self::Source(_) | Self::Unanswered => None,
            Self::Response(ResponseError::Api(api)) => Some(Failure::from_response(
                api.status,
                &api.headers,
                now_unix_ms,
            )),
            Self::Connect {
                address,
                kind: ConnectFailure::Refused,
                ..
            } => Some(Failure::Refused {
                loopback: is_loopback_address(address),
            }),
            Self::Connect {
                kind: ConnectFailure::TimedOut,
                ..
            }
            | Self::Timeout(_)
            | Self::Stalled(_) => Some(Failure::Timeout),
            // A 2xx whose body does not parse is most often a response cut short.
            Self::Response(_) | Self::Transport(_) | Self::Connect { .. } => {
                Some(Failure::Connection)
            }
        }
    }
}

/// The text of `error` and of every cause under it, joined by `: ` as one line, e.g.
/// `creating the Upload failed: cannot connect to 127.0.0.1:8000 (connection refused)`.
/// This crate's errors never repeat their cause in their own message (the cause is their
/// `source`), so a program that shows errors prints this, not just the outer message. A
/// cause whose text is already in the line (an error from elsewhere that does repeat its
/// cause) is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = error.source();
    }
    line
}
