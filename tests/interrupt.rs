//! Ctrl-C on the built `uploads put`, async and `--blocking` alike, while parts are in
//! flight through a slow link: exit 130, nothing on stdout, no more parts sent; with
//! `--resume STATE` the Upload and the state file are kept and the same command finishes the
//! same Upload, with `--cancel-on-stop` the Upload is cancelled. (Without either, the Upload
//! is kept under `$XDG_STATE_HOME`: `crates/uploads-cli/tests/put.rs`.)
//!
//! The binary is `target/<profile>/uploads`, built by `cargo test --workspace` (or
//! `cargo build -p uploads-cli`).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use uploads_core::types::UploadId;
use uploads_core::uploader::SessionSnapshot;

use support::{API_KEY, Harness};

const PART: usize = 256 * 1024;
const PARTS: usize = 16;

/// The `uploads` binary beside this test's own directory of binaries.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join(format!("uploads{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p uploads-cli` first",
        path.display()
    );
    path
}

fn put(harness: &Harness, base_url: &str, args: &[String]) -> Command {
    let mut command = Command::new(binary());
    command
        .arg("put")
        // The state kept for a re-run stays in the test's own directory.
        .env("XDG_STATE_HOME", harness.path("state"))
        .args(args)
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .env("OPENAI_API_KEY", API_KEY)
        .env("OPENAI_BASE_URL", base_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits until `done` holds; a generous bound only guards against a hang.
fn wait_until(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_mins(1), "never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The output of `child`, or a failed test if it does not exit (a generous hang guard).
fn output_within_guard(child: std::process::Child) -> Output {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    receiver
        .recv_timeout(Duration::from_mins(1))
        .expect("uploads put did not exit after Ctrl-C")
        .unwrap()
}

fn interrupted_put(blocking: bool, resume: bool) {
    let harness = Harness::start();
    let proxy = harness.slow_proxy(PART as u64);
    let (path, data) = harness.write_file("train.jsonl", PART * PARTS);
    let state = harness.path("train.state.json");
    let mut args = vec![
        path.display().to_string(),
        "--purpose".into(),
        "batch".into(),
        "--part-size".into(),
        "256KiB".into(),
        "--concurrency".into(),
        "2".into(),
    ];
    if blocking {
        args.push("--blocking".into());
    }
    if resume {
        args.extend(["--resume".into(), state.display().to_string()]);
    } else {
        args.push("--cancel-on-stop".into());
    }

    let child = put(&harness, &proxy.base_url(), &args).spawn().unwrap();
    // A part is stored and others are on their way (each takes a second on this link).
    wait_until(|| proxy.parts_answered() >= 1);
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let output = output_within_guard(child);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();

    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    let answered = proxy.parts_answered();
    assert!(
        answered < PARTS as u64,
        "every part was sent after Ctrl-C: {stderr}"
    );
    // Nothing more arrives once the process is gone.
    let requests = proxy.part_requests();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proxy.part_requests(), requests);

    let client = uploads_ureq::Client::new(Harness::config(&harness.base_url()));
    if resume {
        let snapshot = SessionSnapshot::from_json(&std::fs::read_to_string(&state).unwrap())
            .unwrap_or_else(|error| panic!("the state file is not a snapshot ({error}): {stderr}"));
        assert!(stderr.contains("kept"), "{stderr}");
        // The Upload was kept: the same command finishes it (directly, at full speed).
        let output = put(&harness, &harness.base_url(), &args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let upload: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(upload["id"], snapshot.upload.id.as_str());
        assert_eq!(upload["status"], "completed");
        let file_id = uploads_core::types::FileId::new(upload["file"]["id"].as_str().unwrap());
        let mut content = client.file_content(&file_id).unwrap();
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut content, &mut stored).unwrap();
        assert_eq!(stored, data);
        assert!(!state.exists(), "the state file outlived the upload");
    } else {
        // Cancelled: stderr names the Upload, and the server refuses parts for it.
        let upload_id = stderr
            .split_whitespace()
            .find(|word| word.starts_with("upload_"))
            .unwrap_or_else(|| panic!("no Upload named: {stderr}"));
        assert!(stderr.contains("is cancelled"), "{stderr}");
        let refused = client
            .add_upload_part_bytes(&UploadId::new(upload_id), b"late")
            .unwrap_err();
        let api = refused.api_error().unwrap();
        assert_eq!(api.status, 400, "{api}");
    }
}

#[test]
fn ctrl_c_with_resume_keeps_the_upload_async() {
    interrupted_put(false, true);
}

#[test]
fn ctrl_c_with_resume_keeps_the_upload_blocking() {
    interrupted_put(true, true);
}

#[test]
fn ctrl_c_with_cancel_on_stop_cancels_the_upload_async() {
    interrupted_put(false, false);
}

#[test]
fn ctrl_c_with_cancel_on_stop_cancels_the_upload_blocking() {
    interrupted_put(true, false);
}
