//! The Part size limit at its edge: exactly the limit is stored, one byte more is 413 on
//! `data` with nothing stored. Once with a small configured limit, once at OpenAI's real
//! 64 MiB (bodies streamed from a generator, never held whole).

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::{
    KEY_A, TestServer, md5_hex, no_temp_files_eventually, raw_exchange, read_reply, request_head,
    stored_parts, streamed_body,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uploads_core::digest::Md5Hasher;
use uploads_core::limits::{Limits, MIB};
use uploads_core::multipart::MultipartBody;
use uploads_core::types::{UploadId, UploadPart};

#[tokio::test]
async fn a_configured_limit_takes_exactly_its_size_and_refuses_one_byte_more() {
    let server = TestServer::start_with(|builder| {
        builder.limits(Limits::default().with_max_part_bytes(1024))
    })
    .await;
    let client = server.client().await;
    let upload = client.create_upload(1024).await;
    client.add_part(&upload.id, &[1; 1025]).await.assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("data"),
        "'data' is larger than the maximum of 1024 bytes.",
    );
    no_temp_files_eventually(server.data_dir()).await;
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
    let data = support::pattern(1024, 5);
    let part = client.add_part_ok(&upload.id, &data).await;
    assert_eq!(
        stored_parts(server.data_dir(), &upload.id),
        [part.id.to_string()]
    );
    let file = client
        .complete_ok(&upload.id, &[&part.id], Some(&md5_hex(&[&data])))
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, data);
}

/// Chunks of generated data: `count` chunks of 1 MiB.
fn generated_chunk(index: u64) -> Bytes {
    let mut chunk = vec![(index % 251) as u8; MIB as usize];
    chunk[..8].copy_from_slice(&index.to_be_bytes());
    chunk[MIB as usize - 2..].copy_from_slice(b"\r\n");
    Bytes::from(chunk)
}

const CHUNKS: u64 = 64;

/// Sends a Part of exactly 64 MiB through hyper, streamed; returns it and the data's md5.
async fn send_64_mib(server: &TestServer, upload: &UploadId) -> (UploadPart, String) {
    let client = server.client().await;
    let form = MultipartBody::upload_part(&support::next_boundary(), CHUNKS * MIB);
    let (sender, body) = streamed_body(form.content_length);
    let producer = tokio::spawn({
        let (head, tail) = (form.head.clone(), form.tail.clone());
        async move {
            let mut md5 = Md5Hasher::new();
            sender.send(head).await.unwrap();
            for index in 0..CHUNKS {
                let chunk = generated_chunk(index);
                md5.update(&chunk);
                sender.send(chunk).await.unwrap();
            }
            sender.send(tail).await.unwrap();
            md5.finish_hex()
        }
    });
    let reply = client
        .send(
            Method::POST,
            &format!("/v1/uploads/{upload}/parts"),
            Some(&form.content_type),
            body,
        )
        .await;
    (reply.ok(), producer.await.unwrap())
}

/// Sends a Part of 64 MiB + 1 on a raw connection, reading the answer while still writing
/// (the server may stop reading once the limit is crossed).
async fn send_64_mib_and_one(server: &TestServer, upload: &UploadId) -> support::Reply {
    let form = MultipartBody::upload_part(&support::next_boundary(), CHUNKS * MIB + 1);
    let head = request_head(
        "POST",
        &format!("/v1/uploads/{upload}/parts"),
        Some(KEY_A),
        &[("Content-Type", &form.content_type)],
        Some(form.content_length),
    );
    let stream = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let chunks = [Bytes::from(head), form.head]
            .into_iter()
            .chain((0..CHUNKS).map(generated_chunk))
            .chain([Bytes::from_static(b"!"), form.tail]);
        for chunk in chunks {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // Dropping the write half would half-close the connection, and the server drops a
        // request whose client half-closed (see `wire_format.rs`).
        writer
    });
    let reply = read_reply(&mut reader).await.unwrap();
    writing.abort();
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_64_mib_is_stored_and_one_byte_more_is_refused_with_nothing_stored() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(CHUNKS * MIB).await;
    let (part, md5) = send_64_mib(&server, &upload.id).await;

    send_64_mib_and_one(&server, &upload.id).await.assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("data"),
        "'data' is larger than the maximum of 67108864 bytes.",
    );
    no_temp_files_eventually(server.data_dir()).await;
    assert_eq!(
        stored_parts(server.data_dir(), &upload.id),
        [part.id.to_string()]
    );
    let file = client
        .complete_ok(&upload.id, &[&part.id], Some(&md5))
        .await
        .file
        .unwrap();
    assert_eq!(file.bytes, 64 * MIB);
}

