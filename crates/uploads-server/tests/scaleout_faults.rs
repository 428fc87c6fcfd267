//! The shared backend under the faults production brings: instances whose clocks disagree by
//! more than an Upload's lifetime, and a peer frozen inside a transaction with an Upload's row
//! locked. Every server here decides time by the database's clock (none is given
//! `shared_clock`), as `uploads serve` does.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use support::services::{Namespace, Services};
use support::{Client, KEY_A, KEY_B, OWNER_A, OWNER_B, Protocol, healthz, md5_hex};
use uploads_server::clock::Clock;
use uploads_server::{RunningServer, Server};

/// This machine's clock, ahead by so many seconds: an instance whose host clock is wrong.
struct SkewedClock(u64);

impl Clock for SkewedClock {
    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        real + self.0
    }
}

async fn start(namespace: &Namespace, clock: impl Clock) -> RunningServer {
    Server::builder()
        .api_key(KEY_A, OWNER_A)
        .api_key(KEY_B, OWNER_B)
        .clock(clock)
        .sweep_interval(Duration::from_millis(200))
        .shared(
            &namespace.database_url,
            &namespace.object_store,
            namespace.s3_env(),
        )
        .start()
        .await
        .unwrap()
}

async fn client(addr: SocketAddr, key: &str) -> Client {
    Client::connect(addr, Protocol::Http1, Some(key)).await
}

/// An instance whose clock runs an Upload's lifetime ahead (and one two lifetimes ahead,
/// past the retention) starts and sweeps while an Upload is under way on a correct instance:
/// nothing of it is expired or removed, and it completes with every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_runs_ahead_removes_nothing_live() {
    let services = Services::get();
    let namespace = services.fresh();
    let correct = start(&namespace, SkewedClock(0)).await;
    let on_correct = client(correct.local_addr(), KEY_A).await;
    for skew in [3_700, 7_300] {
        let upload = on_correct.create_upload(6).await.id;
        let first = on_correct.add_part_ok(&upload, b"abc").await.id;
        // Its startup sweep, then a few more ticks.
        let ahead = start(&namespace, SkewedClock(skew)).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let on_ahead = client(ahead.local_addr(), KEY_A).await;
        let second = on_ahead.add_part_ok(&upload, b"def").await.id;
        let md5 = md5_hex(&[b"abcdef"]);
        let completed = on_ahead
            .complete_ok(&upload, &[&first, &second], Some(&md5))
            .await;
        let file = completed.file.unwrap();
        assert_eq!(on_correct.content_ok(&file.id).await, &b"abcdef"[..]);
        ahead.shutdown().await;
    }
    correct.shutdown().await;
}

/// A peer froze inside a transaction holding an Upload's row lock (here: a session that
/// took the lock and went silent). Requests for that Upload get 503 with `Retry-After`
/// within a bound instead of piling up; every other tenant is served meanwhile and
/// `/healthz` stays 200; once the holder is gone the Upload works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lock_holder_costs_only_its_upload_a_retry() {
    let services = Services::get();
    let namespace = services.fresh();
    let server = start(&namespace, SkewedClock(0)).await;
    let addr = server.local_addr();
    let owner_a = client(addr, KEY_A).await;
    let upload = owner_a.create_upload(3).await.id;
    let part = owner_a.add_part_ok(&upload, b"abc").await.id;

    let (holder, connection) =
        tokio_postgres::connect(&namespace.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM uploads WHERE id = $1 FOR UPDATE",
            &[&upload.as_str()],
        )
        .await
        .unwrap();

    // More requests for the locked Upload than the instance has connections.
    let stuck: Vec<_> = (0..24)
        .map(|i| {
            let (upload, part) = (upload.clone(), part.clone());
            tokio::spawn(async move {
                let client = client(addr, KEY_A).await;
                if i % 2 == 0 {
                    client.cancel(&upload).await
                } else {
                    client.complete(&upload, &[&part], None).await
                }
            })
        })
        .collect();
    // Meanwhile another tenant creates and lists, and the instance says it is healthy.
    let owner_b = client(addr, KEY_B).await;
    for _ in 0..3 {
        owner_b.create_upload(1).await;
        assert_eq!(owner_b.list("").await.status, StatusCode::OK);
        let health = healthz(addr).await;
        assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    }
    for request in stuck {
        // A hang guard, not a measure: without bounds these wait for the holder for ever.
        let reply = tokio::time::timeout(Duration::from_mins(2), request)
            .await
            .expect("a request for a locked Upload must be answered")
            .unwrap();
        reply.assert_retryable_503();
    }

    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);
    let _ = connection.await;
    let completed = owner_a.complete_ok(&upload, &[&part], None).await;
    assert_eq!(
        owner_a.content_ok(&completed.file.unwrap().id).await,
        &b"abc"[..]
    );
    server.shutdown().await;
}

