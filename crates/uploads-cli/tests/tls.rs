//! HTTPS from the command line: `uploads put` (either client) reaches a server signed by a
//! team's own CA only when `SSL_CERT_FILE` or `SSL_CERT_DIR` names that CA, and `uploads serve
//! --tls-cert --tls-key` prints its https base URL, reloads its pair on SIGHUP (keeping the old
//! one when the new one cannot be used) and refuses an unusable pair by the file's name.

mod support;

#[path = "../../uploads-server/tests/support/certs.rs"]
mod certs;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use certs::{Leaf, TestCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use uploads_server::Server;

use support::{command, error_lines, sample_file, stderr, stdout_json};

/// `uploads put` of `file` to `base_url` (`--blocking` when `blocking`) with `trust` as its
/// only TLS-related environment.
fn put(file: &Path, base_url: &str, blocking: bool, trust: &[(&str, &str)]) -> Output {
    let mut args = vec!["put", file.to_str().unwrap(), "--purpose", "assistants"];
    if blocking {
        args.push("--blocking");
    }
    let mut env = vec![("OPENAI_API_KEY", "sk-cli"), ("OPENAI_BASE_URL", base_url)];
    env.extend_from_slice(trust);
    let mut put = command(&args, &[], file.parent().unwrap());
    put.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    for (name, value) in env {
        put.env(name, value);
    }
    put.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reaches_a_server_of_a_private_ca_only_when_ssl_cert_file_or_dir_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("team CA");
    let pair = ca
        .issue(&["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    let ca_file = ca.write_cert(&ca_dir.join("team-ca.pem"));
    let server = Server::builder()
        .data_dir(dir.path().join("served"))
        .api_key("sk-cli", "project-a")
        .tls(&pair.cert, &pair.key)
        .start()
        .await
        .unwrap();
    let base_url = server.base_url();
    assert!(base_url.starts_with("https://127.0.0.1:"), "{base_url}");
    let (file, data) = sample_file(dir.path(), "notes.txt", 20_000);
    let outputs = tokio::task::spawn_blocking(move || {
        let mut outputs = Vec::new();
        for blocking in [false, true] {
            let untrusted = put(&file, &base_url, blocking, &[]);
            let by_file = put(
                &file,
                &base_url,
                blocking,
                &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
            );
            let by_dir = put(
                &file,
                &base_url,
                blocking,
                &[("SSL_CERT_DIR", ca_dir.to_str().unwrap())],
            );
            outputs.push((blocking, untrusted, by_file, by_dir));
        }
        outputs
    })
    .await
    .unwrap();
    for (blocking, untrusted, by_file, by_dir) in outputs {
        assert_eq!(untrusted.status.code(), Some(1), "{}", stderr(&untrusted));
        let errors = error_lines(&untrusted);
        assert_eq!(errors.len(), 1, "{}", stderr(&untrusted));
        assert!(
            errors[0].contains("(TLS handshake failed)")
                && errors[0].ends_with("invalid peer certificate: UnknownIssuer"),
            "blocking: {blocking}: {}",
            errors[0]
        );
        for trusted in [by_file, by_dir] {
            assert!(
                trusted.status.success(),
                "blocking: {blocking}: {}",
                stderr(&trusted)
            );
            let upload = stdout_json(&trusted);
            assert_eq!(upload["status"], "completed", "blocking: {blocking}");
            assert_eq!(upload["file"]["bytes"], data.len());
        }
    }
    server.shutdown().await;
}

/// A running `uploads serve` and the lines of its stderr, as they come.
struct Serving {
    child: Child,
    pid: rustix::process::Pid,
    base_url: String,
    log: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts `uploads serve` on port 0 with `extra` arguments; waits for its startup line.
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        let data = dir.join("data");
        args.push(data.to_str().unwrap());
        args.extend_from_slice(extra);
        let mut child = command(&args, &[], dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base_url = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("OPENAI_BASE_URL="))
            .unwrap_or_else(|| panic!("no base URL in {line:?}"))
            .trim_end_matches(';')
            .to_owned();
        let (lines, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            pid,
            base_url,
            log,
        }
    }

    /// Sends SIGHUP and waits for the server's log line about the reload that contains
    /// `needle`.
    fn hang_up_and_wait_for(&self, needle: &str) -> String {
        rustix::process::kill_process(self.pid, rustix::process::Signal::HUP).unwrap();
        loop {
            let line = self
                .log
                .recv()
                .unwrap_or_else(|_| panic!("serve ended without logging {needle:?}"));
            if line.contains("TLS certificate") && line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

/// The certificate the server at `base_url` presents to a client trusting `ca`.
fn served_certificate(base_url: &str, ca: &TestCa) -> CertificateDer<'static> {
    let address = base_url
        .strip_prefix("https://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated, reason = "the ring provider, as the clients'")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_mins(1)))
        .unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).unwrap();
    }
    connection.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

#[test]
fn serve_with_tls_prints_its_https_url_and_reloads_its_pair_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("team CA");
    let first = ca.issue(&["localhost", "127.0.0.1"]);
    let files = first.write(dir.path(), "server");
    let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
    let serving = Serving::start(
        dir.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ],
    );
    assert!(
        serving.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        serving.base_url
    );
    let (file, _) = sample_file(dir.path(), "a.txt", 1000);
    let trust = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];
    let uploaded = put(&file, &serving.base_url, false, &trust);
    assert!(uploaded.status.success(), "{}", stderr(&uploaded));
    assert_eq!(served_certificate(&serving.base_url, &ca), der(&first));

    // A renewal: new files, then SIGHUP.
    let renewed = ca.issue(&["localhost", "127.0.0.1"]);
    renewed.write(dir.path(), "server");
    serving.hang_up_and_wait_for("reloaded");
    assert_eq!(served_certificate(&serving.base_url, &ca), der(&renewed));

    // A key that does not fit: the server says so and goes on with the renewed pair.
    std::fs::write(&files.key, ca.issue(&["localhost"]).key_pem).unwrap();
    let warning = serving.hang_up_and_wait_for("not reloaded");
    assert!(
        warning.contains("WARN") && warning.contains(&files.key.display().to_string()),
        "{warning}"
    );
    assert_eq!(served_certificate(&serving.base_url, &ca), der(&renewed));
    let uploaded = put(&file, &serving.base_url, true, &trust);
    assert!(uploaded.status.success(), "{}", stderr(&uploaded));
}

#[test]
fn serve_refuses_a_pair_it_cannot_use_naming_the_file_and_needs_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("team CA");
    let files = ca.issue(&["localhost"]).write(dir.path(), "server");
    let missing = dir.path().join("missing.pem");
    let data = dir.path().join("data");
    let output = command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            missing.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(
        error_lines(&output),
        [format!(
            "uploads: error: cannot serve HTTPS: cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )]
    );

    for (flag, needed) in [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")] {
        let output = command(
            &["serve", "--listen", "127.0.0.1:0", flag, "some.pem"],
            &[],
            dir.path(),
        )
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(needed), "{}", stderr(&output));
    }
}
