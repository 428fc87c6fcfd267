//! Requests refused before any route is known (a request head over the limit, a request line
//! or headers that do not parse, two different `Content-Length`s) get what every other
//! refusal gets: OpenAI's error body, an `x-request-id`, and a log line.

mod support;

use support::logs::logs;

use http::StatusCode;
use support::{INVALID_REQUEST, KEY_A, Reply, TestServer, raw_exchange, read_reply, request_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request-head limit the tests configure.
const HEAD_LIMIT: usize = 16 * 1024;

fn server() -> impl Future<Output = TestServer> {
    logs();
    TestServer::start_with(|builder| builder.max_header_bytes(HEAD_LIMIT))
}

/// Asserts an OpenAI-shaped refusal with `status` and an `x-request-id`, and returns its
/// message.
#[track_caller]
fn assert_refused(reply: &Reply, status: StatusCode) -> String {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.headers.contains_key("x-request-id"),
        "no x-request-id: {reply:?}"
    );
    let error = reply.error();
    assert_eq!(error.kind, INVALID_REQUEST, "{}", reply.text());
    assert_eq!(error.param, None, "{}", reply.text());
    assert_eq!(error.code, None, "{}", reply.text());
    error.message
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_431_with_an_openai_body() {
    let server = server().await;
    let addr = server.running.local_addr();
    let filler = "x".repeat(HEAD_LIMIT);
    let head = request_head(
        "GET",
        "/v1/files",
        Some(KEY_A),
        &[("X-Filler", &filler)],
        None,
    );
    let message = assert_refused(
        &raw_exchange(addr, &head).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );
    assert!(message.contains(&HEAD_LIMIT.to_string()), "{message}");

    // Just under the limit is served.
    let fits = "x".repeat(HEAD_LIMIT - 200);
    let head = request_head(
        "GET",
        "/v1/files",
        Some(KEY_A),
        &[("X-Filler", &fits)],
        None,
    );
    let reply = raw_exchange(addr, &head).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn too_many_header_lines_are_431_with_an_openai_body() {
    let server = server().await;
    let names: Vec<String> = (0..200).map(|n| format!("X-Header-{n}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let head = request_head("GET", "/v1/files", Some(KEY_A), &headers, None);
    assert_refused(
        &raw_exchange(server.running.local_addr(), &head).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );
}

#[tokio::test]
async fn a_malformed_request_line_is_400_with_an_openai_body() {
    let server = server().await;
    let addr = server.running.local_addr();
    for line in [
        "GET /v1/files\r\n",
        "GET  /v1/files HTTP/1.1\r\n",
        "G(T /v1/files HTTP/1.1\r\n",
        "GET /v1/files HTTP/9.9\r\n",
    ] {
        let request = format!("{line}Host: localhost\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(addr, request.as_bytes()).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_malformed_header_line_is_400_with_an_openai_body() {
    let server = server().await;
    let request = b"GET /v1/files HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n";
    let reply = raw_exchange(server.running.local_addr(), request).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn two_different_content_lengths_are_400_with_an_openai_body() {
    let server = server().await;
    let mut request = request_head(
        "POST",
        "/v1/uploads",
        Some(KEY_A),
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "2"),
        ],
        Some(3),
    );
    request.extend_from_slice(b"{}x");
    let reply = raw_exchange(server.running.local_addr(), &request).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST);
}

/// A request that keeps the connection open.
fn list_files_keep_alive() -> String {
    format!("GET /v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY_A}\r\n\r\n")
}

#[tokio::test]
async fn a_bad_head_after_answered_requests_on_one_connection_gets_an_openai_body() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    for _ in 0..2 {
        stream
            .write_all(list_files_keep_alive().as_bytes())
            .await
            .unwrap();
        let reply = read_reply(&mut stream).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    stream.write_all(b"GET /v1/files\r\n\r\n").await.unwrap();
    let reply = read_reply(&mut stream).await.unwrap();
    assert_refused(&reply, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_pipelined_bad_head_never_changes_the_answer_before_it() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    let pipelined = list_files_keep_alive() + "GET /v1/files\r\n\r\n";
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    // Both answers, then the server closes (a refused head ends the connection).
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap();
    let first = read_reply(&mut received.as_slice()).await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(first.headers.contains_key("x-request-id"));
    let _: serde_json::Value = first.json();
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let rest = &received[head_end + first.body.len()..];
    // Refused either way; with the service's body when hyper flushed the first answer before
    // reading the second head (see the server's `refused_heads` module).
    let second = read_reply(&mut &rest[..]).await.unwrap();
    assert_eq!(second.status, StatusCode::BAD_REQUEST, "{second:?}");
    if !second.body.is_empty() {
        assert_refused(&second, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn content_that_looks_like_an_http_answer_is_sent_as_it_is() {
    let server = server().await;
    let client = server.client().await;
    let content = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let file = client.upload_file(&[content]).await;
    for _ in 0..3 {
        assert_eq!(client.content_ok(&file.id).await.as_ref(), content);
    }
}

#[tokio::test]
async fn a_refused_head_is_logged_with_its_request_id() {
    let server = server().await;
    let reply = raw_exchange(server.running.local_addr(), b"GET /v1/files\r\n\r\n").await;
    assert_refused(&reply, StatusCode::BAD_REQUEST);
    let request_id = reply.headers["x-request-id"].to_str().unwrap();
    let line = logs().line_with(&[request_id]);
    assert!(line.contains("status=400"), "{line}");
}
