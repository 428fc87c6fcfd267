//! Telling a failed connection from any other transport failure, for
//! [`RequestError::Connect`](uploads_core::upload::RequestError::Connect): where the request
//! went and how connecting failed.

use std::error::Error;
use std::io;

use uploads_core::http::Uri;
use uploads_core::upload::ConnectFailure;

/// The `host:port` a request to `uri` connects to (the scheme's port when the URI has none).
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

/// How connecting failed, read from `error` and its causes: an [`io::Error`] of kind
/// `ConnectionRefused` or `TimedOut` (also one wrapped in another), or an error `is_tls`
/// recognises as the TLS library's; [`ConnectFailure::Other`] otherwise.
pub fn connect_failure(
    error: &(dyn Error + 'static),
    is_tls: impl Fn(&(dyn Error + 'static)) -> bool,
) -> ConnectFailure {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if is_tls(error) {
            return ConnectFailure::Tls;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return ConnectFailure::Refused,
                io::ErrorKind::TimedOut => return ConnectFailure::TimedOut,
                _ => {}
            }
            // An io::Error's source skips the error it wraps.
            if let Some(inner) = io.get_ref()
                && is_tls(inner)
            {
                return ConnectFailure::Tls;
            }
        }
        cause = error.source();
    }
    ConnectFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("bad certificate")]
    struct FakeTls;

    #[test]
    fn the_address_has_a_port_and_the_kind_comes_from_the_causes() {
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

        let no_tls = |_: &(dyn Error + 'static)| false;
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
}
