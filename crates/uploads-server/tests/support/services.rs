//! Private services for the scale-out tests: a PostgreSQL cluster (`initdb` + `pg_ctl` on a
//! temp dir, with TLS on: its certificate is signed by a private CA, [`Services::pg_ca`]) and
//! an S3 emulator (moto's server, from a git-ignored venv this module installs
//! from `tests/scaleout/requirements.txt`), both on 127.0.0.1 and free ports.
//!
//! One cluster and one emulator serve a whole test binary; each test takes its own database
//! and bucket ([`Services::fresh`]). Cleanup does not rely on the test process ending well:
//! every service runs under a watchdog shell in its own process group that reads the test
//! process's end of a pipe and, when that pipe closes (the process exited, panicked or was
//! killed), stops the service and removes its directory. Every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// By path, so that every crate including this file (by path too) finds it. The server's
// test binaries also have it as `support::certs`: one more copy of a small test module.
#[path = "certs.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "the includers of this file (xtask, uploads-cli) have no support/mod.rs"
)]
pub mod certs;

/// Where PostgreSQL 15's programs are.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The git-ignored venv holding moto's server.
const VENV_DIR: &str = ".venv-scaleout";
/// What the venv holds.
const REQUIREMENTS: &str = "tests/scaleout/requirements.txt";
/// How long a service may take to accept connections (a hang guard, not a measurement).
const START_TIMEOUT: Duration = Duration::from_mins(3);

/// A role the TLS cluster lets in only over TLS and by SCRAM-SHA-256 (with a password), as
/// a managed database does; a test creates it ([`Services::psql`]) with the password it uses.
pub const SCRAM_OVER_TLS_ROLE: &str = "scram_over_tls";

/// The credentials moto accepts (any) and the region the tests use.
pub const S3_KEY_ID: &str = "testing";
/// See [`S3_KEY_ID`].
pub const S3_SECRET: &str = "testing";
/// See [`S3_KEY_ID`].
pub const S3_REGION: &str = "us-east-1";

/// The PostgreSQL cluster and the S3 emulator of this test binary.
pub struct Services {
    /// The cluster's port on 127.0.0.1.
    pub pg_port: u16,
    /// The emulator's port on 127.0.0.1.
    pub s3_port: u16,
    /// The certificate (PEM) of the CA that signed the cluster's, which is issued for
    /// `localhost` and `127.0.0.1`: what a URL's `sslrootcert=` names. The cluster takes TLS
    /// and plain sessions alike, so URLs without `sslmode` (libpq's `prefer`) use TLS.
    pub pg_ca: PathBuf,
    _pg: Watchdog,
    _s3: Watchdog,
}

/// A second PostgreSQL cluster, without TLS, for the tests of what a client does then.
pub struct PlainPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _pg: Watchdog,
}

impl PlainPostgres {
    /// The cluster of this test binary, started on first use (most binaries never do).
    pub fn get() -> &'static Self {
        static PLAIN: OnceLock<PlainPostgres> = OnceLock::new();
        PLAIN.get_or_init(|| {
            let (port, _, pg) = start_postgres(false);
            Self { port, _pg: pg }
        })
    }
}

/// A database and a bucket of one test.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// `postgres://...` of the test's own database.
    pub database_url: String,
    /// `s3://bucket/prefix` of the test's own bucket.
    pub object_store: String,
    /// The emulator's endpoint, for `AWS_ENDPOINT_URL`.
    pub s3_endpoint: String,
    /// The database's name.
    pub database: String,
    /// The bucket's name.
    pub bucket: String,
}

impl Namespace {
    /// The test's database reached through another port of 127.0.0.1 (a proxy's).
    pub fn database_url_via(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{}", self.database)
    }

