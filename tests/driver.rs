//! The core's example driver (`crates/uploads-core/examples/reqwest.rs`, built by
//! `cargo test --workspace` or `cargo build -p uploads-core --example reqwest`) against the
//! real server: parts in parallel, md5, retries through injected faults, the completed Upload
//! as JSON on stdout, and the bytes stored.

mod support;

use std::path::PathBuf;
use std::process::Command;

use uploads_core::limits::MIB;
use uploads_core::types::FileId;

use support::proxy::Fault;
use support::{API_KEY, Adapter, Harness, Ureq};

/// The example's binary, in the examples directory beside this test's directory.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("reqwest{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p uploads-core --example reqwest` first",
        path.display()
    );
    path
}

#[test]
fn the_reqwest_example_uploads_a_file_through_faults() {
    let harness = Harness::start();
    // Parts cut as the upload goes (the default); the first two attempts fail.
    let (path, data) = harness.write_file("batch.jsonl", (20 * MIB) as usize);
    let proxy = harness.proxy(vec![Fault::Status(500), Fault::Reset]);
    let output = Command::new(example())
        .arg(&path)
        .args(["--purpose", "batch"])
        .env("OPENAI_API_KEY", API_KEY)
        .env("OPENAI_BASE_URL", proxy.base_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(proxy.faults_injected(), 2);
    assert_eq!(
        proxy.part_requests(),
        proxy.parts_answered() + 2,
        "each part stored once, and the two failed attempts sent again"
    );

    let upload: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(upload["status"], "completed");
    assert_eq!(upload["bytes"], 20 * MIB);
    let client: Ureq = harness.client();
    let file_id = FileId::new(upload["file"]["id"].as_str().unwrap());
    assert_eq!(client.file_content(&file_id).unwrap(), data);
}

#[test]
fn the_reqwest_example_names_a_refused_address_at_once_in_one_line() {
    let harness = Harness::start();
    let (path, _) = harness.write_file("batch.jsonl", 1024);
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(example())
        .arg(&path)
        .args(["--purpose", "batch", "--mime-type", "application/jsonl"])
        .env("OPENAI_API_KEY", API_KEY)
        .env("OPENAI_BASE_URL", format!("http://{closed}/v1"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "error: creating the Upload failed: cannot connect to {closed} (connection refused): "
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line with every cause: {stderr}"
    );
    assert!(!stderr.contains("Connect {"), "no Debug dump: {stderr}");
}

#[test]
fn the_reqwest_example_resumes_from_its_snapshot() {
    let harness = Harness::start();
    let (path, data) = harness.write_file("batch.jsonl", (20 * MIB) as usize);
    let snapshot = harness.path("batch.upload.json");
    // A snapshot of an Upload with no part stored yet, as a Ctrl-C right after create leaves.
    let client: Ureq = harness.client();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let nanos = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path_text = path.to_str().unwrap();
    let options =
        uploads_core::upload::UploadOptions::new(uploads_core::types::Purpose::Batch).md5(false);
    let fingerprint = uploads_core::uploader::source_fingerprint(path_text, 20 * MIB, Some(nanos));
    // This machine's clock: the snapshot keeps when the Upload expires by it.
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut uploader = uploads_core::uploader::Uploader::<std::io::Error>::new(
        &options,
        "batch.jsonl",
        20 * MIB,
        Some(fingerprint),
        now,
    )
    .unwrap();
    let Some(uploads_core::uploader::Action::Send(uploads_core::uploader::Transmit::Create(
        create,
    ))) = uploader.poll_action(now)
    else {
        panic!("expected create")
    };
    let created = client.create_upload(&create).unwrap();
    uploader.handle_created(Ok(created.clone()), now, 0.0);
    std::fs::write(&snapshot, uploader.snapshot().unwrap().to_json()).unwrap();

    let output = Command::new(example())
        .arg(&path)
        .args(["--purpose", "batch", "--snapshot"])
        .arg(&snapshot)
        .env("OPENAI_API_KEY", API_KEY)
        .env("OPENAI_BASE_URL", harness.base_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let upload: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        upload["id"],
        created.id.as_str(),
        "the snapshot's Upload, resumed"
    );
    let file_id = FileId::new(upload["file"]["id"].as_str().unwrap());
    assert_eq!(client.file_content(&file_id).unwrap(), data);
    assert!(
        !snapshot.exists(),
        "the snapshot is removed once the Upload completes"
    );
}
