//! A base URL whose scheme the server does not speak, a certificate nobody trusts, a port
//! nothing listens on: `upload_file` fails with an error naming the address after one
//! connection, since no retry can fix any of them.

#[path = "support/peers.rs"]
mod peers;

use uploads_core::api::ClientConfig;
use uploads_core::types::Purpose;
use uploads_core::upload::{ConnectFailure, RequestError};
use uploads_hyper::{Client, UploadError, UploadOptions};

/// Uploads a small file to `base_url`; the error of creating its Upload.
async fn create_error(base_url: &str) -> uploads_hyper::Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"hello").unwrap();
    let client = Client::new(ClientConfig::new(base_url).with_api_key("sk-test"));
    match client
        .upload_file(&path, UploadOptions::new(Purpose::Assistants))
        .await
    {
        Err(UploadError::Create(error)) => error,
        other => panic!("expected the create to fail, got {other:?}"),
    }
}

#[tokio::test]
async fn an_https_url_to_a_plain_http_port_fails_at_once_in_the_tls_handshake() {
    let peer = peers::plain_http();
    let error = create_error(&peer.base_url("https")).await;
    assert!(
        matches!(&error, RequestError::Connect { kind: ConnectFailure::Tls, address, .. } if *address == peer.address()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "cannot connect to {} (TLS handshake failed)",
            peer.address()
        )
    );
    assert!(!error.is_retryable());
    assert_eq!(peer.accepted(), 1);
}

#[tokio::test]
async fn a_certificate_nobody_trusts_fails_at_once_in_the_tls_handshake() {
    let peer = peers::tls();
    let error = create_error(&peer.base_url("https")).await;
    assert!(
        matches!(&error, RequestError::Connect { kind: ConnectFailure::Tls, address, .. } if *address == peer.address()),
        "{error:?}"
    );
    assert_eq!(peer.accepted(), 1);
}

#[tokio::test]
async fn an_http_url_to_a_tls_port_fails_at_once_as_not_http() {
    let peer = peers::tls();
    let error = create_error(&peer.base_url("http")).await;
    assert!(
        matches!(&error, RequestError::Protocol { address, .. } if *address == peer.address()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "{} did not answer in HTTP (does it speak https?)",
            peer.address()
        )
    );
    assert!(!error.is_retryable());
    assert_eq!(peer.accepted(), 1);
}

#[tokio::test]
async fn a_refused_connection_on_loopback_fails_at_once_naming_the_address() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap().to_string();
    drop(free);
    let error = create_error(&format!("http://{address}/v1")).await;
    assert_eq!(
        error.to_string(),
        format!("cannot connect to {address} (connection refused)")
    );
    assert!(
        matches!(
            &error,
            RequestError::Connect {
                kind: ConnectFailure::Refused,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}
