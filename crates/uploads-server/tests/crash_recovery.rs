//! Crash recovery: the server is dropped (no shutdown) while a Part streams in, the data dir
//! gets the debris a crash leaves (temp files, an orphan Part), and a new server on the same
//! dir serves every completed File intact, keeps each pending Upload's finished Parts, and
//! leaves no temp file behind.

mod support;

use std::path::Path;

use support::{
    KEY_A, TestServer, eventually, md5_hex, parts_dir, pattern, quarantined, read_reply,
    request_head, start_on, stored_parts, temp_files,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uploads_core::multipart::MultipartBody;
use uploads_core::types::{FileObject, UploadId};
use uploads_server::RunningServer;

/// Starts a Part of `len` bytes on a raw connection, sends half of it, and waits until the
/// server is writing it to a temp file. Returns the connection and the unsent rest.
async fn half_sent_part(
    server: &RunningServer,
    data_dir: &Path,
    upload: &UploadId,
    len: usize,
) -> (TcpStream, Vec<u8>) {
    let form = MultipartBody::upload_part(&support::next_boundary(), len as u64);
    let body = form.assemble(&pattern(len, 9));
    let mut request = request_head(
        "POST",
        &format!("/v1/uploads/{upload}/parts"),
        Some(KEY_A),
        &[("Content-Type", &form.content_type)],
        Some(body.len() as u64),
    );
    let half = request.len() + body.len() / 2;
    request.extend_from_slice(&body);
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(&request[..half]).await.unwrap();
    let parts = parts_dir(data_dir, upload);
    eventually("the Part's temp file exists", || {
        !temp_files(&parts).is_empty()
    })
    .await;
    (stream, request[half..].to_vec())
}

#[tokio::test]
async fn a_restart_after_a_crash_keeps_what_was_committed_and_nothing_else() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let done = client.upload_file(&[b"completed ", b"content"]).await;
    let pending = client.create_upload(11).await;
    let hello = client.add_part_ok(&pending.id, b"hello ").await;
    let world = client.add_part_ok(&pending.id, b"world").await;

    let (in_flight, _rest) =
        half_sent_part(&server.running, server.data_dir(), &pending.id, 64 * 1024).await;
    let TestServer {
        running,
        clock,
        dir,
    } = server;
    drop(running);

    // The debris of a crash: a half-written temp file and Part bytes no state lists.
    let parts = parts_dir(dir.path(), &pending.id);
    std::fs::write(parts.join(".tmp-x.1"), b"half").unwrap();
    std::fs::write(parts.join("part_orphan"), b"orphan").unwrap();
    std::fs::write(dir.path().join("files/.tmp-file-x.json.2"), b"{").unwrap();
    let uncommitted = dir.path().join("uploads/upload_uncommitted");
    std::fs::create_dir_all(uncommitted.join("parts")).unwrap();
    std::fs::write(uncommitted.join("parts/part_1"), b"no state names me").unwrap();

    let restarted = start_on(dir.path(), &clock, |builder| builder).await;
    assert_eq!(temp_files(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(!parts.join("part_orphan").exists());
    assert!(
        !uncommitted.exists(),
        "an Upload dir without a state file is removed"
    );
    let mut finished = vec![hello.id.to_string(), world.id.to_string()];
    finished.sort();
    assert_eq!(stored_parts(dir.path(), &pending.id), finished);
    drop(in_flight);

    let client = support::Client::connect(
        restarted.local_addr(),
        support::Protocol::Http1,
        Some(KEY_A),
    )
    .await;
    assert_eq!(client.retrieve(&done.id).await.ok::<FileObject>(), done);
    assert_eq!(client.content_ok(&done.id).await, "completed content");
    clock.advance(1);
    let file = client
        .complete_ok(
            &pending.id,
            &[&hello.id, &world.id],
            Some(&md5_hex(&[b"hello world"])),
        )
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, "hello world");
    assert_eq!(client.list_ids("order=asc").await, [done.id, file.id]);
}

#[tokio::test]
async fn dropping_the_server_cuts_the_requests_in_flight() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(4).await;
    let (mut in_flight, rest) =
        half_sent_part(&server.running, server.data_dir(), &upload.id, 4096).await;
    let TestServer { running, dir, .. } = server;
    drop(running);

    // The rest of the body may or may not be taken; no answer may come.
    let _ = in_flight.write_all(&rest).await;
    let reply = read_reply(&mut in_flight).await;
    assert!(
        reply.is_err(),
        "a dropped server answered: {}",
        reply.unwrap().text()
    );
    assert!(stored_parts(dir.path(), &upload.id).is_empty());
}

