//! Slow and hostile clients against the server's shared resources: bodies that stall, a
//! clock-free minimum rate, downloads nobody reads. Each test runs its server on a runtime
//! with a tiny blocking pool, so a handler that keeps a blocking thread for its lifetime
//! would stall every other request; the timeouts here only keep such a bug from hanging the
//! suite.

mod support;

use std::time::Duration;

use support::{
    Client, KEY_A, KEY_B, Protocol, TestServer, eventually, md5_hex, request_head, temp_files,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uploads_core::multipart::MultipartBody;

/// Blocking threads of the server's runtime: fewer than the stalled requests.
const BLOCKING_THREADS: usize = 4;
/// Stalled part bodies, twice the blocking pool.
const STALLED: usize = 2 * BLOCKING_THREADS;
/// Hang guard: far longer than the victim's requests take.
const PATIENCE: Duration = Duration::from_secs(30);

fn small_pool_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends a Part request's head, its form field's headers and the first `sent` bytes of a
/// `len`-byte Part, then stops: the body stalls.
async fn stalled_part(
    server: &TestServer,
    key: &str,
    upload: &str,
    len: usize,
    sent: usize,
) -> TcpStream {
    let form = MultipartBody::upload_part(&support::next_boundary(), len as u64);
    let body = form.assemble(&vec![b'x'; len]);
    let mut request = request_head(
        "POST",
        &format!("/v1/uploads/{upload}/parts"),
        Some(key),
        &[("Content-Type", &form.content_type)],
        Some(body.len() as u64),
    );
    request.extend_from_slice(&body[..form.head.len() + sent]);
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    stream
}

#[test]
fn stalled_part_bodies_of_one_owner_never_stall_another_owners_requests() {
    small_pool_runtime().block_on(async {
        let server = TestServer::start().await;
        let attacker =
            Client::connect(server.running.local_addr(), Protocol::Http1, Some(KEY_A)).await;
        let upload = attacker.create_upload(1 << 20).await;
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            stalled.push(stalled_part(&server, KEY_A, upload.id.as_str(), 1 << 20, 1000).await);
        }
        // Every stalled body reached its handler, and the pool's worth of them (at least)
        // opened their Part's temp file.
        let stats = server.running.stats();
        let data_dir = server.data_dir().to_path_buf();
        eventually("every stalled Part is in flight", || {
            stats.parts_in_flight() == STALLED as u64
                && temp_files(&data_dir).len() >= BLOCKING_THREADS
        })
        .await;

        // Another owner's whole lifecycle still goes through.
        let victim =
            Client::connect(server.running.local_addr(), Protocol::Http1, Some(KEY_B)).await;
        let lifecycle = async {
            let upload = victim.create_upload(5).await;
            let part = victim.add_part_ok(&upload.id, b"hello").await;
            let done = victim
                .complete_ok(&upload.id, &[&part.id], Some(&md5_hex(&[b"hello"])))
                .await;
            let file = done.file.unwrap();
            assert_eq!(victim.content_ok(&file.id).await.as_ref(), b"hello");
        };
        tokio::time::timeout(PATIENCE, lifecycle)
            .await
            .expect("another owner's requests stalled behind the stalled bodies");
        drop(stalled);
    });
}

#[tokio::test]
async fn a_part_body_trickled_inside_the_idle_timeout_but_below_the_minimum_rate_gets_408() {
    let server = TestServer::start_with(|builder| {
        builder
            .body_idle_timeout(Duration::from_millis(500))
            .min_body_rate(1000)
    })
    .await;
    let client = Client::connect(server.running.local_addr(), Protocol::Http1, Some(KEY_A)).await;
    let upload = client.create_upload(1 << 20).await;
    let mut stream = stalled_part(&server, KEY_A, upload.id.as_str(), 1 << 20, 0).await;
    // One byte every 50 ms: never idle for 500 ms, but 20 bytes/s against 1000 required.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, trickle).await;
    let reply = support::read_reply(&mut stream).await.unwrap();
    reply.assert_error(
        http::StatusCode::REQUEST_TIMEOUT,
        None,
        "the request body arrived slower than the minimum of 1000 bytes per second",
    );
    support::no_temp_files_eventually(server.data_dir()).await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let server =
        TestServer::start_with(|builder| builder.idle_timeout(Duration::from_millis(400))).await;
    let mut stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    // The preface and an empty SETTINGS frame, then nothing (and no answer to pings).
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        use tokio::io::AsyncReadExt;
        stream.read_to_end(&mut sink).await
    })
    .await;
    assert!(closed.is_ok(), "the idle h2 connection was never closed");
}
