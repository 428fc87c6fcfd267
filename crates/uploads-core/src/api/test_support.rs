//! Helpers the request and response tests of this module share.

use http::{Request, Response};

use super::ClientConfig;

/// A config with every credential set, so golden tests see every header.
pub(super) fn config() -> ClientConfig {
    ClientConfig::new("http://127.0.0.1:8080/v1/")
        .with_api_key("sk-test")
        .with_organization("org-1")
        .with_project("proj_1")
}

/// Every header of a request, sorted by name, as text.
pub(super) fn headers<B>(request: &Request<B>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// The headers every request carries, plus `extra`, sorted.
pub(super) fn expected_headers(accept: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("accept", accept),
        ("authorization", "Bearer sk-test"),
        ("openai-organization", "org-1"),
        ("openai-project", "proj_1"),
        (
            "user-agent",
            concat!("uploads-rs/", env!("CARGO_PKG_VERSION")),
        ),
    ]
    .iter()
    .chain(extra)
    .map(|&(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    pairs.sort();
    pairs
}

/// A 200 response with `body`.
pub(super) fn ok(body: &str) -> Response<&[u8]> {
    Response::new(body.as_bytes())
}
