//! `uploads put` as people use it: closed pipes, failures and their advice, several files,
//! progress on a pipe, Ctrl-C and the resume that follows.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::{
    command, error_lines, interrupt_once_a_part_is_stored, interrupt_once_kept, kept_state,
    sample_file, server, server_with, state_dir, stderr, stdout_json, stdout_json_lines,
    stored_uploads, uploads, uploads_async,
};
use uploads_core::limits::Limits;

/// Runs the binary with its stdout closed before it writes anything.
fn with_stdout_closed(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut child = command(args, &[], cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "notes.txt", 1000);
    let path = path.to_str().unwrap();
    for args in [
        &["put", path, "--purpose", "assistants", "--local"][..],
        &["files", "list", "--local"][..],
    ] {
        let output = with_stdout_closed(args, dir.path());
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            output.status.code(),
            Some(141),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            error_lines(&output).is_empty(),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_address_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "a.txt", 10);
    let path = path.to_str().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}/v1", free.local_addr().unwrap());
    drop(free);
    let key = [("OPENAI_API_KEY", "sk-cli")];
    let address = refused
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    for args in [
        &["files", "list", "--base-url", &refused][..],
        &[
            "put",
            path,
            "--purpose",
            "assistants",
            "--base-url",
            &refused,
        ][..],
    ] {
        let output = uploads_async(args, &key, dir.path()).await;
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{}", stderr(&output));
        assert!(
            errors[0].contains(&format!("cannot connect to {address} (connection refused)")),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("uploads serve"), "{}", errors[0]);
    }

    let server = server(dir.path(), "sk-cli").await;
    let without_v1 = server.base_url().trim_end_matches("/v1").to_owned();
    let output = uploads_async(
        &["files", "list", "--base-url", &without_v1],
        &key,
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let errors = error_lines(&output);
    assert!(errors[0].contains("Invalid URL"), "{}", errors[0]);
    assert!(
        errors[0].contains(&format!("try {without_v1}/v1")),
        "{}",
        errors[0]
    );

    let https = server.base_url().replacen("http://", "https://", 1);
    let output = uploads_async(&["files", "list", "--base-url", &https], &key, dir.path()).await;
    assert_eq!(output.status.code(), Some(1));
    let errors = error_lines(&output);
    assert!(errors[0].contains("does not speak https"), "{}", errors[0]);
    assert!(errors[0].contains(&server.base_url()), "{}", errors[0]);
    server.shutdown().await;

    // A TLS server answers plain http with an alert record.
    let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_url = format!("http://{}/v1", tls.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in tls.incoming().take(4) {
            let mut stream = stream.unwrap();
            let mut buffer = [0; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
        }
    });
    let output = uploads_async(&["files", "list", "--base-url", &tls_url], &key, dir.path()).await;
    assert_eq!(output.status.code(), Some(1));
    let errors = error_lines(&output);
    assert!(errors[0].contains("does it speak https"), "{}", errors[0]);
    assert!(
        errors[0].contains(&tls_url.replacen("http://", "https://", 1)),
        "{}",
        errors[0]
    );
}

