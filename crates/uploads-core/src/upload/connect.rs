//! Where a request goes and how connecting to it failed: what a driver needs to turn its
//! transport's error into a [`RequestError`](super::RequestError) that names the address and that the retry
//! policy reads right (the mapping is in its docs). Pure functions over a URI
//! and an error chain; no I/O.

use std::error::Error;
use std::io;

use http::Uri;

use super::ConnectFailure;

/// The `host:port` a request to `uri` connects to (the scheme's port when the URI has none),
/// for [`RequestError::Connect`](super::RequestError::Connect) and
/// [`RequestError::Protocol`](super::RequestError::Protocol).
pub fn connect_address(uri: &Uri) -> String {
    let host = uri.host().unwrap_or_default();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{host}:{port}")
}

/// How connecting failed, read from `error` and its causes, for
/// [`RequestError::Connect`](super::RequestError::Connect):
/// an [`io::Error`] of kind `ConnectionRefused` or `TimedOut`, or an error `is_tls`
/// recognises as the TLS library's (e.g. `rustls::Error`), also when wrapped in
/// [`io::Error`]s (whose `source` skips the error they wrap); [`ConnectFailure::Other`]
/// otherwise.
pub fn connect_failure(
    error: &(dyn Error + 'static),
    is_tls: impl Fn(&(dyn Error + 'static)) -> bool,
) -> ConnectFailure {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if is_tls(error) {
            return ConnectFailure::Tls;
        }
        cause = error.source();
        if let Some(io) = error.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return ConnectFailure::Refused,
                io::ErrorKind::TimedOut => return ConnectFailure::TimedOut,
                _ => {}
            }
            if let Some(inner) = io.get_ref() {
                cause = Some(inner);
            }
        }
    }
    ConnectFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::RequestError;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("bad certificate")]
    struct FakeTls;

    fn no_tls(_: &(dyn Error + 'static)) -> bool {
        false
    }

    #[test]
    fn the_address_has_a_port() {
        let uri = |text: &str| text.parse::<Uri>().unwrap();
        assert_eq!(
            connect_address(&uri("http://127.0.0.1:18099/v1")),
            "127.0.0.1:18099"
        );
        assert_eq!(
            connect_address(&uri("https://api.openai.com/v1")),
            "api.openai.com:443"
        );
        assert_eq!(connect_address(&uri("http://[::1]/v1")), "[::1]:80");
    }

    #[test]
    fn the_kind_comes_from_the_causes() {
        let refused = Wrapper(io::ErrorKind::ConnectionRefused.into());
        assert_eq!(connect_failure(&refused, no_tls), ConnectFailure::Refused);
        let timed_out = Wrapper(io::ErrorKind::TimedOut.into());
        assert_eq!(
            connect_failure(&timed_out, no_tls),
            ConnectFailure::TimedOut
        );
        let tls = Wrapper(io::Error::other(FakeTls));
        assert_eq!(
            connect_failure(&tls, <dyn Error>::is::<FakeTls>),
            ConnectFailure::Tls
        );
        let other = Wrapper(io::ErrorKind::NotFound.into());
        assert_eq!(connect_failure(&other, no_tls), ConnectFailure::Other);
    }

    #[test]
    fn a_tls_error_is_found_under_io_errors_wrapped_in_io_errors() {
        // hyper-rustls: the connector's io::Error wraps tokio-rustls' io::Error, which wraps
        // rustls' error.
        let wrapped = Wrapper(io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            FakeTls,
        )));
        assert_eq!(
            connect_failure(&wrapped, <dyn Error>::is::<FakeTls>),
            ConnectFailure::Tls
        );
    }

    #[test]
    fn a_driver_names_the_address_it_could_not_reach() {
        let uri: Uri = "https://127.0.0.1:8443/v1/uploads".parse().unwrap();
        let source = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, FakeTls));
        let error = RequestError::Connect {
            address: connect_address(&uri),
            kind: connect_failure(&source, <dyn Error>::is::<FakeTls>),
            source,
        };
        assert_eq!(
            error.to_string(),
            "cannot connect to 127.0.0.1:8443 (TLS handshake failed)"
        );
        assert!(!error.is_retryable());
    }
}
