//! The high-level upload: [`Client::upload_file`], [`Client::upload_reader`] and
//! [`Client::resume_upload`]. The core's [`Uploader`] decides everything; this module is its
//! executor on scoped threads: one loop owns the machine, each request, the md5 pass and
//! each part run on a thread of their own and send their [`Report`] back over a channel.
//!
//! ```text
//!   loop ─▶ poll_action ─▶ spawn the request / part / md5 pass, write the snapshot
//!     ▲     poll_timeout, then progress events (no lock held), then poll_finished
//!     │     recv_timeout(until the timeout) ─▶ handle(report) | handle_timeout
//!     └──────────────────────────────────────────────┘
//! ```
//!
//! Nothing is shared but the channel: a report sent while the loop decides to wait stays
//! in the channel until the loop receives it, so no wake-up can be lost.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::Scope;
use std::time::Duration;

use uploads_core::types::Upload;
use uploads_core::upload::UploadOptions;
use uploads_core::uploader::{Action, PartJob, Report, ReportGuard, SnapshotSource, Uploader};

use crate::client::Client;
use crate::error::{TransportError, UploadError};
use uploads_client_io::{Source, Turn, boundary, turn, write_atomically};
use uploads_client_io::{jitter, now_unix_ms};

type Reports = Sender<Report<TransportError>>;

impl Client {
    /// Uploads the file at `path` as one Upload and returns it completed (with its File).
    ///
    /// Parts of `options.part_size` are sent `options.concurrency` at a time, one thread
    /// each, every part read from disk by offset straight into the connection's buffer:
    /// memory does not grow with the part or the file size. The md5 is computed by one more
    /// thread reading the file in order beside the uploads, and sent on complete. Each part
    /// is retried on its own per `options.retry`, honouring `Retry-After`; when a part gives
    /// up, the deadline passes or complete fails for good, the Upload is cancelled (unless
    /// `cancel_on_failure` is off) and the error says why. With `snapshot_path` set, the
    /// session is written there after each finished part (atomically) and removed once the
    /// Upload completes or is cancelled.
    ///
    /// A [`StopSignal`](crate::StopSignal) given to this client ([`Client::stop_signal`]) stops the upload
    /// within 50 ms or so: [`stop`](crate::StopSignal::stop) keeps the Upload pending to resume
    /// from the snapshot with [`Client::resume_upload`], [`cancel`](crate::StopSignal::cancel)
    /// cancels it.
    pub fn upload_file(
        &self,
        path: impl AsRef<Path>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let opened = Source::open_file(path.as_ref()).map_err(UploadError::Source)?;
        let uploader = opened.uploader(&options)?;
        self.drive(uploader, &opened.source, options)
    }

    /// Uploads `len` bytes read from `reader`, naming the File `name` unless the options
    /// name it, exactly as [`Client::upload_file`] does.
    ///
    /// The reader must seek: parts in flight read their own ranges in turns on the one
    /// reader (and the md5 pass reads it in order), so memory stays bounded as for a file. A
    /// reader that cannot seek would need each part in memory; write it to a file first. A
    /// snapshot of this upload records no fingerprint, so a resume cannot check that the
    /// file it is given holds the same bytes.
    pub fn upload_reader<R>(
        &self,
        reader: R,
        len: u64,
        name: &str,
        options: UploadOptions,
    ) -> Result<Upload, UploadError>
    where
        R: Read + Seek + Send,
    {
        let uploader = Uploader::new(&options, name, len, None, now_unix_ms())?;
        self.drive(uploader, &Source::new(reader, len), options)
    }

    /// Resumes an upload of the file at `path` from a snapshot: only the parts the snapshot
    /// lacks are sent, then the Upload is completed as [`Client::upload_file`] does (the md5
    /// covers the whole file). The part size is the snapshot's; the other options apply.
    ///
    /// Refused before any request when the snapshot's Upload has expired or is not pending
    /// ([`UploadError::Resume`](uploads_core::upload::UploadError::Resume)), or when the file is
    /// not the one the snapshot was taken of
    /// ([`UploadError::SourceChanged`](uploads_core::upload::UploadError::SourceChanged)).
    pub fn resume_upload(
        &self,
        snapshot: impl Into<SnapshotSource>,
        path: impl AsRef<Path>,
        mut options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let (snapshot, snapshot_path) =
            snapshot.into().load(|path| std::fs::read_to_string(path))?;
        if let Some(snapshot_path) = snapshot_path {
            options.snapshot_path.get_or_insert(snapshot_path);
        }
        let opened = Source::open_file(path.as_ref()).map_err(UploadError::Source)?;
        let uploader = opened.resume(&options, snapshot)?;
        self.drive(uploader, &opened.source, options)
    }