#[test]
fn files_that_cannot_go_are_refused_before_any_request_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("store");
    std::fs::create_dir(dir.path().join("data.jsonl")).unwrap();
    let (blob, _) = sample_file(dir.path(), "blob.bin", 10);
    let (text, _) = sample_file(dir.path(), "a.txt", 10);
    let (blob, text) = (blob.to_str().unwrap(), text.to_str().unwrap());
    let local = ["--local", "--data-dir", data_dir.to_str().unwrap()];
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (
            &["put", "data.jsonl", "--purpose", "fine-tune"],
            &["data.jsonl is a directory"],
            &[],
        ),
        (
            &["put", blob, "--purpose", "assistants"],
            &["--mime-type", "application/octet-stream"],
            &[],
        ),
        (
            &["put", blob, "--purpose", "vision"],
            &["--mime-type", ".png"],
            &["octet-stream"],
        ),
        (
            &["put", text, "--purpose", "vision"],
            &[
                "Invalid MIME type 'text/plain' for purpose 'vision'",
                "accepts .gif .jpeg .jpg .png .webp",
                "--purpose assistants accepts text/plain",
            ],
            &["image/webp, "],
        ),
    ];
    for (args, expected, unexpected) in cases {
        let args: Vec<&str> = args.iter().chain(&local).copied().collect();
        let output = uploads(&args, &[], dir.path());
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{args:?}: {}", stderr(&output));
        for text in expected {
            assert!(errors[0].contains(text), "{args:?}: {}", errors[0]);
        }
        for text in unexpected {
            assert!(!errors[0].contains(text), "{args:?}: {}", errors[0]);
        }
        assert_eq!(stored_uploads(&data_dir), 0, "{args:?}");
    }
}

