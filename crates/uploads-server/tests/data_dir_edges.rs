//! The directory store's startup on a data dir that is not as the server left it: record
//! paths that are directories, and symbolic links. Startup serves everything it can read,
//! quarantines (and logs, with the path and the reason) what it cannot, and never follows a
//! link: nothing outside the data dir is read or removed.
//!
//! Directory store only: on the shared backend the records are rows, and these tests skip.

mod support;

use std::path::Path;
use support::logs::logs;

use http::StatusCode;
use support::{TestServer, quarantined};

/// Replaces the file at `path` by a non-empty directory.
fn replace_with_directory(path: &Path) {
    std::fs::remove_file(path).unwrap();
    std::fs::create_dir_all(path.join("inside")).unwrap();
}

#[tokio::test]
async fn record_paths_that_are_directories_are_quarantined_and_everything_else_is_served() {
    if support::shared_backend() {
        return;
    }
    let logs = logs();
    let server = TestServer::start().await;
    let client = server.client().await;
    let kept = client.upload_file(&[b"kept"]).await;
    let broken_file = client.upload_file(&[b"broken"]).await;
    let pending = client.create_upload(4).await;
    let state_is_dir = client.create_upload(4).await;
    let log_is_dir = client.create_upload(4).await;
    client.add_part_ok(&log_is_dir.id, b"ab").await;
    let (state_id, log_id, file_id) = (
        state_is_dir.id.clone(),
        log_is_dir.id.clone(),
        broken_file.id.clone(),
    );
    let server = server
        .restart_after(|root| {
            let uploads = root.join("uploads");
            replace_with_directory(&uploads.join(state_id.as_str()).join("state.json"));
            replace_with_directory(&uploads.join(log_id.as_str()).join("parts.log"));
            replace_with_directory(&root.join("files").join(format!("{file_id}.json")));
        })
        .await;
    let root = server.data_dir();
    let client = server.client().await;
    assert_eq!(client.content_ok(&kept.id).await.as_ref(), b"kept");
    client.add_part_ok(&pending.id, b"more").await;
    assert_eq!(
        client.retrieve(&broken_file.id).await.status,
        StatusCode::NOT_FOUND
    );
    for gone in [&state_is_dir.id, &log_is_dir.id] {
        assert_eq!(client.cancel(gone).await.status, StatusCode::NOT_FOUND);
    }
    let quarantined = quarantined(root);
    for name in [
        format!("upload-{}", state_is_dir.id),
        format!("upload-{}", log_is_dir.id),
        format!("file-{}.json", broken_file.id),
    ] {
        assert!(quarantined.contains(&name), "{name} in {quarantined:?}");
    }
    // Each is logged with the path that could not be read and why.
    for path in [
        format!("{}/state.json", state_is_dir.id),
        format!("{}/parts.log", log_is_dir.id),
        format!("{}.json", broken_file.id),
    ] {
        let line = logs.line_with(&[&path, "quarantined"]);
        assert!(line.contains("is a directory"), "{line}");
    }
}

#[tokio::test]
async fn the_startup_walk_never_follows_a_symlink() {
    if support::shared_backend() {
        return;
    }
    let logs = logs();
    let outside = tempfile::tempdir().unwrap();
    let outside_dir = outside.path().join("victim");
    std::fs::create_dir_all(outside_dir.join("parts")).unwrap();
    for debris in [".tmp-x", "parts/.tmp-y", "parts/part_outside"] {
        std::fs::write(outside_dir.join(debris), b"not the server's").unwrap();
    }
    let outside_state = outside.path().join("state.json");
    std::fs::write(&outside_state, b"{not the server's").unwrap();

    let server = TestServer::start().await;
    let client = server.client().await;
    let kept = client.upload_file(&[b"kept"]).await;
    let pending = client.create_upload(4).await;
    let linked_state = client.create_upload(4).await;
    let (pending_id, linked_state_id) = (pending.id.clone(), linked_state.id.clone());
    let server = server
        .restart_after(|root| {
            let uploads = root.join("uploads");
            // An Upload directory, a Parts directory and a temp name that are links to a
            // directory outside, and a state file that is a link to a file outside.
            std::os::unix::fs::symlink(&outside_dir, uploads.join("upload_linked")).unwrap();
            let pending_dir = uploads.join(pending_id.as_str());
            std::os::unix::fs::symlink(&outside_dir, pending_dir.join(".tmp-linked")).unwrap();
            std::fs::create_dir_all(pending_dir.join("parts")).unwrap();
            std::os::unix::fs::symlink(
                outside_dir.join("parts"),
                pending_dir.join("parts/part_linked"),
            )
            .unwrap();
            let state = uploads.join(linked_state_id.as_str()).join("state.json");
            std::fs::remove_file(&state).unwrap();
            std::os::unix::fs::symlink(&outside_state, &state).unwrap();
        })
        .await;
    let root = server.data_dir();
    let client = server.client().await;

    for debris in [".tmp-x", "parts/.tmp-y", "parts/part_outside"] {
        assert_eq!(
            std::fs::read(outside_dir.join(debris)).unwrap(),
            b"not the server's",
            "{debris} outside the data dir"
        );
    }
    assert_eq!(std::fs::read(&outside_state).unwrap(), b"{not the server's");
    assert_eq!(client.content_ok(&kept.id).await.as_ref(), b"kept");
    client.add_part_ok(&pending.id, b"more").await;
    assert_eq!(
        client.cancel(&linked_state.id).await.status,
        StatusCode::NOT_FOUND
    );
    let quarantined = quarantined(root);
    let name = format!("upload-{}", linked_state.id);
    assert!(quarantined.contains(&name), "{name} in {quarantined:?}");
    logs.line_with(&["upload_linked", "symbolic link"]);
    logs.line_with(&["part_linked", "symbolic link"]);
    let line = logs.line_with(&[&format!("{}/state.json", linked_state.id), "quarantined"]);
    assert!(line.contains("symbolic link"), "{line}");
}

#[tokio::test]
async fn a_quarantine_that_is_a_symlink_is_not_followed_and_the_rest_is_served() {
    if support::shared_backend() {
        return;
    }
    let logs = logs();
    let outside = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let client = server.client().await;
    let kept = client.upload_file(&[b"kept"]).await;
    let broken = client.create_upload(4).await;
    let broken_id = broken.id.clone();
    let outside_dir = outside.path().to_owned();
    let server = server
        .restart_after(|root| {
            let state = root
                .join("uploads")
                .join(broken_id.as_str())
                .join("state.json");
            std::fs::write(state, b"{not json").unwrap();
            std::os::unix::fs::symlink(&outside_dir, root.join("quarantine")).unwrap();
        })
        .await;
    let client = server.client().await;
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "a record was moved out of the data dir"
    );
    assert_eq!(client.content_ok(&kept.id).await.as_ref(), b"kept");
    assert_eq!(
        client.cancel(&broken.id).await.status,
        StatusCode::NOT_FOUND
    );
    let line = logs.line_with(&[broken.id.as_str(), "left where it is"]);
    assert!(line.contains("symbolic link"), "{line}");
    assert!(
        server
            .data_dir()
            .join("uploads")
            .join(broken.id.as_str())
            .join("state.json")
            .exists()
    );
}
