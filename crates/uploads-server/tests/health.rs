//! `GET /healthz`: 200 without a key while the store takes writes, 503 once it does not.

mod support;

use http::StatusCode;
use support::{Client, Protocol, TestServer};

#[tokio::test]
async fn healthz_needs_no_key_and_answers_503_when_the_store_is_not_usable() {
    let server = TestServer::start().await;
    let anonymous = Client::connect(server.running.local_addr(), Protocol::Http1, None).await;
    let healthy = anonymous.get("/healthz").await;
    assert_eq!(healthy.status, StatusCode::OK, "{}", healthy.text());
    assert_eq!(healthy.json::<serde_json::Value>()["status"], "ok");

    // The files directory replaced by a file: nothing can be written there any more.
    let files = server.data_dir().join("files");
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::write(&files, b"not a directory").unwrap();
    let sick = anonymous.get("/healthz").await;
    assert_eq!(
        sick.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        sick.text()
    );
    assert_eq!(sick.error().kind, "server_error");

    std::fs::remove_file(&files).unwrap();
    std::fs::create_dir(&files).unwrap();
    assert_eq!(anonymous.get("/healthz").await.status, StatusCode::OK);
    let post = anonymous.post_json("/healthz", "{}").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET");
}