#[test]
fn sizes_and_durations_read_as_people_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "a.txt", 100_000);
    let path = path.to_str().unwrap();
    let refusals: [(&str, &str, &[&str]); 2] = [
        (
            "--part-size",
            "65M",
            &["part size 65 MiB is over the part limit of 64 MiB"],
        ),
        (
            "--expires-after",
            "30m",
            &["--expires-after 30m00s is outside", "1h00m to 30d00h"],
        ),
    ];
    for (flag, value, expected) in refusals {
        let args = [
            "put",
            path,
            "--purpose",
            "assistants",
            flag,
            value,
            "--local",
        ];
        let output = uploads(&args, &[], dir.path());
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        for text in expected {
            assert!(stderr(&output).contains(text), "{}", stderr(&output));
        }
    }

    for (part_size, expires) in [("16K", "1h"), ("20KB", "30d"), ("32KiB", "86400")] {
        let output = uploads(
            &[
                "put",
                path,
                "--purpose",
                "assistants",
                "--part-size",
                part_size,
                "--expires-after",
                expires,
                "--local",
            ],
            &[],
            dir.path(),
        );
        assert!(output.status.success(), "{part_size}: {}", stderr(&output));
        let file = &stdout_json(&output)["file"];
        let lifetime = file["expires_at"].as_u64().unwrap() - file["created_at"].as_u64().unwrap();
        let expected = match expires {
            "1h" => 3600,
            "30d" => 2_592_000,
            _ => 86_400,
        };
        assert_eq!(lifetime, expected, "{expires}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_to_do_and_never_advise_a_command_that_fails_again() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().with_max_part_bytes(8 * 1024);
    let server = server_with(dir.path(), "sk-cli", limits).await;
    let base_url = server.base_url();
    let env = [
        ("OPENAI_API_KEY", "sk-cli"),
        ("OPENAI_BASE_URL", base_url.as_str()),
    ];
    let (path, _) = sample_file(dir.path(), "a.txt", 40_000);
    let state = dir.path().join("a.state");
    let args = [
        "put",
        path.to_str().unwrap(),
        "--purpose",
        "assistants",
        "--part-size",
        "16KiB",
        "--concurrency",
        "1",
        "--resume",
        state.to_str().unwrap(),
    ];
    // Every part is over the server's limit: a 413 cannot be retried into success.
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    let snapshot: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let upload_id = snapshot["upload"]["id"].as_str().unwrap().to_owned();
    assert!(
        errors[0].contains(&format!("Upload {upload_id} failed")),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("413"), "{}", errors[0]);
    assert!(
        !errors[0].contains("part 0 "),
        "parts count from 1: {}",
        errors[0]
    );
    assert!(!errors[0].contains("continue with"), "{}", errors[0]);
    assert!(
        errors[0].contains(&format!("rm {}", state.display())),
        "{}",
        errors[0]
    );

    // An expired Upload.
    let original = std::fs::read_to_string(&state).unwrap();
    let mut expired = snapshot.clone();
    // Expired by the service's clock and by this machine's (which the uploader judges by).
    expired["upload"]["expires_at"] = Value::from(1);
    expired["expires_locally_at_ms"] = Value::from(1);
    std::fs::write(&state, expired.to_string()).unwrap();
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = &error_lines(&output)[0];
    assert!(
        message.contains(&format!("Upload {upload_id}, which has expired")),
        "{message}"
    );
    assert!(
        message.contains("run the command again to start a new Upload"),
        "{message}"
    );
    std::fs::write(&state, original).unwrap();

    // A cancelled one: the state file still says pending, the service knows better.
    let cancelled = uploads_async(&["cancel", &upload_id], &env, dir.path()).await;
    assert_eq!(stdout_json(&cancelled)["status"], "cancelled");
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = &error_lines(&output)[0];
    assert!(message.contains("already cancelled"), "{message}");
    assert!(
        message.contains(&format!("delete {}", state.display())),
        "{message}"
    );
    assert!(!message.contains("continue with"), "{message}");

    // A file that changed since.
    std::fs::write(&path, b"something else entirely").unwrap();
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = &error_lines(&output)[0];
    assert!(message.contains("a.txt changed since"), "{message}");
    assert!(
        message.contains(&format!("rm {}", state.display())),
        "{message}"
    );

    // A state file that is not one.
    std::fs::write(&state, "garbage").unwrap();
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = &error_lines(&output)[0];
    assert!(message.contains("is not a saved upload"), "{message}");
    assert!(!message.contains("continue with"), "{message}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_each_become_an_upload_and_one_failure_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().with_max_upload_bytes(50_000);
    let server = server_with(dir.path(), "sk-cli", limits).await;
    let env = [
        ("OPENAI_API_KEY", "sk-cli"),
        ("OPENAI_BASE_URL", &server.base_url()),
    ];
    let (a, a_data) = sample_file(dir.path(), "a.txt", 10_000);
    let (b, _) = sample_file(dir.path(), "b.txt", 100_000);
    let (c, c_data) = sample_file(dir.path(), "c.txt", 20_000);
    let files = [
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    ];
    let mut args = vec!["put"];
    args.extend(files);
    args.extend(["--purpose", "assistants", "--jobs", "2"]);
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let mut uploads = stdout_json_lines(&output);
    uploads.sort_by_key(|upload| upload["filename"].as_str().unwrap().to_owned());
    assert_eq!(uploads.len(), 2, "{}", stderr(&output));
    assert_eq!(uploads[0]["filename"], "a.txt");
    assert_eq!(uploads[0]["bytes"], a_data.len());
    assert_eq!(uploads[1]["filename"], "c.txt");
    assert_eq!(uploads[1]["bytes"], c_data.len());
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 2, "{}", stderr(&output));
    assert!(
        errors
            .iter()
            .any(|line| line.contains("b.txt: creating the Upload failed"))
    );
    assert!(
        errors
            .iter()
            .any(|line| line.contains("2 of 3 files uploaded, 1 failed"))
    );

    let quiet = uploads_async(
        &["put", files[0], files[2], "--purpose", "assistants", "-q"],
        &env,
        dir.path(),
    )
    .await;
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stdout_json_lines(&quiet).len(), 2);
    assert_eq!(stderr(&quiet), "");
    server.shutdown().await;
}

