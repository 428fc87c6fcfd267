//! What `uploads` says about itself and how `uploads serve` starts: help with examples,
//! environment and exit codes; completions; limits, addresses and the base URL at startup.

mod support;

use std::io::BufRead;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{command, error_lines, stderr, stdout_json, uploads};

/// Waits for a command that must end by itself; a hang guard kills it after a minute.
fn ended(child: Child) -> Output {
    let id = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_mins(1)).is_err() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(id).unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    output
}

/// Starts `uploads serve --listen 127.0.0.1:0 EXTRA...` and waits (a minute at most) for
/// its startup line: the child, its pid, and the line.
fn started_serve(
    extra: &[&str],
    stderr: Stdio,
    dir: &std::path::Path,
) -> (Child, rustix::process::Pid, String) {
    let args: Vec<&str> = ["serve", "--listen", "127.0.0.1:0"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let mut child = command(&args, &[], dir)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = lines.send(line);
    });
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let Ok(line) = received.recv_timeout(Duration::from_mins(1)) else {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        panic!("serve printed no line");
    };
    (child, pid, line)
}

/// The `OPENAI_BASE_URL` a startup line tells clients to use.
fn base_url_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("OPENAI_BASE_URL="))
        .unwrap_or_else(|| panic!("no base URL in {line:?}"))
        .trim_end_matches(';')
        .to_owned()
}

fn help(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = uploads(
        args,
        &[("UPLOADS_API_KEYS", "sk-secret-1234,sk-other-5678")],
        dir.path(),
    );
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_help_has_examples_the_environment_and_the_exit_codes() {
    for args in [
        &["--help"][..],
        &["put", "--help"][..],
        &["files", "--help"][..],
        &["files", "list", "--help"][..],
        &["files", "get", "--help"][..],
        &["files", "download", "--help"][..],
        &["files", "delete", "--help"][..],
        &["cancel", "--help"][..],
    ] {
        let text = help(args);
        for expected in [
            "Examples:",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "Exit codes:",
            "130",
        ] {
            assert!(
                text.contains(expected),
                "{args:?} lacks {expected}:\n{text}"
            );
        }
    }
    let serve = help(&["serve", "--help"]);
    for expected in [
        "Examples:",
        "--listen",
        "--data-dir",
        "UPLOADS_API_KEYS",
        "Exit codes:",
    ] {
        assert!(
            serve.contains(expected),
            "serve --help lacks {expected}:\n{serve}"
        );
    }
    for unexpected in ["--base-url", "--local", "sk-secret-1234", "sk-other-5678"] {
        assert!(
            !serve.contains(unexpected),
            "serve --help shows {unexpected}:\n{serve}"
        );
    }
    assert!(help(&["completions", "--help"]).contains("Examples:"));
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let text = help(&["completions", shell]);
        for expected in ["uploads", "put", "files", "purpose"] {
            assert!(text.contains(expected), "{shell} lacks {expected}");
        }
    }
}

