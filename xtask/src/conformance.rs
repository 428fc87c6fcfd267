//! `cargo xtask conformance`: checks the workspace against code nobody here wrote.
//!
//! 1. Installs, or reuses, what the suite needs from the package registries into git-ignored
//!    folders: a Python venv (`.venv-conformance/`) with the pinned official `openai` SDK,
//!    `jsonschema` and `PyYAML` (`tests/conformance/requirements.txt`), and an npm folder
//!    (`tests/conformance/node/node_modules`) with the official `openai` Node SDK and
//!    Stainless's Prism (`package-lock.json`). Each folder carries a stamp: a copy of the file
//!    it was installed from; a different file means a fresh install.
//! 2. Builds the server and, for each Rust client crate that exists, its conformance example.
//! 3. Makes a private CA and a certificate it signs for `127.0.0.1` (rcgen, as the server's TLS
//!    tests do), for the run of the SDKs over HTTPS.
//! 4. Runs `tests/conformance/run.py`, which prints one `PASS`/`FAIL`/`SKIP` line per case and
//!    `N passed, N failed`; any FAIL fails the task.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_command, target_dir, workspace_root};

#[path = "../../crates/uploads-server/tests/support/certs.rs"]
mod certs;

/// The server under test, as users start it: `uploads serve` with `--listen`, `--data-dir`
/// and `--api-key`.
const SERVER: ServerBinary = ServerBinary {
    package: "uploads-cli",
    binary: "uploads",
    subcommand: "serve",
};

/// The Rust clients run against the Prism mock. Each is the crate's example `conformance-<crate>`
/// (`examples/conformance.rs`; distinct names, or the two binaries overwrite each other in
/// `target/`),
/// given the mock's base URL as its only argument; what it must do is in
/// `tests/conformance/prism.py`.
const PRISM_CLIENTS: &[ClientExample] = &[
    ClientExample {
        package: "uploads-hyper",
        crate_dir: "crates/uploads-hyper",
        example: "conformance-hyper",
    },
    ClientExample {
        package: "uploads-ureq",
        crate_dir: "crates/uploads-ureq",
        example: "conformance-ureq",
    },
];

/// The Python environment, relative to the workspace root (git-ignored).
const VENV_DIR: &str = ".venv-conformance";
/// The pinned Python requirements.
const REQUIREMENTS: &str = "tests/conformance/requirements.txt";
/// The npm folder: `package.json` and `package-lock.json` committed, `node_modules` git-ignored.
const NODE_DIR: &str = "tests/conformance/node";
/// The suite's entry point.
const RUNNER: &str = "tests/conformance/run.py";
/// OpenAI's OpenAPI document: the repository's own copy.
const SPEC: &str = "spec/openai-uploads-files.openapi.yaml";
/// Where the run keeps its scratch files, server data and logs (inside the target folder).
const WORKDIR: &str = "conformance";
/// Where the HTTPS run's CA and server certificate are written (inside the target folder, beside
/// the run's work folder, which the runner empties).
const TLS_DIR: &str = "conformance-tls";
/// The copy of the install's source file kept in an installed folder.
const STAMP: &str = ".conformance-stamp";

/// A binary of the workspace that serves the API.
struct ServerBinary {
    package: &'static str,
    binary: &'static str,
    subcommand: &'static str,
}

/// A client crate's example that drives every low-level call and `upload_file`.
struct ClientExample {
    package: &'static str,
    crate_dir: &'static str,
    example: &'static str,
}

