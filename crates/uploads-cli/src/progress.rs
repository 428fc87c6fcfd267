//! Progress on stderr, as a person watching expects it: a live line on a terminal (bytes,
//! this run's rate and ETA, parts, retries), a spinner while the Upload is completed and
//! verified, and one summary line at the end; on a pipe or with `TERM=dumb`, a plain line at
//! the start, one every few seconds, and the summary. `--quiet` shows none of it.

use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use uploads_core::uploader::ProgressEvent;

use crate::output;
use crate::size::{format_duration, format_rate, format_size};

/// How often a plain line is printed when there is no terminal to redraw.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A redrawn line on a terminal.
    Bar,
    /// Periodic plain lines.
    Lines,
    /// Nothing.
    Quiet,
}

/// Where the transfers of one command are shown (one line each on a terminal).
pub struct Display {
    mode: Mode,
    multi: MultiProgress,
}

impl Display {
    /// A live display when stderr is a terminal that can redraw, plain lines otherwise,
    /// nothing when `quiet`.
    pub fn for_stderr(quiet: bool) -> Self {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !dumb {
            Mode::Bar
        } else {
            Mode::Lines
        };
        let target = if mode == Mode::Bar {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            mode,
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// Prints a note above the live lines (or as a plain line); nothing when quiet.
    pub fn note(&self, message: &str) {
        match self.mode {
            Mode::Bar => {
                let _ = self.multi.println(format!("uploads: {message}"));
            }
            Mode::Lines => output::note(message),
            Mode::Quiet => {}
        }
    }

    /// Prints an error line above the live lines, whatever the mode.
    pub fn error(&self, message: &str) {
        if self.mode == Mode::Bar {
            let _ = self.multi.println(format!(
                "{}{}",
                output::ERROR_PREFIX,
                message.replace('\n', " ")
            ));
        } else {
            output::error(message);
        }
    }

    /// Starts showing a transfer of `total` bytes, `already` of which were sent by an
    /// earlier run (a resume): the rate and ETA count only this run's bytes.
    pub fn transfer(&self, verb: &'static str, label: &str, total: u64, already: u64) -> Transfer {
        let bar = (self.mode == Mode::Bar).then(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            if let Ok(style) = ProgressStyle::with_template("{prefix} {msg} {wide_bar:.cyan/blue}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_owned());
            bar.set_position(already);
            bar
        });
        let transfer = Transfer {
            mode: self.mode,
            multi: self.multi.clone(),
            bar,
            verb,
            label: label.to_owned(),
            total,
            state: Mutex::new(State {
                started: Instant::now(),
                baseline: already,
                position: already,
                parts: None,
                retries: 0,
                last_line: Instant::now(),
                finishing: false,
            }),
        };
        if self.mode == Mode::Lines {
            output::note(&format!("{verb} {label}: {}", format_size(total)));
        }
        transfer.redraw();
        transfer
    }
}

/// One file's transfer, shown as it goes; safe to update from any thread.
pub struct Transfer {
    mode: Mode,
    multi: MultiProgress,
    bar: Option<ProgressBar>,
    verb: &'static str,
    label: String,
    total: u64,
    state: Mutex<State>,
}

struct State {
    started: Instant,
    /// Bytes already there when this run started.
    baseline: u64,
    position: u64,
    parts: Option<(u32, u32)>,
    retries: u64,
    last_line: Instant,
    finishing: bool,
}

impl State {
    /// This run's rate and the time left after `seconds` of this run, in words.
    fn rate_and_eta(&self, total: u64, seconds: f64) -> (String, String) {
        let sent = self.position.saturating_sub(self.baseline);
        let rate = format_rate(sent, seconds);
        let eta = if sent == 0 || seconds <= 0.0 {
            "-".to_owned()
        } else {
            #[allow(clippy::cast_precision_loss)]
            let left = total.saturating_sub(self.position) as f64 * seconds / sent as f64;
            format_duration(left)
        };
        (rate, eta)
    }

    fn describe(&self, total: u64) -> String {
        let (rate, eta) = self.rate_and_eta(total, self.started.elapsed().as_secs_f64());
        let mut text = format!(
            "{}/{} {rate} ETA {eta}",
            format_size(self.position),
            format_size(total)
        );
        if let Some((done, parts)) = self.parts {
            let _ = write!(text, " parts {done}/{parts}");
        }
        if self.retries > 0 {
            let _ = write!(text, " retries {}", self.retries);
        }
        text
    }
}

impl Transfer {
    /// Starts a transfer on a display of its own (`download`).
    pub fn start(verb: &'static str, label: &str, total: u64, already: u64) -> Self {
        Display::for_stderr(false).transfer(verb, label, total, already)
    }

    /// Shows one event of an upload.
    pub fn show(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::BytesSent { total_sent, .. } => self.set_position(*total_sent),
            ProgressEvent::PartRetry {
                part,
                attempt,
                delay_ms,
                bytes_wound_back,
                total_sent,
                failure,
                ..
            } => {
                if let Ok(mut state) = self.state.lock() {
                    state.retries += 1;
                    state.position = *total_sent;
                }
                self.println(&format!(
                    "{}: part {} failed ({failure}); retry {attempt} in {}, {} to send again",
                    self.label,
                    part + 1,
                    format_duration(Duration::from_millis(*delay_ms).as_secs_f64()),
                    format_size(*bytes_wound_back)
                ));
                self.redraw();
            }
            ProgressEvent::PartDone {
                parts_done,
                parts_total,
                ..
            } => {
                if let Ok(mut state) = self.state.lock() {
                    state.parts = Some((*parts_done, *parts_total));
                }
                if parts_done == parts_total {
                    self.finishing("completing the Upload");
                } else {
                    self.redraw();
                }
            }
            _ => {}
        }
    }

    /// Sets how many parts there are and how many are stored already.
    pub fn set_parts(&self, done: u32, total: u32) {
        if let Ok(mut state) = self.state.lock() {
            state.parts = Some((done, total));
        }
        self.redraw();
    }

    /// Counts `bytes` more as transferred.
    pub fn advance(&self, bytes: u64) {
        let position = self
            .state
            .lock()
            .map(|state| state.position + bytes)
            .unwrap_or_default();
        self.set_position(position);
    }

    fn set_position(&self, position: u64) {
        let line = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            state.position = position;
            let due = self.mode == Mode::Lines && state.last_line.elapsed() >= LINE_INTERVAL;
            if due {
                state.last_line = Instant::now();
            }
            due.then(|| state.describe(self.total))
        };
        if let Some(line) = line {
            output::note(&format!("{}: {line}", self.label));
        }
        self.redraw();
    }