    /// Runs the machine to its end; returns once every thread it started has ended.
    fn drive(
        &self,
        mut uploader: Uploader<TransportError>,
        source: &Source<'_>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let progress = options.progress;
        let (reports, received) = mpsc::channel();
        let deadline = uploader.deadline_unix_ms();
        // Set to stop the md5 pass; and every part once the upload has its result.
        let hashing = Arc::new(AtomicBool::new(false));
        std::thread::scope(|scope| {
            let mut executor = Executor {
                client: self,
                scope,
                reports: &reports,
                source,
                hashing: &hashing,
                parts: HashMap::new(),
                deadline,
            };
            let result = loop {
                let turn = turn(
                    &mut uploader,
                    self.stop(),
                    progress.as_ref(),
                    |action, uploader| {
                        executor.start(action, uploader);
                    },
                );
                let report = match turn {
                    Turn::Finished(result) => break result,
                    Turn::Wait(Some(wait)) => received.recv_timeout(wait).ok(),
                    Turn::Wait(None) => received.recv().ok(),
                };
                let now = now_unix_ms();
                if let Some(sockets) = self.sockets() {
                    sockets.report_to(&mut uploader, now);
                }
                match report {
                    Some(report) => uploader.handle(report, now, jitter()),
                    None => uploader.handle_timeout(now),
                }
            };
            executor.stop_everything();
            result
        })
    }
}

/// What the loop needs to start the machine's actions.
struct Executor<'scope, 'env, 'a> {
    client: &'env Client,
    scope: &'scope Scope<'scope, 'env>,
    reports: &'env Reports,
    source: &'env Source<'a>,
    hashing: &'env Arc<AtomicBool>,
    /// Each part attempt in flight and the flag that stops its body.
    parts: HashMap<PartJob, Arc<AtomicBool>>,
    deadline: Option<u64>,
}

impl<'scope, 'env: 'scope> Executor<'scope, 'env, '_> {
    fn start(&mut self, action: Action, uploader: &mut Uploader<TransportError>) {
        match action {
            Action::StopPart(job) => {
                if let Some(stop) = self.parts.remove(&job) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            // A blocking request cannot be cut short: the client's timeout bounds it, and
            // its answer, if one still comes, is harmless.
            Action::StopRequest => {}
            Action::StopHash => self.hashing.store(true, Ordering::Relaxed),
            // Written on the loop's thread: small, and never two at once.
            Action::WriteSnapshot { path, json } => {
                uploader.handle_snapshot_done(write_atomically(&path, &json), now_unix_ms());
            }
            Action::RemoveSnapshot { path } => {
                uploader.handle_snapshot_done(std::fs::remove_file(path), now_unix_ms());
            }
            action => {
                let silence = match &action {
                    Action::Send(transmit) => uploader.stall_timeout(transmit),
                    _ => self.client.timeout(),
                };
                let reports = self.reports.clone();
                let answer = move |report| {
                    let _ = reports.send(report);
                };
                if let Some(guard) = ReportGuard::new(&action, answer) {
                    self.perform(action, guard, silence);
                }
            }
        }
    }

    /// Performs a request or the md5 pass on a thread of its own, answering through `guard`.
    /// A request waits for its answer at most `silence` (the machine's stall time): a
    /// blocking request cannot be cut short when the machine stops it.
    fn perform<S>(
        &mut self,
        action: Action,
        guard: ReportGuard<TransportError, S>,
        silence: Duration,
    ) where
        S: FnOnce(Report<TransportError>) + Send + 'scope,
    {
        let (client, source, reports) = (self.client, self.source, self.reports.clone());
        match action {
            Action::Send(transmit) => match transmit.into_request(client.config(), &boundary()) {
                Err(report) => guard.send(report),
                Ok((request, expect)) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    if let Some(job) = expect.part() {
                        self.parts.insert(job, Arc::clone(&stop));
                    }
                    let timeout = self.request_timeout();
                    self.scope.spawn(move || {
                        let answer =
                            client.exchange(request, source, &reports, (timeout, silence), &stop);
                        guard.send(expect.report(answer));
                    });
                }
            },
            Action::Hash { .. } => {
                let hashing = self.hashing;
                self.scope
                    .spawn(move || guard.send(Report::Hashed(source.md5_hex(hashing))));
            }
            Action::WriteSnapshot { .. }
            | Action::RemoveSnapshot { .. }
            | Action::StopPart(_)
            | Action::StopRequest
            | Action::StopHash => {}
        }
    }

    /// Once the upload has its result: part bodies and the md5 pass stop reading.
    fn stop_everything(&mut self) {
        self.hashing.store(true, Ordering::Relaxed);
        for stop in self.parts.values() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// A request's timeout: the client's, cut short by the deadline.
    fn request_timeout(&self) -> Duration {
        let timeout = self.client.timeout();
        match self.deadline {
            Some(deadline) => timeout.min(
                Duration::from_millis(deadline.saturating_sub(now_unix_ms()))
                    .max(Duration::from_millis(1)),
            ),
            None => timeout,
        }
    }
}
