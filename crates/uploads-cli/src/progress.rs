//! Progress on stderr, as a person watching expects it: a live line on a terminal (bytes,
//! this run's rate and ETA, parts, retries), a spinner while the Upload is completed and
//! verified, and one summary line at the end; on a pipe or with `TERM=dumb`, a plain line at
//! the start, one every few seconds, and the summary. `--progress json` prints one JSON
//! object per line instead, for scripts. `--quiet` shows none of it.

use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use uploads_core::uploader::{ProgressEvent, SessionSnapshot};

use crate::output;
use crate::size::{format_duration, format_rate, format_size};

/// How often a plain line is printed when there is no terminal to redraw.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a JSON progress line is printed at most, per file (and at each part done).
const JSON_INTERVAL: Duration = Duration::from_millis(100);
/// How much of a run is measured before its rate predicts whether the Upload can finish.
const OUTLOOK_AFTER: Duration = Duration::from_secs(3);

/// How `--progress` shows progress on stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressFormat {
    /// For a person: a live line on a terminal, else a plain line every few seconds.
    #[default]
    Human,
    /// One JSON object per line, for scripts.
    Json,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A redrawn line on a terminal.
    Bar,
    /// Periodic plain lines.
    Lines,
    /// JSON lines.
    Json,
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
    /// JSON lines when asked, nothing when `quiet`.
    pub fn for_stderr(quiet: bool, format: ProgressFormat) -> Self {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        let mode = if quiet {
            Mode::Quiet
        } else if format == ProgressFormat::Json {
            Mode::Json
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
            Mode::Json => json_line(&json!({"event": "note", "message": message})),
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
        let now = Instant::now();
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
            expiry: Mutex::new(None),
            state: Mutex::new(State {
                started: now,
                baseline: already,
                position: already,
                sent: already,
                parts: None,
                retries: 0,
                last_line: now,
                last_json: None,
                outlook_checked: false,
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
    /// Where the Upload's expiry is read once it exists (see [`Transfer::expires_by`]).
    expiry: Mutex<Option<Expiry>>,
    state: Mutex<State>,
}

/// How a transfer learns when its Upload expires.
#[derive(Debug, Clone)]
pub enum Expiry {
    /// From the snapshot at this path (its `expires_locally_at_ms`), once written.
    Snapshot(std::path::PathBuf),
    /// This long after the transfer started (no snapshot is kept).
    After(Duration),
}

struct State {
    started: Instant,
    /// Bytes already there when this run started.
    baseline: u64,
    /// Bytes that have left the machine, which the bar, rate and ETA show.
    position: u64,
    /// Bytes handed to the sockets (`bytes_sent` in JSON).
    sent: u64,
    parts: Option<(u32, u32)>,
    retries: u64,
    last_line: Instant,
    last_json: Option<Instant>,
    outlook_checked: bool,
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
        Display::for_stderr(false, ProgressFormat::Human).transfer(verb, label, total, already)
    }

    /// Starts this run over from `already` bytes and `parts` (done, total) stored: a
    /// resume, or a new Upload after a kept one could not be continued.
    pub fn begin(&self, already: u64, parts: (u32, u32)) {
        if let Ok(mut state) = self.state.lock() {
            state.started = Instant::now();
            state.baseline = already;
            state.position = already;
            state.sent = already;
            state.parts = Some(parts);
            state.outlook_checked = false;
        }
        if let Some(bar) = &self.bar {
            bar.reset();
        }
        self.emit_json(true);
        self.redraw();
    }

    /// Says where to learn when the Upload expires, for the early warning that it cannot
    /// finish in time.
    pub fn expires_by(&self, expiry: Expiry) {
        if let Ok(mut slot) = self.expiry.lock() {
            *slot = Some(expiry);
        }
    }

    /// Shows one event of an upload.
    pub fn show(&self, event: &ProgressEvent) {
        match event {
            // The bar, rate and ETA follow what left the machine: bytes handed to a socket
            // may sit in its buffer for seconds on a slow link.
            ProgressEvent::BytesSent {
                total_sent,
                total_delivered,
                ..
            } => {
                if let Ok(mut state) = self.state.lock() {
                    state.sent = *total_sent;
                }
                self.set_position(*total_delivered);
            }
            ProgressEvent::Delivered {
                total_delivered, ..
            } => self.set_position(*total_delivered),
            ProgressEvent::PartRetry {
                part,
                attempt,
                delay_ms,
                bytes_wound_back,
                total_sent,
                total_delivered,
                failure,
                ..
            } => {
                if let Ok(mut state) = self.state.lock() {
                    state.retries += 1;
                    state.position = *total_delivered;
                    state.sent = *total_sent;
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
                self.emit_json(true);
                if parts_done == parts_total {
                    self.finishing("completing the Upload");
                } else {
                    self.redraw();
                }
            }
            _ => {}
        }
    }

    /// Counts `bytes` more as transferred.
    pub fn advance(&self, bytes: u64) {
        let position = self
            .state
            .lock()
            .map(|state| state.position + bytes)
            .unwrap_or_default();
        if let Ok(mut state) = self.state.lock() {
            state.sent = position;
        }
        self.set_position(position);
    }

    fn set_position(&self, position: u64) {
        let (line, outlook) = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            state.position = position;
            let due = self.mode == Mode::Lines && state.last_line.elapsed() >= LINE_INTERVAL;
            if due {
                state.last_line = Instant::now();
            }
            let outlook = !state.outlook_checked
                && self.mode != Mode::Quiet
                && state.started.elapsed() >= OUTLOOK_AFTER
                && position > state.baseline;
            if outlook {
                state.outlook_checked = true;
            }
            (due.then(|| state.describe(self.total)), outlook)
        };
        if let Some(line) = line {
            output::note(&format!("{}: {line}", self.label));
        }
        if outlook {
            self.warn_if_late();
        }
        self.emit_json(false);
        self.redraw();
    }

    /// Prints a JSON progress line when due (at most every [`JSON_INTERVAL`]) or `now`.
    fn emit_json(&self, now: bool) {
        if self.mode != Mode::Json {
            return;
        }
        let line = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if !now
                && state
                    .last_json
                    .is_some_and(|last| last.elapsed() < JSON_INTERVAL)
            {
                return;
            }
            state.last_json = Some(Instant::now());
            let (parts_done, parts_total) = state.parts.unwrap_or_default();
            json!({
                "event": "progress",
                "time_ms": output::unix_ms(),
                "file": self.label,
                "bytes_delivered": state.position,
                "bytes_sent": state.sent,
                "bytes_total": self.total,
                "parts_done": parts_done,
                "parts_total": parts_total,
            })
        };
        json_line(&line);
    }

    /// Says early, from this run's rate so far, when the Upload will expire before the
    /// bytes left are sent, and what helps.
    fn warn_if_late(&self) {
        let Some(expiry) = self.expiry.lock().ok().and_then(|slot| slot.clone()) else {
            return;
        };
        let Ok(state) = self.state.lock().map(|state| {
            (
                state.position.saturating_sub(state.baseline),
                state.started.elapsed(),
                self.total.saturating_sub(state.position),
            )
        }) else {
            return;
        };
        let (this_run, elapsed, left) = state;
        let seconds_left = match expiry {
            Expiry::After(lifetime) => lifetime.saturating_sub(elapsed).as_secs_f64(),
            Expiry::Snapshot(path) => {
                let Some(expires_ms) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|text| SessionSnapshot::from_json(&text).ok())
                    .and_then(|snapshot| snapshot.expires_locally_at_ms)
                else {
                    return;
                };
                #[allow(clippy::cast_precision_loss)]
                let seconds = expires_ms.saturating_sub(output::unix_ms()) as f64 / 1000.0;
                seconds
            }
        };
        if let Outlook::Late { needed_secs } =
            expiry_outlook(left, this_run, elapsed.as_secs_f64(), seconds_left)
        {
            self.println(&format!(
                "{}: at {} the {} left take about {}, but the Upload expires in {}: it cannot finish in time. \
Upload fewer files at once (--jobs 1), use a faster link, or split the file (e.g. split -b 1G) and upload the pieces",
                self.label,
                format_rate(this_run, elapsed.as_secs_f64()),
                format_size(left),
                format_duration(needed_secs),
                format_duration(seconds_left)
            ));
        }
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
            (None, Mode::Json) => json_line(&json!({
                "event": "note",
                "time_ms": output::unix_ms(),
                "file": self.label,
                "message": line,
            })),
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
        let past = match self.verb {
            "uploading" => "uploaded",
            "downloading" => "downloaded",
            other => other,
        };
        if self.mode == Mode::Json {
            json_line(&json!({
                "event": past,
                "time_ms": output::unix_ms(),
                "file": self.label,
                "bytes_total": self.total,
                "bytes_this_run": self.total.saturating_sub(state.baseline),
                "elapsed_ms": state.started.elapsed().as_millis(),
                "result": what,
            }));
            return;
        }
        let line = format!(
            "{past} {}: {}, {what}",
            self.label,
            state.summary(self.total, seconds)
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

impl State {
    /// What a finished run moved, in how long and how fast: the whole size, or for a resume
    /// this run's part of it and what was stored before.
    fn summary(&self, total: u64, seconds: f64) -> String {
        let this_run = total.saturating_sub(self.baseline);
        let rate = format_rate(this_run, seconds);
        if self.baseline == 0 {
            format!(
                "{} in {} ({rate})",
                format_size(total),
                format_duration(seconds)
            )
        } else {
            format!(
                "{} of {} this run ({} already stored) in {} ({rate})",
                format_size(this_run),
                format_size(total),
                format_size(self.baseline),
                format_duration(seconds)
            )
        }
    }
}

/// Whether an upload finishes before its Upload expires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outlook {
    /// It does, or nothing was measured yet to tell.
    InTime,
    /// At this run's rate the bytes left need `needed_secs`, more than the Upload has left.
    Late {
        /// Seconds the bytes left need at this run's rate.
        needed_secs: f64,
    },
}

/// Predicts from this run's rate (`this_run` bytes in `elapsed_secs`) whether `left` bytes
/// are sent within `seconds_left` before the Upload expires.
#[allow(clippy::cast_precision_loss)] // a prediction
pub fn expiry_outlook(left: u64, this_run: u64, elapsed_secs: f64, seconds_left: f64) -> Outlook {
    if this_run == 0 || elapsed_secs <= 0.0 {
        return Outlook::InTime;
    }
    let needed_secs = left as f64 * elapsed_secs / this_run as f64;
    if needed_secs > seconds_left {
        Outlook::Late { needed_secs }
    } else {
        Outlook::InTime
    }
}

/// Prints one JSON object as a line on stderr.
fn json_line(value: &serde_json::Value) {
    output::raw_stderr_line(&value.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumed(baseline: u64, position: u64) -> State {
        State {
            started: Instant::now(),
            baseline,
            position,
            sent: position,
            parts: None,
            retries: 0,
            last_line: Instant::now(),
            last_json: None,
            outlook_checked: false,
            finishing: false,
        }
    }

    #[test]
    fn the_bar_follows_the_bytes_that_left_the_machine_not_those_handed_to_a_socket() {
        let display = Display {
            mode: Mode::Quiet,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        };
        let transfer = display.transfer("uploading", "a.bin", 100 << 20, 0);
        transfer.show(&ProgressEvent::BytesSent {
            part: 0,
            bytes: 10 << 20,
            total_sent: 10 << 20,
            total_delivered: 1 << 20,
            total: 100 << 20,
        });
        let seen = |transfer: &Transfer| {
            let state = transfer.state.lock().unwrap();
            (state.position, state.sent)
        };
        assert_eq!(seen(&transfer), (1 << 20, 10 << 20));
        transfer.show(&ProgressEvent::Delivered {
            total_delivered: 4 << 20,
            total: 100 << 20,
        });
        assert_eq!(seen(&transfer), (4 << 20, 10 << 20));
    }

    #[test]
    fn an_upload_too_slow_for_its_upload_s_lifetime_is_late() {
        // 10 MiB in 5 s is 2 MiB/s: 1 GiB more takes 512 s.
        let late = expiry_outlook(1 << 30, 10 << 20, 5.0, 300.0);
        assert_eq!(late, Outlook::Late { needed_secs: 512.0 });
        assert_eq!(
            expiry_outlook(1 << 30, 10 << 20, 5.0, 600.0),
            Outlook::InTime
        );
        // Nothing measured yet: no verdict.
        assert_eq!(expiry_outlook(1 << 30, 0, 5.0, 1.0), Outlook::InTime);
        assert_eq!(expiry_outlook(1 << 30, 10, 0.0, 1.0), Outlook::InTime);
        // Already expired with bytes left.
        assert!(matches!(
            expiry_outlook(1, 10, 1.0, -1.0),
            Outlook::Late { .. }
        ));
    }

    #[test]
    fn a_resumed_summary_gives_this_run_s_bytes_and_what_was_stored() {
        let state = resumed(60 << 20, 100 << 20);
        assert_eq!(
            state.summary(100 << 20, 2.0),
            "40 MiB of 100 MiB this run (60 MiB already stored) in 2.0s (20 MiB/s)"
        );
        assert_eq!(
            resumed(0, 8 << 20).summary(8 << 20, 0.5),
            "8 MiB in 500ms (16 MiB/s)"
        );
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
