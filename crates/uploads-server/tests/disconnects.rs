//! Clients that go away (or half-close) in the middle of a request: the request is either
//! answered, or its effect is whole and visible to the next request; never half applied.

mod support;

use http::StatusCode;
use support::{KEY_A, TestServer, eventually, read_reply, request_head, stored_parts};
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
#[ignore = "bug: a client that half-closes after a whole request gets no answer, though the \
            request's effect is stored (here the Upload's state.json is written). server.rs \
            `accept_loop` builds `builder.http1()` without `.half_close(true)`, so hyper closes \
            the connection as soon as it reads EOF while the handler still works, and drops \
            the handler's future"]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let server = TestServer::start().await;
    let body = br#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#;
    let reply = send_then_half_close(&server, "/v1/uploads", body).await;
    let upload: Upload = reply.unwrap().ok();
    assert_eq!(upload.bytes, 1);
}

#[tokio::test]
#[ignore = "bug: a request whose connection closes while its change is being persisted is \
            persisted but never applied to the in-memory ledger. service.rs `Service::commit` \
            awaits `spawn_blocking(persist)` and only then calls `ledger.apply`; hyper drops \
            the handler's future when the connection goes, at that await. Here the cancel \
            removed the Parts' bytes and saved `cancelled`, the ledger still says pending, a \
            complete answers 200 and the File's content cannot be read (its Parts are gone). \
            Persist + apply must run to the end whatever happens to the request (e.g. in a \
            spawned task owning the lock guard)"]
async fn a_cancel_cut_off_mid_request_is_whole_or_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    let part = client.add_part_ok(&upload.id, b"ab").await;
    // Answered or not, the cancel reached the disk once the Parts' bytes are gone.
    let _ = send_then_half_close(&server, &format!("/v1/uploads/{}/cancel", upload.id), b"").await;
    eventually("the cancel removed the Parts", || {
        stored_parts(server.data_dir(), &upload.id).is_empty()
    })
    .await;
    client
        .complete(&upload.id, &[&part.id], None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Cannot complete an Upload that is already cancelled.",
        );
    let again: Upload = client.cancel(&upload.id).await.ok();
    assert_eq!(again.status.as_str(), "cancelled");
}
