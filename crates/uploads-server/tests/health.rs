//! `GET /healthz`: 200 without a key while the store takes writes, 503 once it does not.

mod support;

use http::StatusCode;
use support::{Client, Protocol, TestServer};

#[tokio::test]
async fn healthz_needs_no_key_and_answers_503_when_the_store_is_not_usable() {
    let server = TestServer::start().await;
    let anonymous = Client::connect(server.running.local_addr(), Protocol::Http1, None).await;
    let healthy = anonymous.get("/healthz").await;
    assert_eq!(healthy.status, StatusCode::OK, "{}", healthy.text());
    assert_eq!(healthy.json::<serde_json::Value>()["status"], "ok");

    // The files directory replaced by a file: nothing can be written there any more.
    let files = server.data_dir().join("files");
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::write(&files, b"not a directory").unwrap();
    let sick = anonymous.get("/healthz").await;
    assert_eq!(
        sick.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        sick.text()
    );
    assert_eq!(sick.error().kind, "server_error");

    std::fs::remove_file(&files).unwrap();
    std::fs::create_dir(&files).unwrap();
    assert_eq!(anonymous.get("/healthz").await.status, StatusCode::OK);
    let post = anonymous.post_json("/healthz", "{}").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET");
}

/// A tmpfs of a fixed size mounted on a fresh directory (a real disk that fills up),
/// unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (as `mount -o size=` takes it); `None` where this process may
    /// not mount (the tests run as root; elsewhere the test says so and skips).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match mounted {
            Ok(status) if status.success() => Some(Self { dir }),
            other => {
                eprintln!("skipped: cannot mount a tmpfs here ({other:?}); run the tests as root");
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes to `path` until the disk is full; returns how many bytes it took.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7_u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
            Err(error) => panic!("filling the disk: {error}"),
        }
    }
    file.sync_all().ok();
    written
}

#[tokio::test]
async fn healthz_answers_503_while_the_disk_is_full_and_200_once_there_is_room() {
    if support::shared_backend() {
        return;
    }
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let clock = uploads_server::clock::ManualClock::new(support::T0);
    let running = support::start_on(&disk.path().join("data"), &clock, |builder| builder).await;
    let client = Client::connect(running.local_addr(), Protocol::Http1, Some(support::KEY_A)).await;
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    let upload = client.create_upload(512 * 1024).await;

    let filler = disk.path().join("filler");
    let fill_bytes = fill(&filler);
    let full = client.get("/healthz").await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.text()
    );
    // A disk in use is never exactly full: with a few pages free a small file still fits,
    // but a Part does not.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(fill_bytes - 256 * 1024)
        .unwrap();
    let part = client.add_part(&upload.id, &vec![1_u8; 512 * 1024]).await;
    assert_ne!(part.status, StatusCode::OK, "{}", part.text());
    let nearly_full = client.get("/healthz").await;
    assert_eq!(
        nearly_full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        nearly_full.text()
    );
    assert_eq!(nearly_full.error().kind, "server_error");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    client
        .add_part_ok(&upload.id, &vec![1_u8; 512 * 1024])
        .await;
    running.shutdown().await;
}
