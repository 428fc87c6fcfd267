//! The answer is what a restart sees: a change whose commit point failed is not loaded
//! later, and a change past its commit point is answered as done even when the cleanup after
//! it fails. Disk failures are made by putting a non-empty directory where the server will
//! write or remove a file (a trick even root cannot bypass, unlike permissions).

mod support;

use std::path::Path;

use http::StatusCode;
use support::{TestServer, parts_dir};
use uploads_core::types::FileObject;

/// Puts a non-empty directory at `path` (replacing a file there): renaming over it or
/// removing it as a file fails.
fn block_with_directory(path: &Path) {
    if path.is_file() {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::create_dir_all(path.join("blocker")).unwrap();
}

#[tokio::test]
async fn a_complete_whose_commit_point_failed_never_comes_back_as_a_file() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(5).await;
    let part = client.add_part_ok(&upload.id, b"hello").await;
    let upload_dir = server.data_dir().join("uploads").join(upload.id.as_str());
    // The File's record can be written; the Upload's state (the commit point) cannot.
    block_with_directory(&upload_dir.join("state.json"));
    let reply = client.complete(&upload.id, &[&part.id], None).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert!(client.list_ids("").await.is_empty());

    // The Upload goes (as the sweep removes it after its retention), and the server restarts.
    let server = server
        .restart_after(|_| {
            std::fs::remove_dir_all(&upload_dir).unwrap();
        })
        .await;
    let client = server.client().await;
    assert!(client.list_ids("").await.is_empty(), "a phantom File");
    let files: Vec<_> = std::fs::read_dir(server.data_dir().join("files"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(files.is_empty(), "the orphan record stays: {files:?}");
}

#[tokio::test]
async fn a_complete_past_its_commit_point_is_answered_completed_even_if_cleanup_fails() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(5).await;
    let part = client.add_part_ok(&upload.id, b"hello").await;
    let unlisted = client.add_part_ok(&upload.id, b"extra").await;
    // The unlisted Part's bytes cannot be removed after the complete is committed.
    block_with_directory(&parts_dir(server.data_dir(), &upload.id).join(unlisted.id.as_str()));
    let completed = client.complete_ok(&upload.id, &[&part.id], None).await;
    let file = completed.file.unwrap();
    // A retry is the same Upload and File, not a new one.
    let again = client.complete_ok(&upload.id, &[&part.id], None).await;
    assert_eq!(again.file.map(|file| file.id), Some(file.id.clone()));

    let server = server.restart_after(|_| {}).await;
    let client = server.client().await;
    assert_eq!(client.list_ids("").await, std::slice::from_ref(&file.id));
    assert_eq!(client.content_ok(&file.id).await.as_ref(), b"hello");
}

#[tokio::test]
async fn a_delete_past_its_commit_point_is_answered_deleted_even_if_cleanup_fails() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let file: FileObject = client.upload_file(&[b"hello ", b"world"]).await;
    let upload_parts: Vec<_> = std::fs::read_dir(server.data_dir().join("uploads"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("parts"))
        .collect();
    let first_part = std::fs::read_dir(&upload_parts[0])
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The File's record can be removed; its Parts' bytes cannot.
    block_with_directory(&first_part);
    let reply = client.delete(&file.id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        client.retrieve(&file.id).await.status,
        StatusCode::NOT_FOUND
    );

    let server = server.restart_after(|_| {}).await;
    let client = server.client().await;
    assert_eq!(
        client.retrieve(&file.id).await.status,
        StatusCode::NOT_FOUND
    );
}
