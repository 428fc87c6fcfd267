//! stdout and stderr as a Unix tool uses them: stdout carries the answer and a reader that
//! goes away (`| head -1`) ends the command quietly; stderr carries everything else, each
//! error on one line with one prefix.

use std::io::Write;

use crate::Failure;

/// The prefix of every error line.
pub const ERROR_PREFIX: &str = "uploads: error: ";

/// Prints one error line on stderr.
pub fn error(message: &str) {
    let line = message.replace('\n', " ");
    // A closed stderr leaves nowhere to say anything; the exit code still tells.
    let _ = writeln!(std::io::stderr().lock(), "{ERROR_PREFIX}{line}");
}

/// Prints one note (not an error) on stderr.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "uploads: {message}");
}

/// Prints one line on stderr as it is (a JSON progress line).
pub fn raw_stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Now, in unix milliseconds (the `time_ms` of JSON progress).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Writes bytes to stdout and flushes them; a reader that went away is
/// [`Failure::StdoutClosed`].
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|error| stdout_failure(&error))
}

/// Writes one line to stdout (see [`write_stdout`]).
pub fn print_line(line: &str) -> Result<(), Failure> {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// The failure for an error writing to stdout.
pub fn stdout_failure(error: &std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::StdoutClosed
    } else {
        Failure::Transfer(format!("writing to stdout failed: {error}"))
    }
}
