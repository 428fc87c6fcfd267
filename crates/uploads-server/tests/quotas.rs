//! Per-owner quotas and per-key request rates, over real HTTP, on either backend
//! (`UPLOADS_TEST_BACKEND=shared`: PostgreSQL and object storage, where two instances share
//! one quota and one bucket).
//!
//! Over a quota, `POST /v1/uploads` and `POST /v1/files` answer OpenAI's 400 for a full file
//! storage (`param` `bytes` / `file`) and store nothing; over the rate, 429 with OpenAI's
//! body and headers. Time is the test's clock: no answer depends on how fast this runs.

mod support;

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use support::{
    Client, KEY_A, KEY_B, Protocol, Reply, TestServer, file_form, full, raw_exchange, request_head,
    shared_backend, start_on,
};
use uploads_core::limits::Limits;
use uploads_core::types::{FileObject, Upload};
use uploads_server::Server;

/// The message of a create that would go over the bytes quota.
fn bytes_message(quota: u64, used: u64, asked: u64) -> String {
    format!(
        "You have exceeded your file storage quota. Projects are limited to {quota} bytes of \
         files, counting pending Uploads; {used} are in use and this request needs {asked} \
         more. Please delete old files or attempt with a smaller file size."
    )
}

/// The message of a create that would go over the files quota.
fn files_message(quota: u64, used: u64) -> String {
    format!(
        "You have exceeded your file count quota. Projects are limited to {quota} files, \
         counting pending Uploads, and {used} are in use. Please delete old files or cancel \
         pending Uploads."
    )
}

async fn start(limits: Limits) -> TestServer {
    TestServer::start_with(|builder| builder.limits(limits)).await
}

async fn create(client: &Client, bytes: u64) -> Reply {
    client
        .create_upload_json(&format!(
            r#"{{"filename":"q.bin","purpose":"user_data","bytes":{bytes},"mime_type":"application/octet-stream"}}"#
        ))
        .await
}

async fn post_file(client: &Client, data: &[u8]) -> Reply {
    let (content_type, body) = file_form(&[("purpose", "user_data")], "q.txt", data);
    client
        .send(Method::POST, "/v1/files", Some(&content_type), full(body))
        .await
}

/// Asserts OpenAI's over-quota answer: 400 `invalid_request_error`, `code` null.
#[track_caller]
fn assert_over_quota(reply: &Reply, param: &str, message: &str) {
    reply.assert_error(StatusCode::BAD_REQUEST, Some(param), message);
    assert_eq!(reply.error().code, None, "{}", reply.text());
}

#[tokio::test]
async fn over_the_bytes_quota_a_create_is_refused_and_nothing_is_stored() {
    let limits = Limits::default().with_quota_bytes(100);
    let server = start(limits.clone()).await;
    let client = server.client().await;
    let first: Upload = create(&client, 60).await.ok();
    assert_over_quota(
        &create(&client, 41).await,
        "bytes",
        &bytes_message(100, 60, 41),
    );
    assert_over_quota(
        &post_file(&client, &[7; 41]).await,
        "file",
        &bytes_message(100, 60, 41),
    );
    // Another owner has a quota of its own.
    let other = client.with_key(Some(KEY_B));
    create(&other, 100).await.ok::<Upload>();
    // What was refused took nothing: the rest still fits, exactly, and no File was made.
    assert!(client.list_ids("").await.is_empty());
    let server = server.restart_with(|builder| builder.limits(limits)).await;
    let client = server.client().await;
    assert_over_quota(
        &create(&client, 41).await,
        "bytes",
        &bytes_message(100, 60, 41),
    );
    let file: FileObject = post_file(&client, &[7; 40]).await.ok();
    assert_eq!(client.list_ids("").await, [file.id]);
    assert_over_quota(
        &create(&client, 1).await,
        "bytes",
        &bytes_message(100, 100, 1),
    );
    // Cancelling the Upload frees its 60 bytes.
    client.cancel(&first.id).await.ok::<Upload>();
    create(&client, 60).await.ok::<Upload>();
}

#[tokio::test]
async fn over_the_files_quota_a_create_is_refused_until_a_file_goes() {
    let limits = Limits::default().with_quota_files(2);
    let server = start(limits).await;
    let client = server.client().await;
    // A completed Upload's File counts once, in place of the Upload.
    let done = client.upload_file(&[b"hello ", b"world"]).await;
    let pending: Upload = create(&client, 5).await.ok();
    assert_over_quota(&create(&client, 1).await, "bytes", &files_message(2, 2));
    assert_over_quota(
        &post_file(&client, b"x").await,
        "file",
        &files_message(2, 2),
    );
    assert_eq!(client.list_ids("").await, std::slice::from_ref(&done.id));
    // The Upload's Parts are never refused: its bytes were counted when it was created.
    client.add_part_ok(&pending.id, b"12345").await;
    client
        .add_part_ok(&pending.id, b"beyond the declared size")
        .await;
    // Deleting the File frees its place.
    client.delete(&done.id).await.ok::<serde_json::Value>();
    let file: FileObject = post_file(&client, b"x").await.ok();
    assert_over_quota(&create(&client, 1).await, "bytes", &files_message(2, 2));
    // So does an Upload that expires (no sweep needed).
    server.clock.advance(Limits::default().upload_ttl_secs);
    create(&client, 1).await.ok::<Upload>();
    assert_eq!(client.list_ids("").await, [file.id]);
    // What an operator counts.
    assert_eq!(server.running.stats().creates_over_quota(), 3);
    assert_eq!(server.running.stats().requests_rate_limited(), 0);
}

