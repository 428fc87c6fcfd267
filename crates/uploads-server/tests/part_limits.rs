//! The Part size limit at its edge: exactly the limit is stored, one byte more is 413 on
//! `data` with nothing stored. Once with a small configured limit, once at OpenAI's real
//! 64 MiB (bodies streamed from a generator, never held whole).

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::{
    KEY_A, TestServer, md5_hex, no_temp_files_eventually, read_reply, request_head, stored_parts,
    streamed_body,
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