#[test]
fn progress_on_a_pipe_is_a_few_plain_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "big.txt", 2 << 20);
    let output = uploads(
        &[
            "put",
            path.to_str().unwrap(),
            "--purpose",
            "assistants",
            "--part-size",
            "16KiB",
            "--local",
        ],
        &[],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let file_id = stdout_json(&output)["file"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = stderr(&output);
    assert!(
        text.lines().count() < 20,
        "128 parts, not a line each:\n{text}"
    );
    assert!(text.starts_with("uploads: uploading "), "{text}");
    let summary = text.lines().last().unwrap();
    assert!(summary.contains("uploaded "), "{summary}");
    assert!(summary.contains("big.txt: 2 MiB in "), "{summary}");
    assert!(summary.contains(&format!("File {file_id}")), "{summary}");
}

#[test]
fn ctrl_c_names_the_upload_and_the_same_command_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = sample_file(dir.path(), "big.txt", 16 << 20);
    let state = dir.path().join("big.state");
    let data_dir = dir.path().join("store");
    let args = [
        "put",
        path.to_str().unwrap(),
        "--purpose",
        "assistants",
        "--part-size",
        "64KiB",
        "--concurrency",
        "1",
        "--resume",
        state.to_str().unwrap(),
        "--local",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let (output, upload_id) = interrupt_once_a_part_is_stored(&args, dir.path(), &state);
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].contains(&format!("Upload {upload_id} is kept")),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("continue with: uploads put"),
        "{}",
        errors[0]
    );

    let output = uploads(&args, &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let upload = stdout_json(&output);
    assert_eq!(upload["id"], upload_id.as_str());
    assert_eq!(upload["bytes"], data.len());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("resuming Upload {upload_id}: ")),
        "{text}"
    );
    assert!(text.contains(" of 256 parts stored"), "{text}");
}

/// The arguments of a slow enough upload of `big.txt` in `dir` (256 parts, one at a time),
/// into the `--local` store `dir/store`.
fn slow_local_put(dir: &Path) -> Vec<String> {
    [
        "put",
        "big.txt",
        "--purpose",
        "assistants",
        "--part-size",
        "64KiB",
        "--concurrency",
        "1",
        "--local",
        "--data-dir",
        dir.join("store").to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn ctrl_c_keeps_the_upload_and_the_same_command_continues_it_leaving_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = sample_file(dir.path(), "big.txt", 16 << 20);
    let args = slow_local_put(dir.path());
    let (output, upload_id) = interrupt_once_kept(&strs(&args), dir.path());
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].contains(&format!("Upload {upload_id} is kept")),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("continue with: uploads put big.txt"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&format!("drop it with: uploads cancel {upload_id} --local")),
        "{}",
        errors[0]
    );
    // The key is never written (there is none with --local); the state is one snapshot.
    assert!(kept_state(dir.path()).is_some());

    let output = uploads(&strs(&args), &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let upload = stdout_json(&output);
    assert_eq!(upload["id"], upload_id.as_str());
    assert_eq!(upload["bytes"], data.len());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("big.txt: resuming Upload {upload_id}: ")),
        "{text}"
    );
    assert!(text.contains(" of 256 parts stored"), "{text}");
    assert_eq!(
        std::fs::read_dir(state_dir(dir.path())).unwrap().count(),
        0,
        "a completed Upload leaves no state behind"
    );
}

#[test]
fn a_kept_upload_that_cannot_be_continued_is_replaced_by_a_new_one_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "big.txt", 16 << 20);
    let args = slow_local_put(dir.path());
    let local = ["--local", "--data-dir", args[10].as_str()];

    // Cancelled meanwhile: the service says so at the first part.
    let (_, cancelled_id) = interrupt_once_kept(&strs(&args), dir.path());
    let mut cancel = vec!["cancel", cancelled_id.as_str()];
    cancel.extend(local);
    let cancelled = uploads(&cancel, &[], dir.path());
    assert_eq!(stdout_json(&cancelled)["status"], "cancelled");
    let output = uploads(&strs(&args), &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(stdout_json(&output)["id"], cancelled_id.as_str());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("Upload {cancelled_id} is cancelled")),
        "{text}"
    );
    assert!(text.contains("starting a new Upload"), "{text}");
    assert_eq!(std::fs::read_dir(state_dir(dir.path())).unwrap().count(), 0);

    // Expired by this machine's clock.
    let (_, expired_id) = interrupt_once_kept(&strs(&args), dir.path());
    let state = kept_state(dir.path()).unwrap();
    let mut snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    snapshot["upload"]["expires_at"] = Value::from(1);
    snapshot["expires_locally_at_ms"] = Value::from(1);
    std::fs::write(&state, snapshot.to_string()).unwrap();
    let output = uploads(&strs(&args), &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(stdout_json(&output)["id"], expired_id.as_str());
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "Upload {expired_id} has expired: starting a new Upload"
        )),
        "{text}"
    );

    // The file changed.
    let (_, changed_id) = interrupt_once_kept(&strs(&args), dir.path());
    let mut data = std::fs::read(&path).unwrap();
    data[0] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let output = uploads(&strs(&args), &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(stdout_json(&output)["id"], changed_id.as_str());
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "big.txt changed since Upload {changed_id} was started"
        )),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(state_dir(dir.path())).unwrap().count(), 0);
}

