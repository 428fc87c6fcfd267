//! What a test binary logs, collected: one global subscriber, set before any server starts
//! (a per-thread one misses lines when other tests' threads register the same callsites).

use std::sync::{Arc, Mutex, OnceLock};

/// The log of this test binary; call it before the first server starts.
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// Log output, collected.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The first line logged that contains every one of `needles`.
    #[track_caller]
    pub fn line_with(&self, needles: &[&str]) -> String {
        let logged = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        logged
            .lines()
            .find(|line| needles.iter().all(|needle| line.contains(needle)))
            .unwrap_or_else(|| panic!("no log line with {needles:?}:\n{logged}"))
            .to_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
