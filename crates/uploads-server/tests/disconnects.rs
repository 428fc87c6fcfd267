//! Clients that go away (or half-close) in the middle of a request: the request is either
//! answered, or its effect is whole and visible to the next request; never half applied.

mod support;

use http::StatusCode;
use support::{
    Client, KEY_A, Protocol, TestServer, eventually, read_reply, request_head, stored_parts,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uploads_core::types::Upload;

/// Sends a whole request, then shuts down the write side (as `nc -N` or a client that is
/// done sending does), and reads what comes back.
async fn send_then_half_close(
    server: &TestServer,
    path: &str,
    body: &[u8],
) -> std::io::Result<support::Reply> {
    let mut request = request_head(
        "POST",
        path,
        Some(KEY_A),
        &[("Content-Type", "application/json")],
        Some(body.len() as u64),
    );
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    stream.shutdown().await.unwrap();
    read_reply(&mut stream).await
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let server = TestServer::start().await;
    let body = br#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#;
    let reply = send_then_half_close(&server, "/v1/uploads", body).await;
    let upload: Upload = reply.unwrap().ok();
    assert_eq!(upload.bytes, 1);
}

#[tokio::test]
async fn a_cancel_cut_off_anywhere_is_whole_or_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let h2 = Client::connect(server.running.local_addr(), Protocol::Http2, Some(KEY_A)).await;
    // An h2 request dropped by its client is reset (RST_STREAM) and the server drops its
    // handler: at growing delays the reset lands before, during and after the cancel's
    // durable write.
    for delay_us in [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800] {
        let upload = client.create_upload(2).await;
        let part = client.add_part_ok(&upload.id, b"ab").await;
        let cut = std::time::Duration::from_micros(delay_us);
        let _ = tokio::time::timeout(cut, h2.cancel(&upload.id)).await;
        // Whatever the reset cut, the next request sees one consistent state: either the
        // cancel happened (refused complete, Parts gone) or it did not (the complete works
        // and its File's bytes are all there). A cancel persisted but not applied would
        // complete over deleted Parts.
        let reply = client.complete(&upload.id, &[&part.id], None).await;
        if reply.status == StatusCode::OK {
            let completed: Upload = reply.ok();
            let file = completed.file.expect("a completed Upload has its File");
            assert_eq!(
                client.content_ok(&file.id).await.as_ref(),
                b"ab",
                "delay {delay_us} us"
            );
        } else {
            reply.assert_error(
                StatusCode::BAD_REQUEST,
                None,
                "Cannot complete an Upload that is already cancelled.",
            );
            eventually("the cancel removed the Parts", || {
                stored_parts(server.data_dir(), &upload.id).is_empty()
            })
            .await;
        }
    }
}
