//! Repository checks written as ordinary tests (rust-analyzer's `tidy` style): run by
//! `cargo test -p xtask`, so by `cargo xtask ci`.

use std::path::Path;
use std::process::Command;

/// A line carrying this marker holds a `..` string that is test data (a hostile id, a
/// traversal attempt), never a path the repository reads.
const ALLOW_MARKER: &str = concat!("tidy:", "not-a-path");

/// The folder beside the repository that only a developer's checkout has.
const SHARED_FOLDER: &str = concat!("../", "shared");

/// Every file git tracks, relative to the workspace root.
fn tracked_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files runs");
    assert!(output.status.success(), "git ls-files failed");
    String::from_utf8(output.stdout)
        .expect("tracked paths are UTF-8")
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The places in `text` (a file `depth` folders below the root) whose run of `../` climbs
/// above the repository root, or that name the folder beside it; `(line, text)` pairs.
fn paths_outside(text: &str, depth: usize) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.contains(ALLOW_MARKER) {
            continue;
        }
        let climbs_too_far = line.match_indices("../").any(|(start, _)| {
            // Count the whole run once, from its first `../`.
            let starts_run = !line[..start].ends_with("../");
            let run = line.as_bytes()[start..]
                .chunks(3)
                .take_while(|chunk| *chunk == b"../")
                .count();
            starts_run && run > depth
        });
        if climbs_too_far || line.contains(SHARED_FOLDER) {
            found.push((index + 1, line.trim().to_owned()));
        }
    }
    found
}

#[test]
fn nothing_reads_a_path_outside_the_repository() {
    let root = crate::workspace_root();
    let mut offenders = Vec::new();
    for path in tracked_files(&root) {
        // The vendored document is data, not something that reads paths; this file's tests
        // hold the strings the check must catch.
        if path.starts_with("spec/") || path == "xtask/src/tidy.rs" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&path)) else {
            continue; // not text
        };
        let depth = path.matches('/').count();
        for (line, content) in paths_outside(&text, depth) {
            offenders.push(format!("{path}:{line}: {content}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "these lines refer to a path outside the repository (mark test data with \
         `{ALLOW_MARKER}`):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_must() {
    let shared = format!("include_str!(\"{SHARED_FOLDER}/spec/x.yaml\")");
    assert_eq!(
        paths_outside(&shared, 5).len(),
        1,
        "the sibling folder, at any depth"
    );
    assert_eq!(
        paths_outside("\"../../../x\"", 2).len(),
        1,
        "three up from two down"
    );
    assert!(
        paths_outside("\"../../spec/x\"", 2).is_empty(),
        "two up from two down"
    );
    assert!(
        paths_outside("../x", 0).len() == 1,
        "anything up from the root"
    );
    let marked = format!("\"../../../../etc\" // {ALLOW_MARKER}");
    assert!(paths_outside(&marked, 0).is_empty());
}

#[test]
fn no_two_targets_of_the_workspace_share_an_output_file() {
    // Binaries land in target/debug/, examples in target/debug/examples/: two of one kind and
    // one name overwrite each other, and whichever was built last is what a script runs.
    let output = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut seen = std::collections::BTreeMap::new();
    let mut clashes = Vec::new();
    for package in metadata["packages"].as_array().expect("a package list") {
        for target in package["targets"].as_array().expect("a target list") {
            let kinds = target["kind"].as_array().expect("a kind list");
            for kind in kinds.iter().filter_map(serde_json::Value::as_str) {
                if kind != "bin" && kind != "example" {
                    continue;
                }
                let name = target["name"].as_str().expect("a target name");
                let owner = package["name"].as_str().expect("a package name");
                if let Some(first) = seen.insert((kind, name), owner) {
                    clashes.push(format!("{kind} `{name}` in {first} and {owner}"));
                }
            }
        }
    }
    assert!(
        clashes.is_empty(),
        "these targets overwrite each other in target/ (give one a `[[example]]` or \
         `[[bin]]` name of its own):\n{}",
        clashes.join("\n")
    );
}
