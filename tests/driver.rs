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
    // Three 8 MiB parts (the default size for this file); the first two attempts fail.
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
    assert_eq!(proxy.part_requests(), 5, "three parts, two of them twice");

    let upload: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(upload["status"], "completed");
    assert_eq!(upload["bytes"], 20 * MIB);
    let client: Ureq = harness.client();
    let file_id = FileId::new(upload["file"]["id"].as_str().unwrap());
    assert_eq!(client.file_content(&file_id).unwrap(), data);
}
