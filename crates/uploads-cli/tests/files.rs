//! `uploads files` and `uploads cancel` through the built binary: listing and paging,
//! downloading into a directory without overwriting, and `--local` commands that only read.

mod support;

use support::{error_lines, sample_file, server, stderr, stdout_json, uploads, uploads_async};

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_passes_its_options_through_and_walks_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "sk-cli").await;
    let env = [
        ("OPENAI_API_KEY", "sk-cli"),
        ("OPENAI_BASE_URL", &server.base_url()),
    ];
    for (name, purpose) in [
        ("a.txt", "assistants"),
        ("b.txt", "assistants"),
        ("c.txt", "user_data"),
    ] {
        let (path, _) = sample_file(dir.path(), name, 100);
        let put = uploads_async(
            &["put", path.to_str().unwrap(), "--purpose", purpose],
            &env,
            dir.path(),
        )
        .await;
        assert!(put.status.success(), "{}", stderr(&put));
        // Distinct creation seconds keep the order by creation unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let list = |args: &'static [&'static str]| {
        let mut all = vec!["files", "list"];
        all.extend(args);
        let cwd = dir.path().to_owned();
        async move {
            let output = uploads_async(&all, &env, &cwd).await;
            assert!(output.status.success(), "{all:?}: {}", stderr(&output));
            stdout_json(&output)
        }
    };
    let newest_first = ids(&list(&[]).await);
    assert_eq!(newest_first.len(), 3);
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(ids(&list(&["--order", "asc"]).await), oldest_first);
    let page = list(&["--limit", "2"]).await;
    assert_eq!(ids(&page), newest_first[..2]);
    assert_eq!(page["has_more"], true);
    let after = newest_first[1].clone();
    let output = uploads_async(&["files", "list", "--after", &after], &env, dir.path()).await;
    assert_eq!(ids(&stdout_json(&output)), newest_first[2..]);
    assert_eq!(
        ids(&list(&["--purpose", "user_data"]).await),
        newest_first[..1]
    );
    let all = list(&["--all", "--limit", "1"]).await;
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["has_more"], false);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_writes_into_a_directory_under_the_files_name_and_never_overwrites_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "sk-cli").await;
    let env = [
        ("OPENAI_API_KEY", "sk-cli"),
        ("OPENAI_BASE_URL", &server.base_url()),
    ];
    let (path, data) = sample_file(dir.path(), "report.txt", 300_000);
    let put = uploads_async(
        &["put", path.to_str().unwrap(), "--purpose", "assistants"],
        &env,
        dir.path(),
    )
    .await;
    let file_id = stdout_json(&put)["file"]["id"].as_str().unwrap().to_owned();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let download = ["files", "download", &file_id, "-o", out.to_str().unwrap()];

    let output = uploads_async(&download, &env, dir.path()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read(out.join("report.txt")).unwrap(), data);
    assert!(
        stderr(&output).contains("downloaded "),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("293 KiB in "),
        "{}",
        stderr(&output)
    );
    let text = stderr(&output);
    let summary = text.lines().last().unwrap();
    assert_eq!(
        summary.matches("report.txt").count(),
        1,
        "the path is named once: {summary}"
    );
    assert!(summary.contains(&format!("File {file_id}")), "{summary}");

    std::fs::write(out.join("report.txt"), b"mine").unwrap();
    let output = uploads_async(&download, &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        error_lines(&output)[0].contains("exists: add --force"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(out.join("report.txt")).unwrap(), b"mine");

    let mut forced = download.to_vec();
    forced.push("--force");
    let output = uploads_async(&forced, &env, dir.path()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(out.join("report.txt")).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "no partial file left"
    );
    server.shutdown().await;
}

#[test]
fn read_only_local_commands_create_no_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("never");
    let local = ["--local", "--data-dir", data_dir.to_str().unwrap()];
    let run = |args: &[&str]| {
        let args: Vec<&str> = args.iter().chain(&local).copied().collect();
        uploads(&args, &[], dir.path())
    };
    let output = run(&["files", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout_json(&output)["data"].as_array().unwrap().len(), 0);
    for args in [
        &["files", "get", "file-1"][..],
        &["files", "download", "file-1", "-o", "x"][..],
        &["files", "delete", "file-1"][..],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            error_lines(&output)[0].contains("No such File object: file-1"),
            "{}",
            stderr(&output)
        );
    }
    let output = run(&["cancel", "upload_1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(error_lines(&output)[0].contains("No such Upload object: upload_1"));
    assert!(
        !data_dir.exists(),
        "a read-only command created {}",
        data_dir.display()
    );
}
