//! Progress of `put`: a bar on a terminal (bytes, rate, ETA, parts, retries), plain log lines
//! otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use uploads_core::session::ProgressEvent;

/// Shows progress events as they come, from any thread.
pub struct Progress {
    bar: Option<ProgressBar>,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    retries: u64,
    started: Option<Instant>,
}

impl Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn for_stderr(total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_bytes);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            state: Mutex::new(Counts::default()),
        }
    }

    /// Shows one event.
    pub fn show(&self, event: &ProgressEvent) {
        let Ok(mut counts) = self.state.lock() else {
            return;
        };
        let started = *counts.started.get_or_insert_with(Instant::now);
        match event {
            ProgressEvent::BytesSent { total_sent, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*total_sent);
                }
            }
            ProgressEvent::PartRetry {
                part,
                attempt,
                delay_ms,
                bytes_wound_back,
                total_sent,
                failure,
                ..
            } => {
                counts.retries += 1;
                let line = format!(
                    "part {} failed ({failure}); retry {attempt} in {delay_ms} ms, {bytes_wound_back} bytes to send again",
                    part + 1
                );
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(*total_sent);
                        bar.println(line);
                    }
                    None => eprintln!("uploads: {line}"),
                }
            }
            ProgressEvent::PartDone {
                part,
                parts_done,
                parts_total,
            } => {
                let message = format!(
                    "parts {parts_done}/{parts_total}, retries {}",
                    counts.retries
                );
                if let Some(bar) = &self.bar {
                    bar.set_message(message);
                } else {
                    let seconds = started.elapsed().as_secs_f64();
                    eprintln!("uploads: part {} done: {message}, {seconds:.1} s", part + 1);
                }
            }
            ProgressEvent::GaveUp(failure) => {
                let line = format!("giving up: {failure}");
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("uploads: {line}"),
                }
            }
            _ => {}
        }
    }

    /// Removes the bar (the outcome is printed next).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