#[tokio::test]
async fn post_files_over_the_quota_is_refused_from_its_head_before_its_body() {
    let server = start(Limits::default().with_quota_bytes(1_000_000)).await;
    let client = server.client().await;
    create(&client, 999_000).await.ok::<Upload>();
    // The head of a 10 MB form, and no body: the answer comes without it.
    let head = request_head(
        "POST",
        "/v1/files",
        Some(KEY_A),
        &[("Content-Type", "multipart/form-data; boundary=b")],
        Some(10_000_000),
    );
    let reply = raw_exchange(server.running.local_addr(), &head).await;
    let least = uploads_core::forms::min_file_bytes(10_000_000);
    assert_over_quota(&reply, "file", &bytes_message(1_000_000, 999_000, least));
    // The same with `Expect: 100-continue`: refused instead of continued.
    let head = request_head(
        "POST",
        "/v1/files",
        Some(KEY_A),
        &[
            ("Content-Type", "multipart/form-data; boundary=b"),
            ("Expect", "100-continue"),
        ],
        Some(10_000_000),
    );
    let reply = raw_exchange(server.running.local_addr(), &head).await;
    assert_over_quota(&reply, "file", &bytes_message(1_000_000, 999_000, least));
    // A File that fits is never refused for its form's framing: 1,000 bytes, exactly the room.
    let file: FileObject = post_file(&client, &[1; 1000]).await.ok();
    assert_eq!(client.list_ids("").await, [file.id]);
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_quota() {
    let limits = Limits::default().with_quota_files(5).with_quota_bytes(1000);
    let server = start(limits.clone()).await;
    let mut clients = vec![server.client().await];
    // On PostgreSQL a second instance shares the quota.
    let second = if shared_backend() {
        let running = start_on(server.data_dir(), &server.clock, |builder| {
            builder.limits(limits.clone())
        })
        .await;
        clients.push(Client::connect(running.local_addr(), Protocol::Http1, Some(KEY_A)).await);
        Some(running)
    } else {
        None
    };
    let mut tasks = Vec::new();
    for index in 0..16 {
        let client = clients[index % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            if index % 2 == 0 {
                create(&client, 1).await
            } else {
                post_file(&client, b"x").await
            }
        }));
    }
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status == StatusCode::BAD_REQUEST {
            assert!(
                reply
                    .error()
                    .message
                    .starts_with("You have exceeded your file count quota."),
                "{}",
                reply.text()
            );
        }
        *by_status.entry(reply.status.as_u16()).or_default() += 1;
    }
    assert_eq!(by_status, BTreeMap::from([(200, 5), (400, 11)]));
    drop(second);
}

/// The value of a header, as text.
#[track_caller]
fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", reply.headers))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn a_burst_over_the_rate_gets_429_with_every_header() {
    let server = start(Limits::default().with_requests_per_minute(60)).await;
    let client = server.client().await;
    for used in 1..=60 {
        let reply = client.get("/v1/files").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(header(&reply, "x-ratelimit-limit-requests"), "60");
        assert_eq!(
            header(&reply, "x-ratelimit-remaining-requests"),
            (60 - used).to_string()
        );
        // A token comes back every second: the bucket is full again `used` seconds on.
        let reset = if used == 60 {
            "1m0s".to_owned()
        } else {
            format!("{used}s")
        };
        assert_eq!(header(&reply, "x-ratelimit-reset-requests"), reset);
        assert!(!reply.headers.contains_key("retry-after"));
    }
    let refused = client.get("/v1/files").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        std::str::from_utf8(&refused.body).unwrap(),
        r#"{"error":{"message":"Rate limit reached for this API key on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 1s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
    );
    for (name, value) in [
        ("retry-after-ms", "1000"),
        ("retry-after", "1"),
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1m0s"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(header(&refused, name), value, "{name}");
    }
    // Refused from its head (its small body is read only to be dropped): stores nothing.
    assert_eq!(
        create(&client, 1).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another key has a bucket of its own; health is never limited.
    let other = client.with_key(Some(KEY_B));
    assert_eq!(other.get("/v1/files").await.status, StatusCode::OK);
    assert_eq!(
        support::healthz(server.running.local_addr()).await.status,
        StatusCode::OK
    );
    // A second later one token is back: one request passes, the next waits again.
    server.clock.advance(1);
    let upload: Upload = create(&client, 1).await.ok();
    assert_eq!(
        client.get("/v1/files").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The Upload made after the wait is the only one.
    server.clock.advance(60);
    client.cancel(&upload.id).await.ok::<Upload>();
    assert_eq!(server.running.stats().requests_rate_limited(), 3);
    assert_eq!(server.running.stats().creates_over_quota(), 0);
}

#[tokio::test]
async fn an_open_server_is_not_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::builder()
        .data_dir(dir.path())
        .clock(uploads_server::clock::ManualClock::new(support::T0))
        .limits(Limits::default().with_requests_per_minute(1))
        .start()
        .await
        .unwrap();
    let client = Client::connect(running.local_addr(), Protocol::Http1, None).await;
    for _ in 0..5 {
        let reply = client.get("/v1/files").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(!reply.headers.contains_key("x-ratelimit-limit-requests"));
    }
    running.shutdown().await;
}