#[test]
fn no_resume_keeps_no_state_and_cancel_on_stop_cancels() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "big.txt", 16 << 20);
    let mut args = slow_local_put(dir.path());
    args.push("--cancel-on-stop".to_owned());
    let (output, upload_id) = interrupt_once_kept(&strs(&args), dir.path());
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert!(
        errors[0].contains(&format!("Upload {upload_id} is cancelled")),
        "{}",
        errors[0]
    );
    assert_eq!(std::fs::read_dir(state_dir(dir.path())).unwrap().count(), 0);

    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "big.txt", 1 << 20);
    let mut args = slow_local_put(dir.path());
    args.push("--no-resume".to_owned());
    let output = uploads(&strs(&args), &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!state_dir(dir.path()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_put_of_the_same_file_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "sk-cli").await;
    let base_url = server.base_url();
    sample_file(dir.path(), "big.txt", 16 << 20);
    let args = [
        "put",
        "big.txt",
        "--purpose",
        "assistants",
        "--part-size",
        "64KiB",
        "--concurrency",
        "1",
        "--base-url",
        base_url.as_str(),
    ];
    let env = [("OPENAI_API_KEY", "sk-cli")];
    let cwd = dir.path().to_owned();
    let first = {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let cwd = cwd.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = command(&strs(&args), &env, &cwd)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            while kept_state(&cwd).is_none() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the first put ended early"
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            // Frozen, so that it surely still runs while the second starts.
            support::signal(&child, rustix::process::Signal::STOP);
            child
        })
        .await
        .unwrap()
    };
    let second = uploads_async(&args, &env, &cwd).await;
    support::signal(&first, rustix::process::Signal::CONT);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let errors = error_lines(&second);
    assert!(
        errors[0].contains("another `uploads put` of big.txt to the same place is running"),
        "{}",
        errors[0]
    );
    let first = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(std::fs::read_dir(state_dir(&cwd)).unwrap().count(), 0);
    server.shutdown().await;
}

#[test]
fn files_start_in_the_order_given_and_each_keeps_its_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["big.txt", "middle.txt", "small.txt"];
    for (name, len) in names.iter().zip([1 << 20, 100_000, 10]) {
        sample_file(dir.path(), name, len);
    }
    let mut args = vec!["put"];
    args.extend(names);
    args.extend(["--purpose", "assistants", "--jobs", "1", "--local"]);
    let output = uploads(&args, &[], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    let started: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("uploads: uploading "))
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(started, names, "{text}");
    let uploads: Vec<Value> = stdout_json_lines(&output);
    let printed: Vec<&str> = uploads
        .iter()
        .map(|upload| upload["filename"].as_str().unwrap())
        .collect();
    assert_eq!(printed, names);
    assert_eq!(std::fs::read_dir(state_dir(dir.path())).unwrap().count(), 0);
}