    /// Shows that the bytes are sent and something else runs (complete, verification): a
    /// spinner on a terminal, a line otherwise.
    pub fn finishing(&self, what: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.finishing = true;
        }
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                if let Ok(style) = ProgressStyle::with_template("{prefix} {spinner} {msg}") {
                    bar.set_style(style);
                }
                bar.set_message(format!("{what}…"));
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            (None, Mode::Lines) => output::note(&format!("{}: {what}", self.label)),
            _ => {}
        }
    }

    /// A line above the live one, or a plain line.
    fn println(&self, line: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(format!("uploads: {line}")),
            (None, Mode::Lines) => output::note(line),
            _ => {}
        }
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else {
            return;
        };
        let Ok(state) = self.state.lock() else {
            return;
        };
        if state.finishing {
            return;
        }
        bar.set_position(state.position);
        bar.set_message(state.describe(self.total));
    }

    /// Removes the live line and prints the summary: size, time, this run's rate, `what`.
    pub fn finish(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode == Mode::Quiet {
            return;
        }
        let Ok(state) = self.state.lock() else {
            return;
        };
        let seconds = state.started.elapsed().as_secs_f64();
        let sent = state.position.saturating_sub(state.baseline);
        let past = match self.verb {
            "uploading" => "uploaded",
            "downloading" => "downloaded",
            other => other,
        };
        let line = format!(
            "{past} {}: {} in {} ({}), {what}",
            self.label,
            format_size(self.total),
            format_duration(seconds),
            format_rate(sent, seconds)
        );
        if self.mode == Mode::Bar {
            let _ = self.multi.println(format!("uploads: {line}"));
        } else {
            output::note(&line);
        }
    }

    /// Removes the live line; the failure is reported next.
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumed(baseline: u64, position: u64) -> State {
        State {
            started: Instant::now(),
            baseline,
            position,
            parts: None,
            retries: 0,
            last_line: Instant::now(),
            finishing: false,
        }
    }

    #[test]
    fn a_resumed_transfer_counts_only_this_runs_bytes() {
        // 3 MiB were stored before; 1 MiB more in 2 s is 512 KiB/s, and 4 MiB are left.
        let state = resumed(3 << 20, 4 << 20);
        assert_eq!(
            state.rate_and_eta(8 << 20, 2.0),
            ("512 KiB/s".to_owned(), "8.0s".to_owned())
        );
        // Nothing sent yet in this run: no rate, no ETA, whatever was there before.
        assert_eq!(
            resumed(3 << 20, 3 << 20).rate_and_eta(8 << 20, 2.0),
            ("0 B/s".to_owned(), "-".to_owned())
        );
    }
}
