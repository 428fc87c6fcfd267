//! The official Python SDK against a server with a bytes quota and a request rate, on either
//! backend: an Upload over the quota is refused with nothing stored, and a burst over the
//! rate completes through the SDK's own retries. The script is
//! `tests/conformance/python_limits.py`; the SDK is the harness's venv
//! ([`support::services::venv_python`], the conformance suite's exact pins).
//!
//! The server runs on the system's clock (the database's on PostgreSQL): the SDK waits real
//! time after a 429, and the test depends only on waits being at least as long as asked.

mod support;

use std::path::Path;
use std::process::Command;

use support::{KEY_A, start_on_system_clock};
use uploads_core::limits::Limits;

const QUOTA_BYTES: u64 = 4096;
/// One token back every second.
const REQUESTS_PER_MINUTE: u32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_is_refused_over_the_quota_and_waits_out_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default()
        .with_quota_bytes(QUOTA_BYTES)
        .with_requests_per_minute(REQUESTS_PER_MINUTE);
    let server = start_on_system_clock(dir.path(), |builder| builder.limits(limits)).await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/python_limits.py");
    let work = tempfile::tempdir().unwrap();
    let base_url = server.base_url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(support::services::venv_python())
            .arg(script)
            .arg(base_url)
            .arg(KEY_A)
            .arg(QUOTA_BYTES.to_string())
            .arg(REQUESTS_PER_MINUTE.to_string())
            .arg(work.path())
            .output()
            .expect("run the SDK's script")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    server.shutdown().await;
}