#[tokio::test]
async fn a_complete_cut_before_its_commit_point_is_rolled_back() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(4).await;
    let part = client.add_part_ok(&upload.id, b"abcd").await;
    let state = server
        .data_dir()
        .join("uploads")
        .join(upload.id.as_str())
        .join("state.json");
    let pending_state = std::fs::read(&state).unwrap();
    let lost = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    let TestServer {
        running,
        clock,
        dir,
    } = server;
    drop(running);
    // A crash after the File's record was saved but before the Upload's state file (the
    // commit point) said completed.
    std::fs::write(&state, pending_state).unwrap();
    let record = dir.path().join("files").join(format!("{}.json", lost.id));
    assert!(record.exists());

    let restarted = start_on(dir.path(), &clock, |builder| builder).await;
    let client = support::Client::connect(
        restarted.local_addr(),
        support::Protocol::Http1,
        Some(KEY_A),
    )
    .await;
    client.retrieve(&lost.id).await.assert_error(
        http::StatusCode::NOT_FOUND,
        Some("file_id"),
        &format!("No such File object: {}", lost.id),
    );
    assert_eq!(client.list_ids("").await, []);
    assert!(!record.exists(), "the uncommitted File's record is removed");
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    assert_ne!(file.id, lost.id);
    assert_eq!(client.content_ok(&file.id).await, "abcd");
}

#[tokio::test]
async fn unreadable_records_are_quarantined_and_everything_else_is_served() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let kept = client.upload_file(&[b"kept"]).await;
    let broken_file = client.upload_file(&[b"broken"]).await;
    let pending = client.create_upload(4).await;
    let broken_upload = client.create_upload(4).await;
    let (bad_upload, bad_file) = (broken_upload.id.clone(), broken_file.id.clone());
    let server = server
        .restart_after(|root| {
            std::fs::write(
                root.join("uploads")
                    .join(bad_upload.as_str())
                    .join("state.json"),
                b"{not json",
            )
            .unwrap();
            std::fs::write(
                root.join("files").join(format!("{bad_file}.json")),
                b"\0\0\0",
            )
            .unwrap();
        })
        .await;
    let root = server.data_dir();
    let client = server.client().await;
    assert_eq!(client.content_ok(&kept.id).await.as_ref(), b"kept");
    client.add_part_ok(&pending.id, b"more").await;
    assert_eq!(
        client.retrieve(&broken_file.id).await.status,
        http::StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.cancel(&broken_upload.id).await.status,
        http::StatusCode::NOT_FOUND
    );
    let quarantined = quarantined(root);
    assert!(
        quarantined.contains(&format!("upload-{}", broken_upload.id)),
        "{quarantined:?}"
    );
    assert!(
        quarantined.contains(&format!("file-{}.json", broken_file.id)),
        "{quarantined:?}"
    );
}

/// The record of a completed Upload cannot be read at startup: it is quarantined, and so is
/// the File completed from it (its record kept for an operator), never taken for the trace
/// of a crashed complete and deleted.
#[tokio::test]
async fn a_file_whose_uploads_record_is_unreadable_is_set_aside_not_deleted() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let file = client.upload_file(&[b"keep me"]).await;
    let kept = client.upload_file(&[b"other"]).await;
    let upload = std::fs::read_dir(server.data_dir().join("uploads"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|dir| {
            std::fs::read_to_string(dir.join("state.json"))
                .unwrap()
                .contains(file.id.as_str())
        })
        .unwrap();
    let server = server
        .restart_after(|_| std::fs::write(upload.join("state.json"), b"{not json").unwrap())
        .await;
    let client = server.client().await;
    assert_eq!(client.content_ok(&kept.id).await.as_ref(), b"other");
    assert_eq!(
        client.retrieve(&file.id).await.status,
        http::StatusCode::NOT_FOUND
    );
    let quarantined = quarantined(server.data_dir());
    assert!(
        quarantined.contains(&format!("file-{}.json", file.id)),
        "the File's record is kept: {quarantined:?}"
    );
}