    /// The environment `object_store` reads to reach the emulator.
    pub fn s3_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.s3_endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.to_owned()),
            ("AWS_REGION", S3_REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Services {
    /// The services of this test binary, started on first use.
    pub fn get() -> &'static Self {
        static SERVICES: OnceLock<Services> = OnceLock::new();
        SERVICES.get_or_init(|| {
            let (pg_port, pg_ca, pg) = start_postgres(true);
            let (s3_port, s3) = start_moto();
            Self {
                pg_port,
                s3_port,
                pg_ca: pg_ca.expect("the cluster's CA"),
                _pg: pg,
                _s3: s3,
            }
        })
    }

    /// A new, empty database and bucket.
    pub fn fresh(&self) -> Namespace {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name}"));
        create_bucket(self.s3_port, &name.replace('_', "-"));
        Namespace {
            database_url: format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg_port),
            object_store: format!("s3://{}/objects", name.replace('_', "-")),
            s3_endpoint: format!("http://127.0.0.1:{}", self.s3_port),
            database: name.clone(),
            bucket: name.replace('_', "-"),
        }
    }

    /// Runs one SQL command as the superuser on the `postgres` database.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on("postgres", sql)
    }

    /// Runs one SQL command on the test's database.
    pub fn psql_on(&self, database: &str, sql: &str) -> String {
        let output = Command::new(Path::new(PG_BIN).join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database])
            .arg("-p")
            .arg(self.pg_port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Removes an empty bucket.
    pub fn delete_bucket(&self, bucket: &str) {
        http_exchange(self.s3_port, &format!("DELETE /{bucket} HTTP/1.1"), "");
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        create_bucket(self.s3_port, bucket);
    }

    /// The keys of the objects in a bucket (at most 1000), by a plain `ListObjectsV2`.
    /// The keys of the objects in a bucket.
    pub fn list_objects(&self, bucket: &str) -> Vec<String> {
        let body = http_exchange(
            self.s3_port,
            &format!("GET /{bucket}?list-type=2 HTTP/1.1"),
            "",
        );
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Services {
    /// The keys of the multipart uploads under way in a bucket, by a plain
    /// `ListMultipartUploads`.
    pub fn list_multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let body = http_exchange(self.s3_port, &format!("GET /{bucket}?uploads HTTP/1.1"), "");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

/// A service's watchdog: dropping it (or the process ending) closes the pipe it waits on.
struct Watchdog {
    child: Child,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Starts `script` under `sh` in its own process group (a Ctrl-C of the test run does not
/// kill it before it cleans up); it runs `cleanup` once its stdin closes.
fn watchdog(script: &str, cleanup: &str) -> Watchdog {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{script}\ncat >/dev/null\n{cleanup}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("spawn a watchdog shell");
    Watchdog { child }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str, logs: &[&Path]) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}; its logs:\n{}",
            logs.iter()
                .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// `initdb` + `pg_ctl start` on a fresh temp dir; as root, as the `postgres` user. With
/// `tls`, `ssl=on` with a certificate for `localhost` and `127.0.0.1` signed by a new CA,
/// whose certificate's file is returned.
fn start_postgres(tls: bool) -> (u16, Option<PathBuf>, Watchdog) {
    let dir = tempfile::Builder::new()
        .prefix("uploads-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data = dir.join("data");
    // Written by the `postgres` user: not the file the shell's redirections create.
    let log = dir.join("postgres.log");
    let setup_log = dir.join("setup.log");
    let port = free_port();
    // Written before the chown below: PostgreSQL refuses a key that is not its user's (0600).
    let (ca, ssl) = if tls {
        let ca = certs::TestCa::new("uploads tests' PostgreSQL CA");
        let server = ca.issue(&["localhost", "127.0.0.1"]).write(&dir, "server");
        // Two rules for `SCRAM_OVER_TLS_ROLE`, then initdb's (`-A trust`) for everyone else.
        let hba = dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "hostssl all {SCRAM_OVER_TLS_ROLE} 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all {SCRAM_OVER_TLS_ROLE} 127.0.0.1/32 reject\n\
                 local all all trust\n\
                 host all all 127.0.0.1/32 trust\n\
                 host all all ::1/128 trust\n"
            ),
        )
        .expect("write pg_hba.conf");
        let ssl = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={}",
            shell_quote(&server.cert),
            shell_quote(&server.key),
            shell_quote(&hba)
        );
        (Some(ca.write_cert(&dir.join("ca.crt"))), ssl)
    } else {
        (None, String::new())
    };
    let as_postgres = if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the cluster's dir to postgres");
        "runuser -u postgres -- "
    } else {
        ""
    };
    let initdb = format!(
        "{as_postgres}{PG_BIN}/initdb -D {} -A trust -U postgres --no-sync >{} 2>&1",
        shell_quote(&data),
        shell_quote(&setup_log)
    );
    let start = format!(
        "{as_postgres}{PG_BIN}/pg_ctl -D {data} -l {log} -o \"-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200{ssl}\" start >>{setup} 2>&1",
        data = shell_quote(&data),
        setup = shell_quote(&setup_log),
        log = shell_quote(&log),
        dir = shell_quote(&dir),
    );
    let stop = format!(
        "{as_postgres}{PG_BIN}/pg_ctl -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
        shell_quote(&data),
        shell_quote(&dir)
    );
    let guard = watchdog(&format!("{initdb} && {start}"), &stop);
    wait_for_port(port, "PostgreSQL", &[&setup_log, &log]);
    // The port opens before the cluster takes sessions ("the database system is starting up").
    let deadline = Instant::now() + START_TIMEOUT;
    while !Command::new(Path::new(PG_BIN).join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .status()
        .is_ok_and(|status| status.success())
    {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL on port {port} did not take sessions"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, ca, guard)
}

/// moto's S3 server from the venv (installing it first when missing or stale).
fn start_moto() -> (u16, Watchdog) {
    let python = ensure_venv();
    let moto = python.with_file_name("moto_server");
    let dir = tempfile::Builder::new()
        .prefix("uploads-moto-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let log = dir.join("moto.log");
    let port = free_port();
    let script = format!(
        "{} -H 127.0.0.1 -p {port} >{} 2>&1 &\nmoto=$!",
        shell_quote(&moto),
        shell_quote(&log)
    );
    let guard = watchdog(
        &script,
        &format!(
            "kill $moto 2>/dev/null; wait $moto; rm -rf {}",
            shell_quote(&dir)
        ),
    );
    wait_for_port(port, "moto_server", &[&log]);
    (port, guard)
}

/// The workspace's root: the nearest folder above the crate using this module (the server,
/// or xtask's bench) that holds the venv's requirements.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|folder| folder.join(REQUIREMENTS).is_file())
        .expect("the crate is inside the workspace, which holds tests/scaleout")
        .to_owned()
}

/// The python of the harness's venv (moto and the official `openai` package), installed
/// first when missing or stale.
pub fn venv_python() -> PathBuf {
    ensure_venv()
}

/// The venv's python, after installing the requirements when its stamp does not match them.
/// A lock keeps test binaries that start at once from installing twice.
fn ensure_venv() -> PathBuf {
    let root = workspace_root();
    let venv = root.join(VENV_DIR);
    let python = venv.join("bin").join("python");
    let requirements = std::fs::read_to_string(root.join(REQUIREMENTS)).expect("requirements");
    // The lock is taken on the requirements file, which every checkout has: a lock file of
    // our own would need a folder that exists for every test binary, and the target folder
    // is not one (it may be anywhere, CARGO_TARGET_TMPDIR is only set for integration tests,
    // and this file is also built into the server's unit tests).
    let lock = std::fs::File::open(root.join(REQUIREMENTS)).expect("open the requirements");
    lock.lock().expect("lock the venv");
    let stamp = venv.join(".requirements");
    if python.is_file() && std::fs::read_to_string(&stamp).ok() == Some(requirements.clone()) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new("python3")
        .current_dir(&root)
        .args(["-m", "venv", VENV_DIR])
        .status()
        .expect("run python3 -m venv");
    assert!(
        status.success(),
        "python3 -m venv failed (on Debian, `apt-get install python3-venv`)"
    );
    let status = Command::new(&python)
        .current_dir(&root)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--requirement", REQUIREMENTS])
        .env("PIP_NO_CACHE_DIR", "1")
        .status()
        .expect("run pip");
    assert!(status.success(), "installing moto into {VENV_DIR}/ failed");
    std::fs::write(&stamp, requirements).expect("write the venv stamp");
    python
}

/// One HTTP/1.1 request with `Connection: close`; the response body (moto needs no
/// signature).
fn http_exchange(port: u16, request_line: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
    stream
        .set_read_timeout(Some(Duration::from_mins(1)))
        .expect("timeout");
    write!(
        stream,
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        ["200", "204"].iter().any(|ok| response
            .split_whitespace()
            .nth(1)
            .is_some_and(|status| status == *ok)),
        "{request_line}: {response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn create_bucket(port: u16, bucket: &str) {
    http_exchange(port, &format!("PUT /{bucket} HTTP/1.1"), "");
}