#[tokio::test]
async fn two_instances_share_one_bucket_per_key() {
    if !shared_backend() {
        return; // One instance per data directory: nothing to share.
    }
    let limits = Limits::default().with_requests_per_minute(30);
    let server = start(limits.clone()).await;
    let second = start_on(server.data_dir(), &server.clock, |builder| {
        builder.limits(limits)
    })
    .await;
    let clients = [
        server.client().await,
        Client::connect(second.local_addr(), Protocol::Http1, Some(KEY_A)).await,
    ];
    let mut tasks = Vec::new();
    for index in 0..60 {
        let client = clients[index % 2].clone();
        tasks.push(tokio::spawn(
            async move { client.get("/v1/files").await.status },
        ));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    // The clock stands still: exactly the bucket's 30, not 30 per instance.
    assert_eq!(accepted, 30);
    second.shutdown().await;
}

/// A record whose name holds a NUL is counted like any other (PostgreSQL reads its size
/// from the record's text, which such a name cannot be unescaped into).
#[tokio::test]
async fn a_file_named_with_a_nul_counts_toward_the_quota() {
    let server = start(Limits::default().with_quota_bytes(100)).await;
    let client = server.client().await;
    let body = serde_json::json!({
        "filename": "nul\0name.txt", "purpose": "user_data", "bytes": 5, "mime_type": "text/plain"
    });
    let upload: Upload = client.create_upload_json(&body.to_string()).await.ok();
    assert_over_quota(
        &create(&client, 96).await,
        "bytes",
        &bytes_message(100, 5, 96),
    );
    let part = client.add_part_ok(&upload.id, b"12345").await;
    client.complete_ok(&upload.id, &[&part.id], None).await;
    assert_over_quota(
        &create(&client, 96).await,
        "bytes",
        &bytes_message(100, 5, 96),
    );
    create(&client, 95).await.ok::<Upload>();
}

#[tokio::test]
async fn under_a_bytes_quota_parts_cannot_store_past_the_declared_bytes_and_a_retry() {
    let server = start(Limits::default().with_quota_bytes(1_000)).await;
    let client = server.client().await;
    let upload: Upload = create(&client, 10).await.ok();
    // The Part, and a retried copy of it: what a lost answer costs, taken.
    let first = client.add_part_ok(&upload.id, &[7; 10]).await;
    client.add_part_ok(&upload.id, &[7; 10]).await;
    // One byte more would store what the quota never counted.
    let refused = client.add_part(&upload.id, &[7]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert_eq!(refused.error().param.as_deref(), Some("data"));
    // The Upload is whole: it completes with the Part it lists.
    let md5 = support::md5_hex(&[&[7; 10]]);
    client
        .complete_ok(&upload.id, &[&first.id], Some(&md5))
        .await;
}

/// A raw HTTP/1.1 client that sends a whole request, as most do, before reading the answer.
async fn exchange_whole(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_large_part_over_the_rate_is_answered_429_not_reset() {
    let server = start(Limits::default().with_requests_per_minute(1)).await;
    let client = server.client().await;
    let upload: Upload = create(&client, 8 << 20).await.ok();
    // The token is spent; the next Part, 8 MiB as clients send, is over the rate.
    let form =
        uploads_core::multipart::MultipartBody::upload_part(&support::next_boundary(), 8 << 20);
    let (content_type, body) = (form.content_type.clone(), form.assemble(&vec![5; 8 << 20]));
    let head = format!(
        "POST /v1/uploads/{}/parts HTTP/1.1\r\nHost: uploads\r\nAuthorization: Bearer {}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        upload.id,
        support::KEY_A,
        body.len()
    );
    let answer = exchange_whole(server.running.local_addr(), &head, &body)
        .await
        .expect("the answer, not a reset connection");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after-ms: "), "{answer}");
}
