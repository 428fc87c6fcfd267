//! `uploads serve` on a database URL whose TLS the database cannot honour: the process ends
//! at startup and says why, naming the server and the `sslmode`.

#[path = "../../uploads-server/tests/support/services.rs"]
mod services;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use services::{PlainPostgres, Services};

const BINARY: &str = env!("CARGO_BIN_EXE_uploads");
/// A hang guard for a start that should fail, never a measurement.
const GUARD: Duration = Duration::from_mins(2);

#[test]
fn serve_with_sslmode_require_on_a_database_without_tls_stops_saying_so() {
    let namespace = Services::get().fresh();
    let port = PlainPostgres::get().port;
    let mut process = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "sk-a=proj_a",
        ])
        .arg("--database-url")
        .arg(format!(
            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
        ))
        .arg("--object-store")
        .arg(&namespace.object_store)
        .envs(namespace.s3_env())
        .env_remove("UPLOADS_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn uploads serve");
    let deadline = Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = process.kill();
            panic!("uploads serve started on a database without TLS under sslmode=require");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    process
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot start the server on 127.0.0.1:0 with records in PostgreSQL, bytes in {}: PostgreSQL at 127.0.0.1:{port} does not accept TLS, and sslmode=require",
            namespace.object_store
        )),
        "{stderr}"
    );
}