/// Runs the conformance suite from the workspace root.
pub fn run() -> Result<(), String> {
    let root = workspace_root();
    let spec = root.join(SPEC);
    if !spec.is_file() {
        return Err(format!(
            "OpenAI's OpenAPI document is missing at {}",
            spec.display()
        ));
    }
    let python = ensure_venv(&root)?;
    ensure_node_modules(&root)?;

    let target = target_dir()?;
    run_command(Command::new("cargo").current_dir(&root).args([
        "build",
        "--package",
        SERVER.package,
        "--bin",
        SERVER.binary,
    ]))?;
    let server = target.join("debug").join(SERVER.binary);

    let mut runner = Command::new(&python);
    runner
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(RUNNER)
        .arg("--server")
        .arg(&server)
        .arg("--server-subcommand")
        .arg(SERVER.subcommand)
        .arg("--spec")
        .arg(&spec)
        .arg("--node-dir")
        .arg(root.join(NODE_DIR))
        .arg("--workdir")
        .arg(target.join(WORKDIR));
    let tls = test_certificates(&target.join(TLS_DIR))?;
    runner
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .arg("--tls-ca")
        .arg(&tls.ca);
    for client in PRISM_CLIENTS {
        if root.join(client.crate_dir).is_dir() {
            // Built here, so the suite's time limit for a client never includes a compile.
            run_command(Command::new("cargo").current_dir(&root).args([
                "build",
                "--package",
                client.package,
                "--example",
                client.example,
            ]))?;
            runner.arg("--prism-client").arg(format!(
                "{}=cargo run --quiet --package {} --example {} --",
                client.package, client.package, client.example
            ));
        } else {
            runner.arg("--prism-client-missing").arg(client.package);
        }
    }
    run_command(&mut runner).map_err(|failure| format!("conformance failed: {failure}"))
}

/// The HTTPS run's files: a fresh CA's certificate and a server certificate it signed.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a fresh CA and a certificate for `localhost` and `127.0.0.1` in `dir`.
fn test_certificates(dir: &Path) -> Result<TlsFiles, String> {
    remove_dir(dir)?;
    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let ca = certs::TestCa::new("uploads conformance CA");
    let server = ca.issue(&["localhost", "127.0.0.1"]).write(dir, "server");
    Ok(TlsFiles {
        ca: ca.write_cert(&dir.join("ca.pem")),
        cert: server.cert,
        key: server.key,
    })
}

/// Creates the venv and installs the pinned requirements, unless the stamp says the venv
/// already holds exactly them; returns the venv's Python.
pub(crate) fn ensure_venv(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join(VENV_DIR);
    let python = venv.join("bin").join("python");
    let requirements = read(&root.join(REQUIREMENTS))?;
    if python.is_file() && stamp_matches(&venv, &requirements) {
        eprintln!("xtask: reusing {VENV_DIR}/ (requirements unchanged)");
        return Ok(python);
    }
    remove_dir(&venv)?;
    run_command(
        Command::new("python3")
            .current_dir(root)
            .args(["-m", "venv", VENV_DIR]),
    )
    .map_err(|failure| format!("{failure} (on Debian, `apt-get install python3-venv`)"))?;
    run_command(
        Command::new(&python)
            .current_dir(root)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--requirement",
                REQUIREMENTS,
            ])
            .env("PIP_NO_CACHE_DIR", "1"),
    )?;
    write_stamp(&venv, &requirements)?;
    Ok(python)
}

/// Installs the npm folder from its lock file (`npm ci`), unless the stamp says it holds
/// exactly that lock file already.
fn ensure_node_modules(root: &Path) -> Result<(), String> {
    let node_dir = root.join(NODE_DIR);
    let modules = node_dir.join("node_modules");
    let lock = read(&node_dir.join("package-lock.json"))?;
    if stamp_matches(&modules, &lock) {
        eprintln!("xtask: reusing {NODE_DIR}/node_modules/ (package-lock.json unchanged)");
        return Ok(());
    }
    run_command(Command::new("npm").current_dir(&node_dir).args([
        "ci",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]))?;
    write_stamp(&modules, &lock)
}

fn stamp_matches(dir: &Path, source: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|stamp| stamp == source)
}

fn write_stamp(dir: &Path, source: &str) -> Result<(), String> {
    let path = dir.join(STAMP);
    fs::write(&path, source).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot remove {}: {error}", dir.display())),
    }
}
