//! Request bodies and heads at their limits: a JSON body over `max_json_bytes` is 413, a
//! body that stops moving is 408 after `body_idle_timeout`, a head that stops moving ends the
//! connection after `header_read_timeout`; none of them changes anything.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{
    KEY_A, TestServer, no_temp_files_eventually, read_reply, request_head, stored_parts,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uploads_core::multipart::MultipartBody;

fn create_body(filename: &str) -> String {
    format!(
        r#"{{"filename":"{filename}","purpose":"user_data","bytes":1,"mime_type":"text/plain"}}"#
    )
}

fn upload_dirs(server: &TestServer) -> usize {
    support::stored_uploads(server.data_dir())
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_413_and_creates_nothing() {
    // Long enough for a complete of one Part (the server refuses a smaller limit).
    let fits = create_body(&format!("{}.txt", "a".repeat(20)));
    let limit = fits.len();
    // An Upload of one Part: its complete fits in such a small limit.
    let server = TestServer::start_with(|builder| {
        builder
            .max_json_bytes(limit)
            .limits(uploads_core::limits::Limits::default().with_max_parts_per_upload(1))
    })
    .await;
    let client = server.client().await;
    client
        .create_upload_json(&create_body(&format!("{}.txt", "a".repeat(21))))
        .await
        .assert_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            &format!("The request body is larger than the maximum of {limit} bytes."),
        );
    assert_eq!(upload_dirs(&server), 0);
    let upload: uploads_core::types::Upload = client.create_upload_json(&fits).await.ok();
    let part = client.add_part_ok(&upload.id, b"x").await;
    let padded = format!(
        r#"{{"part_ids":["{}"],"md5":null{}}}"#,
        part.id,
        " ".repeat(limit)
    );
    client
        .post_json(&format!("/v1/uploads/{}/complete", upload.id), &padded)
        .await
        .assert_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            &format!("The request body is larger than the maximum of {limit} bytes."),
        );
    client.complete_ok(&upload.id, &[&part.id], None).await;
}

/// Sends a head announcing `length` bytes and the first of them, then waits for the answer
/// with the connection still open.
async fn stall(
    server: &TestServer,
    path: &str,
    content_type: &str,
    length: u64,
    sent: &[u8],
) -> support::Reply {
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    let head = request_head(
        "POST",
        path,
        Some(KEY_A),
        &[("Content-Type", content_type)],
        Some(length),
    );
    stream.write_all(&head).await.unwrap();
    stream.write_all(sent).await.unwrap();
    read_reply(&mut stream).await.unwrap()
}

#[tokio::test]
async fn a_body_that_stops_moving_is_408_and_changes_nothing() {
    let server =
        TestServer::start_with(|builder| builder.body_idle_timeout(Duration::from_millis(300)))
            .await;
    let client = server.client().await;
    let body = create_body("a.txt");
    stall(
        &server,
        "/v1/uploads",
        "application/json",
        body.len() as u64,
        &body.as_bytes()[..10],
    )
    .await
    .assert_error(
        StatusCode::REQUEST_TIMEOUT,
        None,
        "the request body stopped moving for 300ms",
    );
    assert_eq!(upload_dirs(&server), 0);

    let upload = client.create_upload(4).await;
    let form = MultipartBody::upload_part(&support::next_boundary(), 4096);
    let body = form.assemble(&[b'x'; 4096]);
    stall(
        &server,
        &format!("/v1/uploads/{}/parts", upload.id),
        &form.content_type,
        body.len() as u64,
        &body[..2048],
    )
    .await
    .assert_error(
        StatusCode::REQUEST_TIMEOUT,
        None,
        "the request body stopped moving for 300ms",
    );
    no_temp_files_eventually(server.data_dir()).await;
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
    let part = client.add_part_ok(&upload.id, b"abcd").await;
    client.complete_ok(&upload.id, &[&part.id], None).await;
}

#[tokio::test]
async fn a_head_that_stops_moving_ends_the_connection() {
    let server =
        TestServer::start_with(|builder| builder.header_read_timeout(Duration::from_millis(300)))
            .await;
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"POST /v1/uploads HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // hyper closes such a connection without an answer.
    let ended = read_reply(&mut stream).await.unwrap_err();
    assert_eq!(ended.kind(), std::io::ErrorKind::UnexpectedEof, "{ended}");
    assert_eq!(upload_dirs(&server), 0);
    // The server still serves others.
    let client = server.client().await;
    client.create_upload(1).await;
}
