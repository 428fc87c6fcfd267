//! What the tests of the `uploads` binary share: running it as a user would (clean
//! environment, real files, a real server on 127.0.0.1 port 0) and reading what it said.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use uploads_core::limits::Limits;
use uploads_server::{RunningServer, Server};

/// The binary under test; `UPLOADS_TEST_BINARY` points the tests at another build (to check
/// that a test fails on an older one).
pub fn binary() -> PathBuf {
    std::env::var_os("UPLOADS_TEST_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_uploads")),
        PathBuf::from,
    )
}

/// A file of `len` bytes that differ from part to part, so a misordered part shows.
pub fn sample_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|index| (index * 7 % 251) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// The command with a clean environment (no OpenAI variables from the machine).
pub fn command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .env_remove("UPLOADS_API_KEYS")
        .env_remove("RUST_LOG")
        // Kept Uploads' state goes beside the test's files, never into the user's home.
        .env("XDG_STATE_HOME", cwd.join(".state"))
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs the binary to its end.
pub fn uploads(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    command(args, env, cwd).output().unwrap()
}

/// Runs the binary from a blocking thread (for tests that serve from their own runtime).
pub async fn uploads_async(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let cwd = cwd.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        uploads(&args, &env, &cwd)
    })
    .await
    .unwrap()
}

/// stdout must be exactly one JSON document.
pub fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {text:?}"))
}

/// stdout as JSON lines.
pub fn stdout_json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The error lines of stderr.
pub fn error_lines(output: &Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|line| line.starts_with("uploads: error: "))
        .map(str::to_owned)
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    let mut hasher = uploads_core::digest::Md5Hasher::new();
    hasher.update(data);
    hasher.finish_hex()
}

/// A server with one key, storing into `dir/served`.
pub async fn server(dir: &Path, key: &str) -> RunningServer {
    server_with(dir, key, Limits::default()).await
}

/// A server with one key and these limits.
pub async fn server_with(dir: &Path, key: &str, limits: Limits) -> RunningServer {
    Server::builder()
        .data_dir(dir.join("served"))
        .api_key(key, "project-a")
        .limits(limits)
        .start()
        .await
        .unwrap()
}

/// How many Uploads a directory store holds.
pub fn stored_uploads(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uploads")).map_or(0, Iterator::count)
}

/// Starts `uploads put ... --resume STATE` and sends it SIGINT once the state file records a
/// stored part; returns what the command said and the Upload's id.
pub fn interrupt_once_a_part_is_stored(
    args: &[&str],
    cwd: &Path,
    state: &Path,
) -> (Output, String) {
    let state = state.to_owned();
    interrupt_once(args, cwd, move || Some(state.clone()))
}

/// The per-user state directory of the commands run in `cwd` (see [`command`]).
pub fn state_dir(cwd: &Path) -> PathBuf {
    cwd.join(".state").join("uploads")
}

/// The one snapshot kept in the per-user state directory of `cwd`, if there is one.
pub fn kept_state(cwd: &Path) -> Option<PathBuf> {
    std::fs::read_dir(state_dir(cwd))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
}

/// Starts `uploads put ...` (keeping its state per user) and sends it SIGINT once its
/// snapshot records a stored part; returns what the command said and the Upload's id.
pub fn interrupt_once_kept(args: &[&str], cwd: &Path) -> (Output, String) {
    let cwd_owned = cwd.to_owned();
    interrupt_once(args, cwd, move || kept_state(&cwd_owned))
}

/// Spawns the command and waits until the snapshot `state` finds records a stored part.
pub fn spawn_until_a_part_is_stored(
    args: &[&str],
    cwd: &Path,
    state: impl Fn() -> Option<PathBuf>,
) -> (std::process::Child, String) {
    let mut child = command(args, &[], cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let upload_id = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the upload ended ({status}) before a stored part could be seen");
        }
        let stored = state()
            .and_then(|state| std::fs::read_to_string(state).ok())
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .filter(|snapshot| {
                snapshot["part_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|id| !id.is_null())
            });
        if let Some(snapshot) = stored {
            break snapshot["upload"]["id"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    (child, upload_id)
}

/// Sends `signal` to `child`.
pub fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

fn interrupt_once(
    args: &[&str],
    cwd: &Path,
    state: impl Fn() -> Option<PathBuf>,
) -> (Output, String) {
    let (child, upload_id) = spawn_until_a_part_is_stored(args, cwd, state);
    signal(&child, rustix::process::Signal::INT);
    (child.wait_with_output().unwrap(), upload_id)
}
