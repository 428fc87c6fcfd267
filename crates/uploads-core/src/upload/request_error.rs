//! The error of one request, how the retry policy sees it, and how a program shows it.

use std::time::Duration;

use crate::api::{ApiError, BuildError, ResponseError};
use crate::retry::Failure;

/// How connecting to the service failed, as a driver tells it from its transport's error
/// (see [`connect_failure`](super::connect_failure)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens at the address.
    #[error("connection refused")]
    Refused,
    /// No answer to the connection attempt in time.
    #[error("timed out")]
    TimedOut,
    /// The TLS handshake failed (an unknown certificate, an https URL pointing at a port
    /// that speaks plain HTTP...). Not retried: the same handshake fails the same way.
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
///
/// # Mapping a transport's errors
///
/// A driver (the clients here, or one on another HTTP library, e.g. reqwest) MUST map each
/// failed exchange to the variant that says what happened, since the retry policy reads it
/// ([`as_failure`](Self::as_failure)) and a program shows it:
///
/// | the transport says | variant | retried |
/// |---|---|---|
/// | connecting failed: refused, timed out, the TLS handshake failed (an unknown certificate, an https URL to a plain-http port), the name did not resolve | [`Connect`](Self::Connect), with [`connect_address`](super::connect_address) and [`connect_failure`](super::connect_failure) | a timeout, a refusal over the network and other failures, yes; a refusal on this machine (nothing listens there) or a failed TLS handshake, no |
/// | its own time limit passed | [`Timeout`](Self::Timeout) | yes |
/// | the answer does not begin with an HTTP status line (an `http://` URL to an https port: a TLS alert came back) | [`Protocol`](Self::Protocol), with [`connect_address`](super::connect_address) | no |
/// | anything else on the way: a reset, an answer cut short or garbled after its status line | [`Transport`](Self::Transport) | yes |
/// | reading the data to send failed | [`Source`](Self::Source) | no |
///
/// `Protocol` MUST NOT be used for an answer that begins as HTTP and breaks later (a bad
/// header, a body cut short): that is `Transport`, and retried.
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
    /// The peer at `address` answered, but not in HTTP: the first bytes of its answer are no
    /// HTTP status line. Most often an `http://` URL pointing at a port that speaks https
    /// (a TLS server answers plain HTTP with an alert record). No retry can fix it.
    #[error("{address} did not answer in HTTP (does it speak https?)")]
    Protocol {
        /// The `host:port` the request went to.
        address: String,
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
    /// read, a failed TLS handshake or a peer that does not answer in HTTP). The clock only
    /// dates a `Retry-After`, which does not change that answer.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.as_failure(0)
            .is_some_and(|failure| failure.is_retryable())
    }

    /// How the retry policy sees this error; `None` for an error no retry can fix: the
    /// request cannot be built, its data cannot be read, or the peer does not speak what the
    /// URL says (the TLS handshake failed, or the answer is not HTTP).
    pub fn as_failure(&self, now_unix_ms: u64) -> Option<Failure> {
        match self {
            Self::Build(_)
            | Self::Source(_)
            | Self::Unanswered
            | Self::Protocol { .. }
            | Self::Connect {
                kind: ConnectFailure::Tls,
                ..
            } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(kind: ConnectFailure) -> RequestError<std::io::Error> {
        RequestError::Connect {
            address: "127.0.0.1:8443".to_owned(),
            kind,
            source: std::io::Error::other("handshake"),
        }
    }

    #[test]
    fn a_failed_tls_handshake_is_final() {
        let tls = connect(ConnectFailure::Tls);
        assert_eq!(tls.as_failure(0), None);
        assert!(!tls.is_retryable());
        assert_eq!(
            tls.to_string(),
            "cannot connect to 127.0.0.1:8443 (TLS handshake failed)"
        );
    }

    #[test]
    fn a_peer_that_does_not_speak_http_is_final_and_named() {
        let protocol: RequestError<std::io::Error> = RequestError::Protocol {
            address: "127.0.0.1:8443".to_owned(),
            source: std::io::Error::other("invalid HTTP version parsed"),
        };
        assert_eq!(protocol.as_failure(0), None);
        assert!(!protocol.is_retryable());
        assert_eq!(
            error_chain(&protocol),
            "127.0.0.1:8443 did not answer in HTTP (does it speak https?): invalid HTTP version parsed"
        );
    }

    #[test]
    fn other_connection_failures_are_retried() {
        assert_eq!(
            connect(ConnectFailure::Other).as_failure(0),
            Some(Failure::Connection)
        );
        assert_eq!(
            connect(ConnectFailure::TimedOut).as_failure(0),
            Some(Failure::Timeout)
        );
        let transport: RequestError<std::io::Error> =
            RequestError::Transport(std::io::Error::other("reset"));
        assert!(transport.is_retryable());
    }
}