/// An instance killed while its Part was past one multipart piece leaves a multipart upload
/// in the bucket; the sweep of any instance aborts it once it is older than an unrecorded
/// object may live (moto dates every multipart upload 2010, so here: at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_aborts_a_dead_writers_multipart_upload() {
    use uploads_core::types::{PartId, UploadId};
    use uploads_server::byte_store::ByteStore as _;
    use uploads_server::objects::ObjectBytes;

    let services = Services::get();
    let namespace = services.fresh();
    let crashed = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut sink = crashed
            .begin_part(&UploadId::new("upload_dead"), &PartId::new("part_dead"))
            .unwrap();
        let piece = vec![7_u8; 6 * 1024 * 1024];
        sink.write(&piece).unwrap();
        // SIGKILL: neither committed nor dropped.
        std::mem::forget(sink);
    })
    .await
    .unwrap();
    assert_eq!(services.list_multipart_uploads(&namespace.bucket).len(), 1);
    // Startup sweeps.
    let server = start(&namespace, SkewedClock(0)).await;
    assert!(
        services
            .list_multipart_uploads(&namespace.bucket)
            .is_empty(),
        "the dead writer's pieces are aborted"
    );
    server.shutdown().await;
}

/// A Part over one multipart piece is still streaming into one instance when another
/// instance sweeps: its multipart upload is kept (the records say it is being written,
/// whatever the bucket's dates say: moto dates every upload 2010), and the Part completes
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_elsewhere_keeps_a_multipart_part_still_being_written() {
    use bytes::Bytes;
    use uploads_core::multipart::MultipartBody;
    use uploads_core::types::UploadPart;

    let services = Services::get();
    let namespace = services.fresh();
    let writer = start(&namespace, SkewedClock(0)).await;
    let client = client(writer.local_addr(), KEY_A).await;
    let data = support::pattern(12 * 1024 * 1024, 7);
    let upload = client.create_upload(data.len() as u64).await.id;
    let form = MultipartBody::upload_part(&support::next_boundary(), data.len() as u64);
    let body = Bytes::from(form.assemble(&data));
    let (sender, request_body) = support::streamed_body(body.len() as u64);
    let sending = {
        let (client, path) = (client.clone(), format!("/v1/uploads/{upload}/parts"));
        tokio::spawn(async move {
            client
                .send(
                    http::Method::POST,
                    &path,
                    Some(&form.content_type),
                    request_body,
                )
                .await
        })
    };
    let half = body.len() / 2;
    sender.send(body.slice(..half)).await.unwrap();
    support::eventually("the Part's multipart upload has begun", || {
        services.list_multipart_uploads(&namespace.bucket).len() == 1
    })
    .await;
    // Another instance starts, and sweeps.
    let sweeper = start(&namespace, SkewedClock(0)).await;
    assert_eq!(services.list_multipart_uploads(&namespace.bucket).len(), 1);
    sender.send(body.slice(half..)).await.unwrap();
    let part: UploadPart = sending.await.unwrap().ok();
    let completed = client.complete_ok(&upload, &[&part.id], None).await;
    assert!(client.content_ok(&completed.file.unwrap().id).await == data);
    sweeper.shutdown().await;
    writer.shutdown().await;
}

/// The database falls silent (stopped, or partitioned behind something that still
/// acknowledges packets: no server-side timeout can end that wait): a request is answered
/// 503 with `Retry-After` within the server's bound instead of hanging, and `/healthz`
/// says the database is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_falls_silent_is_a_bounded_503() {
    let services = Services::get();
    let namespace = services.fresh();
    let proxy = support::silencing_proxy::SilencingProxy::start(services.pg_port).await;
    let via_proxy = Namespace {
        database_url: namespace.database_url_via(proxy.port),
        ..namespace.clone()
    };
    let server = start(&via_proxy, SkewedClock(0)).await;
    let addr = server.local_addr();
    let client = client(addr, KEY_A).await;
    client.create_upload(1).await;

    proxy.silence();
    // Hang guards, not measures.
    let reply = tokio::time::timeout(
        Duration::from_mins(2),
        client.create_upload_json(
            r#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#,
        ),
    )
    .await
    .expect("answered within the server's bound");
    reply.assert_retryable_503();
    let health = tokio::time::timeout(Duration::from_mins(1), healthz(addr))
        .await
        .expect("/healthz answers within its deadline");
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        health.text().contains("the database is unreachable"),
        "{}",
        health.text()
    );
}
