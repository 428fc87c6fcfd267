//! The `uploads` binary as a user runs it: real files, a real server, exit codes and the
//! exact split between stdout (the answer, as JSON) and stderr (everything else).

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{sample_file, server, stderr, stdout_json, uploads};

/// The bytes a File holds on disk, read through its manifest as the server does.
fn stored_bytes(data_dir: &Path, upload: &Value) -> Vec<u8> {
    let upload_id = upload["id"].as_str().unwrap();
    let file_id = upload["file"]["id"].as_str().unwrap();
    let record: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("files").join(format!("{file_id}.json"))).unwrap(),
    )
    .unwrap();
    let parts = data_dir.join("uploads").join(upload_id).join("parts");
    record["part_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|part| std::fs::read(parts.join(part.as_str().unwrap())).unwrap())
        .collect()
}

#[test]
fn put_local_stores_a_multi_part_file_byte_exact_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = sample_file(dir.path(), "notes.txt", 100_000);
    let data_dir = dir.path().join("store");
    let output = uploads(
        &[
            "put",
            path.to_str().unwrap(),
            "--purpose",
            "assistants",
            "--part-size",
            "16KiB",
            "--local",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let upload = stdout_json(&output);
    assert_eq!(upload["status"], "completed");
    assert_eq!(upload["bytes"], 100_000);
    assert_eq!(upload["file"]["filename"], "notes.txt");
    assert_eq!(stored_bytes(&data_dir, &upload), data);
    let file_id = upload["file"]["id"].as_str().unwrap();
    let summary = format!("File {file_id} (md5 verified)");
    assert!(stderr(&output).contains(&summary), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_against_a_server_with_both_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "sk-cli").await;
    let (path, data) = sample_file(dir.path(), "train.jsonl", 50_000);
    for blocking in [false, true] {
        let mut args = vec![
            "put",
            path.to_str().unwrap(),
            "--purpose",
            "fine-tune",
            "--part-size",
            "8KiB",
            "--concurrency",
            "3",
        ];
        if blocking {
            args.push("--blocking");
        }
        let (args, base_url, cwd): (Vec<String>, String, PathBuf) = (
            args.into_iter().map(str::to_owned).collect(),
            server.base_url(),
            dir.path().to_owned(),
        );
        let output = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            uploads(
                &args,
                &[("OPENAI_API_KEY", "sk-cli"), ("OPENAI_BASE_URL", &base_url)],
                &cwd,
            )
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "blocking={blocking}: {}",
            stderr(&output)
        );
        let upload = stdout_json(&output);
        assert_eq!(upload["status"], "completed", "blocking={blocking}");
        assert_eq!(upload["file"]["bytes"], data.len());
        assert_eq!(
            stored_bytes(&dir.path().join("served"), &upload),
            data,
            "blocking={blocking}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_exits_1_with_the_api_message_and_files_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "sk-right").await;
    let (path, _) = sample_file(dir.path(), "a.txt", 10);
    let base_url = server.base_url();
    let cwd = dir.path().to_owned();
    let path = path.to_str().unwrap().to_owned();
    let (wrong, listed) = tokio::task::spawn_blocking(move || {
        let wrong = uploads(
            &[
                "put",
                &path,
                "--purpose",
                "assistants",
                "--base-url",
                &base_url,
            ],
            &[("OPENAI_API_KEY", "sk-wrong-key-0000")],
            &cwd,
        );
        let env = [
            ("OPENAI_API_KEY", "sk-right"),
            ("OPENAI_BASE_URL", base_url.as_str()),
        ];
        let put = uploads(&["put", &path, "--purpose", "assistants"], &env, &cwd);
        let file_id = stdout_json(&put)["file"]["id"].as_str().unwrap().to_owned();
        let listed = uploads(&["files", "list"], &env, &cwd);
        let got = uploads(&["files", "get", &file_id], &env, &cwd);
        assert_eq!(stdout_json(&got)["id"], file_id.as_str());
        let download = uploads(&["files", "download", &file_id], &env, &cwd);
        assert_eq!(download.stdout, std::fs::read(&path).unwrap());
        let deleted = uploads(&["files", "delete", &file_id], &env, &cwd);
        assert_eq!(stdout_json(&deleted)["deleted"], true);
        let gone = uploads(&["files", "get", &file_id], &env, &cwd);
        assert_eq!(gone.status.code(), Some(1));
        assert!(stderr(&gone).contains(&format!("No such File object: {file_id}")));
        (wrong, listed)
    })
    .await
    .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(wrong.stdout.is_empty());
    let message = stderr(&wrong);
    assert!(message.contains("Incorrect API key provided"), "{message}");
    assert!(message.contains("request id"), "{message}");
    assert_eq!(
        message
            .lines()
            .filter(|line| line.starts_with("uploads: error: "))
            .count(),
        1,
        "one readable line: {message}"
    );
    assert_eq!(stdout_json(&listed)["data"].as_array().unwrap().len(), 1);
    server.shutdown().await;
}

/// Arguments, environment, and what stderr must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn usage_errors_exit_2_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_file(dir.path(), "a.txt", 10);
    let path = path.to_str().unwrap();
    // 10,001 parts of 2 bytes: one more than an Upload may have.
    let (many_parts, _) = sample_file(dir.path(), "b.txt", 20_001);
    let many_parts = many_parts.to_str().unwrap();
    let cases: [Case; 5] = [
        (
            &[
                "put",
                many_parts,
                "--purpose",
                "assistants",
                "--part-size",
                "2",
                "--local",
            ],
            &[],
            "the file would need 10001 parts, over the limit of 10000: use parts of at least 3 bytes",
        ),
        (
            &[
                "put",
                path,
                "--purpose",
                "assistants",
                "--part-size",
                "12 parsecs",
                "--local",
            ],
            &[],
            "unknown size unit",
        ),
        (
            &["put", path, "--purpose", "assistants"],
            &[],
            "OPENAI_API_KEY is not set",
        ),
        (
            &["put", path, "--purpose", "vision", "--local"],
            &[],
            "Invalid MIME type 'text/plain' for purpose 'vision'",
        ),
        (
            &["put", "missing.bin", "--purpose", "assistants"],
            &[("OPENAI_API_KEY", "sk")],
            "cannot read missing.bin",
        ),
    ];
    for (args, env, expected) in cases {
        let output = uploads(args, env, dir.path());
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            stderr(&output).starts_with("uploads: error: "),
            "one prefix for every error: {}",
            stderr(&output)
        );
    }
}
