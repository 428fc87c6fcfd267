//! The `Authorization` header on the wire: the scheme in any case (RFC 9110), and more than
//! one header refused with 401 rather than one of them picked.

mod support;

use http::StatusCode;
use support::{KEY_A, KEY_B, TestServer, raw_exchange};

fn list_files_with(authorizations: &[String]) -> Vec<u8> {
    let mut head = "GET /v1/files HTTP/1.1\r\nHost: localhost\r\n".to_owned();
    for value in authorizations {
        head += "Authorization: ";
        head += value;
        head += "\r\n";
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_two_headers_are_401() {
    let server = TestServer::start().await;
    let addr = server.running.local_addr();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = raw_exchange(addr, &list_files_with(&[format!("{scheme} {KEY_A}")])).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text());
    }
    let twice = list_files_with(&[format!("Bearer {KEY_A}"), format!("Bearer {KEY_B}")]);
    let reply = raw_exchange(addr, &twice).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(reply.error().code.as_deref(), Some("invalid_api_key"));
}
