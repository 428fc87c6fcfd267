//! Repository automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Tasks:
//! * `ci`: everything CI checks, in the order that fails fastest: formatting, clippy with
//!   warnings denied, the client crates built on freshly resolved dependencies (`fresh-deps`),
//!   the whole test suite, the simulation's seeds, the server's suites again on PostgreSQL
//!   and object storage, the conformance suite, and the docs with warnings denied.
//! * `conformance`: the server against OpenAI's official Python and Node SDKs, its answers
//!   against OpenAI's OpenAPI document, and our clients against a Prism mock of that document
//!   (see [`conformance`]).
//! * `bench`: throughput, CPU and memory of the clients, the official SDK and the machine's
//!   limits in one run, on loopback and through an emulated WAN link, written to
//!   `docs/BENCHMARKS.md` with a chart; opt-in, `--profile shared`: the server's request
//!   latencies on PostgreSQL and object storage (see [`mod@bench`]).
//! * `fresh-deps`: the client crates built as a dependency of a new project whose lockfile is
//!   resolved afresh, failing on any warning from our crates (see [`fresh_deps`]).
//! * `sim`: the seeded simulation of clients and servers under faults: many seeds, or one
//!   replayed with its trace (see [`sim`]).
//! * `mutants`: cargo-mutants on the core's decision code, the caught, missed, timed-out and
//!   unviable mutants per file written to `docs/MUTANTS.md`; about an hour, so not in `ci`
//!   (see [`mutants`]).

mod bench;
mod conformance;
mod fresh_deps;
mod mutants;
mod sim;
#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask ci | conformance | fresh-deps
       cargo xtask sim [--seeds 1500 [--from 0] | --seed S [--without kind,...]] [--rules before-issue-21] [--release]
       cargo xtask bench [--profile loopback|pinned|wan-slow|wan-fast|shared]... [--size 2GiB] [--quick]
                         [--runs 3] [--part-size 64MiB] [--out docs/BENCHMARKS.md] [--no-peer] [--smoke]
       cargo xtask mutants [-f FILE]... [--no-run]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("conformance") => conformance::run(),
        Some("fresh-deps") => fresh_deps::run(),
        Some("sim") => sim::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("mutants") => mutants::run(&args[1..]),
        Some("help" | "--help" | "-h") => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one directory below it.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_owned(), std::path::Path::to_owned)
}

/// Cargo's target folder for this workspace, as cargo itself reports it (`cargo metadata`),
/// so `CARGO_TARGET_DIR` and `build.target-dir` are honoured as in any cargo command.
pub(crate) fn target_dir() -> Result<PathBuf, String> {
    let output = cargo()
        .current_dir(workspace_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .map_err(|error| format!("could not run cargo metadata: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo metadata answered no JSON: {error}"))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata names no target_directory".to_owned())
}

/// `cargo`, without the variables cargo sets for the package it runs (this xtask, or its
/// test): build scripts that watch them (ring watches `CARGO_MANIFEST_DIR`) would otherwise
/// see a change and rebuild their crate and everything above it.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new("cargo");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            command.env_remove(&*name);
        }
    }
    command
}

/// The server's test suites that run on both backends.
const SHARED_BACKEND_SUITES: [&str; 14] = [
    "authorization",
    "behaviour_table",
    "bodies",
    "direct_files",
    "disconnects",
    "downloads",
    "lifecycle",
    "metrics",
    "owner_isolation",
    "part_limits",
    "quotas",
    "races",
    "sdk_limits",
    "wire_format",
];

/// Tests of those suites about the directory store's files alone (bytes written per Part).
const DIRECTORY_STORE_ONLY: [&str; 1] = ["adding_a_part_writes_the_same_few_bytes"];

/// Runs every check CI runs; stops at the first that fails.
fn ci() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--check"], &[])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // Clippy saw our lockfile; a user's first build resolves newer dependencies (about 30 s
    // the first time on 2 cores, a second or two after).
    fresh_deps::run()?;
    run("cargo", &["test", "--workspace"], &[])?;
    // The simulation's seeds, on the debug build the tests just made.
    sim::run(&["--seeds".to_owned(), sim::CI_SEEDS.to_owned()])?;
    // The server's suites again, on PostgreSQL and object storage (the harness's private
    // PostgreSQL and moto). The others (crash_recovery, commit_point, health, slow_clients,
    // sweep, descriptors) are about the directory store's files and the process; the shared
    // backend's own are scaleout_health, pg's unit tests and crates/uploads-cli/tests/scaleout.rs.
    let mut shared = vec!["test", "-p", "uploads-server"];
    for suite in SHARED_BACKEND_SUITES {
        shared.extend(["--test", suite]);
    }
    shared.push("--");
    for test in DIRECTORY_STORE_ONLY {
        shared.extend(["--skip", test]);
    }
    run("cargo", &shared, &[("UPLOADS_TEST_BACKEND", "shared")])?;
    conformance::run()?;
    run(
        "cargo",
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    Ok(())
}

/// Runs one command with inherited stdio; a non-zero exit is an error naming the command.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    run_command(Command::new(program).args(args).envs(env.iter().copied()))
}

/// Runs a prepared command with inherited stdio; a non-zero exit is an error naming it.
fn run_command(command: &mut Command) -> Result<(), String> {
    let shown = shown(command);
    eprintln!("xtask: running `{shown}`");
    let status = command
        .status()
        .map_err(|error| format!("could not start `{shown}`: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed with {status}"))
    }
}

/// A command as a person would type it, for messages.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
