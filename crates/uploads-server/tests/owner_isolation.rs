//! Owner isolation: a key sees only its owner's Uploads and Files. Every endpoint answers
//! another owner's ids with the 404 of an id that does not exist, and changes nothing.

mod support;

use http::StatusCode;
use support::{KEY_B, TestServer, file_form, full};
use uploads_core::types::FileObject;

#[tokio::test]
async fn another_owners_ids_are_404_everywhere_and_nothing_changes() {
    let server = TestServer::start().await;
    let alice = server.client().await;
    let bob = alice.with_key(Some(KEY_B));

    let pending = alice.create_upload(4).await;
    let part = alice.add_part_ok(&pending.id, b"ab").await;
    let finished = alice.create_upload(3).await;
    let finished_part = alice.add_part_ok(&finished.id, b"xyz").await;
    let completed = alice
        .complete_ok(&finished.id, &[&finished_part.id], None)
        .await;
    let file = completed.file.clone().unwrap();
    server.clock.advance(1);
    let bobs_file = bob.upload_file(&[b"bob's"]).await;

    for upload in [&pending.id, &finished.id] {
        let missing = format!("No such Upload object: {upload}");
        for reply in [
            bob.add_part(upload, b"cd").await,
            bob.complete(upload, &[&part.id], None).await,
            bob.complete(upload, &[&finished_part.id], None).await,
            bob.cancel(upload).await,
        ] {
            reply.assert_error(StatusCode::NOT_FOUND, Some("upload_id"), &missing);
        }
    }
    let missing = format!("No such File object: {}", file.id);
    for reply in [
        bob.retrieve(&file.id).await,
        bob.content(&file.id).await,
        bob.delete(&file.id).await,
    ] {
        reply.assert_error(StatusCode::NOT_FOUND, Some("file_id"), &missing);
    }
    bob.list(&format!("after={}", file.id)).await.assert_error(
        StatusCode::BAD_REQUEST,
        Some("after"),
        &missing,
    );
    assert_eq!(bob.list_ids("").await, std::slice::from_ref(&bobs_file.id));
    assert_eq!(alice.list_ids("").await, std::slice::from_ref(&file.id));

    // Alice's objects are as she left them.
    assert_eq!(alice.retrieve(&file.id).await.ok::<FileObject>(), file);
    assert_eq!(alice.content_ok(&file.id).await, "xyz");
    let replay = alice
        .complete_ok(&finished.id, &[&finished_part.id], None)
        .await;
    assert_eq!(replay, completed);
    let more = alice.add_part_ok(&pending.id, b"cd").await;
    let file = alice
        .complete_ok(&pending.id, &[&part.id, &more.id], None)
        .await
        .file
        .unwrap();
    assert_eq!(alice.content_ok(&file.id).await, "abcd");
    // And Bob's own File is his.
    bob.retrieve(&bobs_file.id).await.ok::<FileObject>();
    alice.retrieve(&bobs_file.id).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("file_id"),
        &format!("No such File object: {}", bobs_file.id),
    );
}

#[tokio::test]
async fn a_cancel_by_another_owner_leaves_the_upload_pending() {
    let server = TestServer::start().await;
    let alice = server.client().await;
    let bob = alice.with_key(Some(KEY_B));
    let upload = alice.create_upload(2).await;
    bob.cancel(&upload.id).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("upload_id"),
        &format!("No such Upload object: {}", upload.id),
    );
    let part = alice.add_part_ok(&upload.id, b"ok").await;
    alice.complete_ok(&upload.id, &[&part.id], None).await;
}

#[tokio::test]
async fn files_made_directly_are_isolated_too() {
    let server = TestServer::start().await;
    let alice = server.client().await;
    let bob = alice.with_key(Some(KEY_B));
    let (content_type, body) = file_form(&[("purpose", "assistants")], "a.txt", b"alice");
    let file: FileObject = alice
        .send(
            http::Method::POST,
            "/v1/files",
            Some(&content_type),
            full(body),
        )
        .await
        .ok();
    bob.content(&file.id).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("file_id"),
        &format!("No such File object: {}", file.id),
    );
    assert!(bob.list_ids("").await.is_empty());
    assert_eq!(alice.content_ok(&file.id).await, "alice");
}