#[test]
fn progress_json_is_one_object_per_line_with_the_bench_s_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = sample_file(dir.path(), "big.txt", 1 << 20);
    let output = uploads(
        &[
            "put",
            path.to_str().unwrap(),
            "--purpose",
            "assistants",
            "--part-size",
            "16KiB",
            "--progress",
            "json",
            "--local",
        ],
        &[],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<Value> = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|event| event["event"] == "progress")
        .collect();
    // At each of the 64 parts stored, and at the start.
    assert!(progress.len() > 64, "{}", progress.len());
    for event in &progress {
        let fields: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "event",
            "time_ms",
            "file",
            "bytes_delivered",
            "bytes_sent",
            "bytes_total",
            "parts_done",
            "parts_total",
        ];
        expected.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(fields, expected);
        assert_eq!(event["file"], path.to_str().unwrap());
        assert_eq!(event["bytes_total"], data.len());
        assert_eq!(event["parts_total"], 64);
        assert!(event["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let last = progress.last().unwrap();
    assert_eq!(last["parts_done"], 64);
    assert_eq!(last["bytes_delivered"], data.len());
    assert_eq!(last["bytes_sent"], data.len());
    assert!(events.last().unwrap()["event"] == "uploaded", "{events:?}");
}

#[test]
fn a_default_mime_type_serves_only_files_whose_extension_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "a.png", 100);
    sample_file(dir.path(), "b.bin", 100);
    sample_file(dir.path(), "c.txt", 100);
    let put = |args: &[&str]| {
        let mut all = vec!["put"];
        all.extend(args);
        all.extend(["--purpose", "vision", "--local"]);
        uploads(&all, &[], dir.path())
    };
    let output = put(&["a.png", "b.bin", "--default-mime-type", "image/png"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout_json_lines(&output).len(), 2);
    // A file whose extension names a type keeps it.
    let output = put(&["c.txt", "--default-mime-type", "image/png"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        error_lines(&output)[0].contains("Invalid MIME type 'text/plain'"),
        "{}",
        stderr(&output)
    );
    let output = put(&[
        "a.png",
        "--mime-type",
        "image/png",
        "--default-mime-type",
        "image/png",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        error_lines(&output)[0].contains("give one of them"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_kept_with_how_to_drop_it_and_a_dropped_one_is_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().with_max_part_bytes(8 * 1024);
    let server = server_with(dir.path(), "sk-cli", limits).await;
    let base_url = server.base_url();
    let env = [
        ("OPENAI_API_KEY", "sk-cli"),
        ("OPENAI_BASE_URL", base_url.as_str()),
    ];
    sample_file(dir.path(), "a.txt", 40_000);
    let args = [
        "put",
        "a.txt",
        "--purpose",
        "assistants",
        "--part-size",
        "16KiB",
        "--concurrency",
        "1",
    ];
    // Every part is over the server's limit: the Upload is kept, not cancelled.
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let state = kept_state(dir.path()).expect("the failed Upload's state is kept");
    let snapshot: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let upload_id = snapshot["upload"]["id"].as_str().unwrap().to_owned();
    assert!(
        !std::fs::read_to_string(&state).unwrap().contains("sk-cli"),
        "the key is never written"
    );
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].contains("it is kept for a resume"),
        "{}",
        errors[0]
    );
    assert!(
        !errors[0].contains("continue with"),
        "a 413 fails again: {}",
        errors[0]
    );
    assert!(
        errors[0].contains(&format!("drop it with: uploads cancel {upload_id}")),
        "{}",
        errors[0]
    );

    let cancelled = uploads_async(&["cancel", &upload_id], &env, dir.path()).await;
    assert_eq!(stdout_json(&cancelled)["status"], "cancelled");
    let output = uploads_async(&args, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("Upload {upload_id} is cancelled")),
        "{text}"
    );
    assert!(text.contains("starting a new Upload"), "{text}");
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(kept_state(dir.path()).unwrap()).unwrap())
            .unwrap();
    assert_ne!(again["upload"]["id"], upload_id.as_str());
    server.shutdown().await;
}
