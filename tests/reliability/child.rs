//! `uploads serve` as a child process: started on a data dir, found on the port it picked,
//! killed like a crash (SIGKILL) or stopped like an operator (SIGTERM).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::support::{EXCHANGE_GUARD, uploads_binary};

/// The key the child servers accept, for [`OWNER`].
pub const KEY: &str = "sk-reliability-crash";
/// The owner [`KEY`] acts for.
pub const OWNER: &str = "crash-owner";

/// A running `uploads serve`.
pub struct ChildServer {
    process: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its last log lines, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts `uploads serve` on `data_dir` (port chosen by the system).
    pub fn start(data_dir: &Path) -> Self {
        Self::start_wrapped(data_dir, &[])
    }

    /// Starts `uploads serve` under `wrapper` (e.g. `strace ... --`), or directly when empty.
    pub fn start_wrapped(data_dir: &Path, wrapper: &[&str]) -> Self {
        let binary = uploads_binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--api-key")
            .arg(format!("{KEY}={OWNER}"))
            .env("RUST_LOG", "warn,uploads_server::server=info")
            .env_remove("UPLOADS_API_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut process = command.spawn().expect("spawn uploads serve");
        let stderr = process.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let kept = Arc::clone(&log);
        // Drains the log for the child's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                kept.push(line);
                if kept.len() > 200 {
                    kept.remove(0);
                }
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(EXCHANGE_GUARD) else {
            let _ = process.kill();
            let _ = process.wait();
            panic!(
                "the server did not start listening; its log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Self { process, addr, log }
    }

    /// The process id of the child (the wrapper's, when wrapped).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills the server at once (SIGKILL): nothing is flushed, no handler runs.
    pub fn kill(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Waits for the process to exit after it was told to stop.
    pub fn wait(mut self) {
        let _ = self.process.wait();
    }

    /// The server's recent log.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // A failing test must not leave a server running.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The address in the server's `listening local_addr=...` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("local_addr=")? + "local_addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Sends `signal` (e.g. `TERM`) to `pid` with the system's `kill` command.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