#[tokio::test]
async fn adding_a_part_writes_the_same_few_bytes_however_many_parts_there_are() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(1).await;
    let upload_dir = server.data_dir().join("uploads").join(upload.id.as_str());
    let state = std::fs::read(upload_dir.join("state.json")).unwrap();
    let log_len = || std::fs::metadata(upload_dir.join("parts.log")).map_or(0, |meta| meta.len());
    let mut ids = Vec::new();
    let mut growth = Vec::new();
    for _ in 0..60 {
        let before = log_len();
        ids.push(client.add_part_ok(&upload.id, b"x").await.id);
        growth.push(log_len() - before);
    }
    // The state file (the commit point for status changes) is not rewritten per Part; each
    // Part adds one record of the same size to the log.
    assert_eq!(std::fs::read(upload_dir.join("state.json")).unwrap(), state);
    assert!(
        growth
            .iter()
            .all(|&grown| grown == growth[0] && grown < 200),
        "{growth:?}"
    );

    // After a restart the Parts are all there, in order.
    let server = server.restart_after(|_| {}).await;
    let client = server.client().await;
    let completed = client.complete_ok(&upload.id, &[&ids[59]], None).await;
    assert_eq!(completed.file.unwrap().bytes, 1);
}

#[tokio::test]
async fn parts_over_max_parts_per_upload_are_refused_with_400_and_nothing_stored() {
    let server = TestServer::start_with(|builder| {
        builder.limits(Limits::default().with_max_parts_per_upload(3))
    })
    .await;
    let client = server.client().await;
    let upload = client.create_upload(3).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.add_part_ok(&upload.id, b"x").await.id);
    }
    client.add_part(&upload.id, b"y").await.assert_error(
        StatusCode::BAD_REQUEST,
        Some("data"),
        &format!(
            "Upload {} already has 3 Parts; an Upload may have at most 3 Parts.",
            upload.id
        ),
    );
    no_temp_files_eventually(server.data_dir()).await;
    assert_eq!(stored_parts(server.data_dir(), &upload.id).len(), 3);
    let listed: Vec<_> = ids.iter().collect();
    client.complete_ok(&upload.id, &listed, None).await;
}

#[tokio::test]
async fn the_default_part_count_fits_a_complete_in_the_json_limit_and_a_larger_one_is_refused() {
    // 10,000 Parts listed take about 360 KB of JSON: the defaults start.
    TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let refused = uploads_server::Server::builder()
        .data_dir(dir.path())
        .max_json_bytes(100_000)
        .start()
        .await;
    let error = refused
        .err()
        .expect("a JSON limit a complete cannot fit in is refused");
    assert!(error.to_string().contains("10000 Parts"), "{error}");
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_100_continue() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(1).await;
    let form = MultipartBody::upload_part(&support::next_boundary(), 10 << 30);
    let head = request_head(
        "POST",
        &format!("/v1/uploads/{}/parts", upload.id),
        Some(KEY_A),
        &[
            ("Content-Type", &form.content_type),
            ("Expect", "100-continue"),
        ],
        Some(form.content_length),
    );
    // Nothing of the body is sent: the answer must come without asking for it.
    let reply = raw_exchange(server.running.local_addr(), &head).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.error().param.as_deref(), Some("data"));
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
}

#[tokio::test]
async fn a_json_body_declared_over_its_limit_is_refused_before_100_continue() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(1).await;
    for path in [
        "/v1/uploads".to_owned(),
        format!("/v1/uploads/{}/complete", upload.id),
    ] {
        let head = request_head(
            "POST",
            &path,
            Some(KEY_A),
            &[
                ("Content-Type", "application/json"),
                ("Expect", "100-continue"),
            ],
            Some(1 << 30),
        );
        // Nothing of the body is sent: the answer must come without asking for it.
        let reply = raw_exchange(server.running.local_addr(), &head).await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            reply.text()
        );
    }
    // The Upload was not touched: it still completes.
    let part = client.add_part_ok(&upload.id, b"x").await.id;
    client.complete_ok(&upload.id, &[&part], None).await;
}
