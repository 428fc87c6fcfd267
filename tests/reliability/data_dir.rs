//! One process per data directory: a second `uploads serve`, or `uploads put --local`, on a
//! directory a server is using is refused with the holder's pid and changes nothing.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::child::{ChildServer, KEY};
use crate::support::{Client, block_on, tree, uploads_binary};

/// How long a refused command may take; only a hang guard (a command that was not refused
/// keeps serving, and is killed after it).
const REFUSAL_GUARD: Duration = Duration::from_mins(1);

/// Runs `uploads` with `args` to its end; each is refused at once, before any network work.
fn uploads(args: &[&str]) -> Output {
    let mut child = Command::new(uploads_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("UPLOADS_API_KEYS")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run uploads");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > REFUSAL_GUARD {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "`uploads {}` was not refused: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn a_served_data_dir_refuses_a_second_server_and_put_local_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let served = ChildServer::start(&data_dir);
    let client = Client::new(served.addr, Some(KEY));
    let before = block_on(async {
        client.new_upload("kept.bin", 3).await;
        tree(&data_dir)
    });
    let holder = format!("pid {}", served.pid());

    let second = uploads(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second server started: {stderr}"
    );
    assert!(stderr.contains(&holder), "{stderr}");

    let source = dir.path().join("source.txt");
    std::fs::write(&source, b"hello").unwrap();
    let put = uploads(&[
        "put",
        source.to_str().unwrap(),
        "--purpose",
        "user_data",
        "--local",
        "--data-dir",
        data_dir.to_str().unwrap(),
        // Nothing kept for a re-run in the user's own state directory.
        "--no-resume",
    ]);
    let stderr = String::from_utf8_lossy(&put.stderr);
    assert!(
        !put.status.success(),
        "put --local ran beside a server: {stderr}"
    );
    assert!(stderr.contains(&holder), "{stderr}");
    assert!(stderr.contains("--base-url"), "{stderr}");

    // Nothing of the served directory was touched, and it still serves.
    assert_eq!(tree(&data_dir), before);
    block_on(client.new_upload("still.bin", 1));
}
