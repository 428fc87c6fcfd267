//! The sweeper removes expired data one record at a time: one record it cannot remove is
//! logged and skipped, and every other record is still swept.

mod support;

use std::time::Duration;

use support::{T0, TestServer, eventually};

#[tokio::test]
async fn a_record_the_sweeper_cannot_remove_never_blocks_the_others() {
    let server =
        TestServer::start_with(|builder| builder.sweep_interval(Duration::from_millis(20))).await;
    let client = server.client().await;
    let mut uploads = Vec::new();
    for _ in 0..4 {
        uploads.push(client.create_upload(1).await.id);
    }
    uploads.sort();
    // The first one swept (ids are swept in order) cannot be removed: its state file is a
    // non-empty directory.
    let uploads_dir = server.data_dir().join("uploads");
    let blocked = uploads_dir.join(uploads[0].as_str()).join("state.json");
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir_all(blocked.join("blocker")).unwrap();

    // Past expiry and retention: every Upload's record may go.
    server.clock.set(T0 + 3 * 3600);
    eventually("every other Upload is swept", || {
        uploads[1..]
            .iter()
            .all(|upload| !uploads_dir.join(upload.as_str()).exists())
    })
    .await;
    assert!(uploads_dir.join(uploads[0].as_str()).exists());
}
