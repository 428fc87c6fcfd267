//! Expiry on an injected clock: one second before `expires_at` an Upload takes parts; at
//! `expires_at` it is expired and refuses parts, complete and cancel (400); the sweeper then
//! removes its part files, and leaves a completed Upload's alone.

use std::path::Path;
use std::time::Duration;

use uploads_core::types::Upload;
use uploads_server::Server;
use uploads_server::clock::ManualClock;

use crate::support::{Client, Reply, block_on, shared_memory, tree};

/// A fixed start: 2023-11-14T22:13:20Z.
const START: u64 = 1_700_000_000;

#[track_caller]
fn assert_refused(reply: &Reply, message: &str) {
    reply.expect(400);
    let error = reply.error().error;
    assert_eq!(error.message, message);
    assert_eq!(error.kind, "invalid_request_error");
}

fn part_files(root: &Path, upload: &str) -> Vec<std::path::PathBuf> {
    tree(&root.join("uploads").join(upload).join("parts"))
}

#[test]
fn an_upload_takes_parts_until_expires_at_then_is_refused_and_swept() {
    let _memory = shared_memory();
    block_on(an_upload_takes_parts_until_expires_at_then_is_refused_and_swept_run());
}

async fn an_upload_takes_parts_until_expires_at_then_is_refused_and_swept_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let server = Server::builder()
        .data_dir(dir.path())
        .clock(clock.clone())
        .sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let client = Client::new(server.local_addr(), None);
    let expiring = client.new_upload("expiring.bin", 6).await;
    let kept = client.new_upload("kept.bin", 3).await;
    assert_eq!(expiring.expires_at, START + 3600);
    let id = expiring.id.as_str();

    clock.set(expiring.expires_at - 1);
    let first = client.new_part(id, b"abc").await;
    let kept_part = client.new_part(kept.id.as_str(), b"xyz").await;
    let kept: Upload = client
        .complete(kept.id.as_str(), &[kept_part], None)
        .await
        .unwrap()
        .expect(200)
        .json();
    assert_eq!(part_files(dir.path(), id).len(), 1);

    clock.set(expiring.expires_at);
    assert_refused(
        &client.add_part(id, b"def").await.unwrap(),
        "Cannot add parts to an Upload that is already expired.",
    );
    assert_refused(
        &client
            .complete(id, std::slice::from_ref(&first), None)
            .await
            .unwrap(),
        "Cannot complete an Upload that is already expired.",
    );
    assert_refused(
        &client.cancel(id).await.unwrap(),
        "Cannot cancel an Upload that is already expired.",
    );

    // The sweeper runs every 50 ms; give it a bounded number of chances.
    let mut swept = false;
    for _ in 0..200 {
        if part_files(dir.path(), id).is_empty() {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(swept, "the expired upload's parts were never swept");
    // Swept or not, it never completes.
    let late = client.complete(id, &[first], None).await.unwrap();
    assert!(
        matches!(late.status.as_u16(), 400 | 404),
        "an expired upload after the sweep: {late:?}"
    );
    // The Upload completed in time keeps its bytes.
    let file = kept.file.unwrap();
    let content = client
        .content(file.id.as_str())
        .await
        .unwrap()
        .expect(200)
        .body
        .clone();
    assert_eq!(&content[..], b"xyz");
}