#[test]
fn completions_offer_the_purposes_and_put_still_takes_any() {
    let purposes = [
        "assistants",
        "batch",
        "fine-tune",
        "vision",
        "user_data",
        "evals",
    ];
    let bash = help(&["completions", "bash"]);
    // bash completes the value after --purpose from a word list, not from file names.
    let after_purpose = bash
        .split("uploads__subcmd__put)")
        .last()
        .unwrap()
        .split("--purpose)")
        .nth(1)
        .and_then(|rest| rest.split(";;").next())
        .unwrap_or_else(|| panic!("no --purpose case in:\n{bash}"));
    for purpose in purposes {
        assert!(
            after_purpose.contains(purpose),
            "bash lacks {purpose}: {after_purpose}"
        );
    }
    assert!(!after_purpose.contains("compgen -f"), "{after_purpose}");
    assert!(!after_purpose.contains("batch_output"), "{after_purpose}");
    let zsh = help(&["completions", "zsh"]);
    let line = zsh
        .lines()
        .find(|line| line.contains("--purpose="))
        .unwrap_or_else(|| panic!("no --purpose in:\n{zsh}"));
    // The values, after the description (which names the purposes too).
    let line = line.rsplit("]:").next().unwrap();
    for purpose in purposes {
        assert!(line.contains(purpose), "zsh lacks {purpose}: {line}");
    }
    // A purpose this build does not know is the service's to judge, not clap's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "x").unwrap();
    let output = uploads(
        &["put", "a.txt", "--purpose", "new-purpose", "--local"],
        &[],
        dir.path(),
    );
    assert!(
        stderr(&output).contains("unknown purpose \"new-purpose\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn serve_refuses_impossible_limits_and_a_busy_address_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, expected) in [
        (
            "--max-part-bytes",
            "--max-part-bytes 0 would refuse every part",
        ),
        (
            "--max-upload-bytes",
            "--max-upload-bytes 0 would refuse every file",
        ),
    ] {
        let child = command(
            &["serve", "--listen", "127.0.0.1:0", flag, "0"],
            &[],
            dir.path(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let output = ended(child);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            error_lines(&output)[0].contains(expected),
            "{}",
            stderr(&output)
        );
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let child = command(&["serve", "--listen", &address], &[], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = ended(child);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = &error_lines(&output)[0];
    assert!(
        message.contains(&format!("cannot listen on {address}")),
        "{message}"
    );
    assert!(message.contains("already in use"), "{message}");
}

#[test]
fn serve_prints_the_base_url_for_clients_and_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, pid, line) =
        started_serve(&["--data-dir", "served-here"], Stdio::null(), dir.path());
    assert!(line.contains("data in served-here"), "{line}");
    let base_url = base_url_of(&line);
    assert!(
        base_url.starts_with("http://127.0.0.1:") && base_url.ends_with("/v1"),
        "{line}"
    );
    let listed = uploads(
        &["files", "list", "--base-url", &base_url],
        &[("OPENAI_API_KEY", "any")],
        dir.path(),
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(stdout_json(&listed)["data"].as_array().unwrap().len(), 0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `serve --log-format json`: every stderr line is one JSON object; a request's carries its
/// route, owner, status, bytes, duration and request id (and, refused, the error's type);
/// SIGTERM ends with a shutdown line.
#[test]
fn serve_logs_json_lines_per_request_and_a_shutdown_line() {
    let dir = tempfile::tempdir().unwrap();
    let (child, pid, line) = started_serve(
        &["--log-format", "json", "--api-key", "sk-logs=team-logs"],
        Stdio::piped(),
        dir.path(),
    );
    let base_url = base_url_of(&line);
    for key in ["sk-logs", "sk-wrong"] {
        uploads(
            &["files", "list", "--base-url", &base_url],
            &[("OPENAI_API_KEY", key)],
            dir.path(),
        );
    }
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = ended(child);
    assert!(output.status.success(), "{}", stderr(&output));
    let logged: Vec<serde_json::Value> = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    let requests: Vec<&serde_json::Value> = logged
        .iter()
        .filter(|line| line["message"] == "request")
        .collect();
    let [listed, refused] = requests.as_slice() else {
        panic!("two request lines expected: {logged:#?}");
    };
    assert_eq!(listed["level"], "INFO");
    assert_eq!(listed["route"], "list_files");
    assert_eq!(listed["owner"], "team-logs");
    assert_eq!(listed["status"], 200);
    assert_eq!(listed["method"], "GET");
    assert_eq!(listed["path"], "/v1/files");
    assert!(listed["bytes_sent"].as_u64().unwrap() > 0, "{listed}");
    assert!(listed["elapsed_ms"].is_u64(), "{listed}");
    assert!(
        listed["request_id"].as_str().unwrap().starts_with("req_"),
        "{listed}"
    );
    assert!(listed.get("error_type").is_none(), "{listed}");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["route"], "list_files");
    assert!(
        refused.get("owner").is_none(),
        "no key was accepted: {refused}"
    );
    assert_eq!(refused["error_type"], "invalid_request_error");
    let shutdown = logged
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("shut down"))
        })
        .unwrap_or_else(|| panic!("no shutdown line: {logged:#?}"));
    assert!(shutdown["connections"].is_u64(), "{shutdown}");
}

#[test]
fn serve_says_where_its_metrics_are_and_serves_them_there() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (child, pid, line) = started_serve(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--api-key",
            "sk-m=team-m",
        ],
        Stdio::null(),
        dir.path(),
    );
    let metrics = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
        .to_owned();
    let listed = uploads(
        &["files", "list", "--base-url", &base_url_of(&line)],
        &[("OPENAI_API_KEY", "sk-m")],
        dir.path(),
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    let mut scrape = std::net::TcpStream::connect(&metrics).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    scrape.read_to_string(&mut answer).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(ended(child).status.success());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.lines().any(
            |line| line == "uploads_http_requests_total{route=\"list_files\",status=\"200\"} 1"
        ),
        "{answer}"
    );
}
