//! The high-level upload: [`Client::upload_file`], [`Client::upload_reader`] and
//! [`Client::resume_upload`]. The core's [`Uploader`] decides everything; this module is its
//! executor on tokio: the upload's future owns the machine, each request and part runs as a
//! task (the md5 pass and snapshot writes on the blocking pool) and sends its [`Report`]
//! back over a channel.
//!
//! ```text
//!   loop ─▶ poll_action ─▶ spawn the request / part / md5 pass / snapshot write
//!     ▲     poll_timeout, then progress events (no lock held), then poll_finished
//!     │     recv, or sleep until the timeout ─▶ handle(report) | handle_timeout
//!     └──────────────────────────────────────────────┘
//! ```
//!
//! A part body reports its progress into the channel from `poll_frame` and never runs the
//! caller's callback there, so a slow callback holds up no part.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::client::legacy::connect::Connect;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::{AbortHandle, JoinSet};
use uploads_core::types::Upload;
use uploads_core::upload::UploadOptions;
use uploads_core::uploader::{Action, PartJob, Report, ReportGuard, SnapshotSource, Uploader};

use crate::body::ChunkSource;
use crate::client::Client;
use crate::error::{TransportError, UploadError};
use uploads_client_io::{Source, Turn, boundary, turn, write_atomically};
use uploads_client_io::{jitter, now_unix_ms};

type Reports = UnboundedSender<Report<TransportError>>;

impl<C> Client<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Uploads the file at `path` as one Upload and returns it completed (with its File).
    ///
    /// Parts of `options.part_size` are sent `options.concurrency` at a time, each streamed
    /// from disk by offset a chunk (1 MiB) at a time: memory stays a few chunks per part in
    /// flight whatever the part or file size. The md5 is computed by one pass over the file
    /// in order beside the uploads and sent on complete. Each part is retried on its own per
    /// `options.retry`, honouring `Retry-After`; when a part gives up, the deadline passes or
    /// complete fails for good, the Upload is cancelled (unless `cancel_on_failure` is off)
    /// and the error says why. With `snapshot_path` set, the session is written there after
    /// each finished part (atomically) and removed once the Upload completes or is cancelled.
    ///
    /// A [`StopSignal`](crate::StopSignal) given to this client ([`Client::stop_signal`]) stops the upload
    /// within 50 ms or so: [`stop`](crate::StopSignal::stop) keeps the Upload pending to resume
    /// from the snapshot with [`Client::resume_upload`], [`cancel`](crate::StopSignal::cancel)
    /// cancels it. Dropping the returned future also stops the upload where it is, and keeps
    /// the Upload. A snapshot write already under way still lands (whole), so the file may
    /// gain a part after the drop.
    pub async fn upload_file(
        &self,
        path: impl AsRef<Path>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let opened = open_file(path.as_ref()).await?;
        let uploader = opened.uploader(&options)?;
        self.drive(uploader, opened.source, options).await
    }

    /// Uploads `len` bytes read from `reader`, naming the File `name` unless the options
    /// name it, exactly as [`Client::upload_file`] does.
    ///
    /// The reader must seek: parts in flight read their own ranges, a chunk at a time, in
    /// turns on one shared reader (and the md5 pass reads it in order), so memory stays
    /// bounded as for a file. A reader that cannot seek would need each part in memory;
    /// write it to a file first. A snapshot of this upload records no fingerprint, so a
    /// resume cannot check that the file it is given holds the same bytes.
    pub async fn upload_reader<R>(
        &self,
        reader: R,
        len: u64,
        name: &str,
        options: UploadOptions,
    ) -> Result<Upload, UploadError>
    where
        R: Read + Seek + Send + 'static,
    {
        let uploader = Uploader::new(&options, name, len, None, now_unix_ms())?;
        self.drive(uploader, Source::new(reader, len), options)
            .await
    }

    /// Resumes an upload of the file at `path` from a snapshot: only the parts the snapshot
    /// lacks are sent, then the Upload is completed as [`Client::upload_file`] does (the md5
    /// covers the whole file). The part size is the snapshot's; the other options apply.
    ///
    /// Refused before any request when the snapshot's Upload has expired or is not pending
    /// ([`UploadError::Resume`](uploads_core::upload::UploadError::Resume)), or when the file is
    /// not the one the snapshot was taken of
    /// ([`UploadError::SourceChanged`](uploads_core::upload::UploadError::SourceChanged)).
    pub async fn resume_upload(
        &self,
        snapshot: impl Into<SnapshotSource>,
        path: impl AsRef<Path>,
        mut options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let snapshot: SnapshotSource = snapshot.into();
        let (snapshot, snapshot_path) = tokio::task::spawn_blocking(move || {
            snapshot.load(|path| std::fs::read_to_string(path))
        })
        .await
        .map_err(|error| UploadError::Source(std::io::Error::other(error)))??;
        if let Some(snapshot_path) = snapshot_path {
            options.snapshot_path.get_or_insert(snapshot_path);
        }
        let opened = open_file(path.as_ref()).await?;
        let uploader = opened.resume(&options, snapshot)?;
        self.drive(uploader, opened.source, options).await
    }

    /// Runs the machine to its end. Dropping the future aborts every part task and stops
    /// the md5 pass.
    async fn drive(
        &self,
        mut uploader: Uploader<TransportError>,
        source: Source<'static>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let progress = options.progress;
        let (reports, mut received) = unbounded_channel();
        let mut executor = Executor {
            client: self.clone(),
            reports,
            source: ChunkSource::new(source),
            tasks: JoinSet::new(),
            parts: HashMap::new(),
            request: None,
            hashing: StopOnDrop(Arc::new(AtomicBool::new(false))),
        };
        loop {
            let turn = turn(
                &mut uploader,
                self.stop(),
                progress.as_ref(),
                |action, _| {
                    executor.start(action);
                },
            );
            let report = match turn {
                Turn::Finished(result) => return result,
                Turn::Wait(Some(wait)) => tokio::time::timeout(wait, received.recv())
                    .await
                    .ok()
                    .flatten(),
                Turn::Wait(None) => received.recv().await,
            };
            // The tasks' handles are only kept to abort them; reap the finished ones.
            while executor.tasks.try_join_next().is_some() {}
            let now = now_unix_ms();
            if let Some(sockets) = self.sockets() {
                sockets.report_to(&mut uploader, now);
            }
            match report {
                Some(report) => uploader.handle(report, now, jitter()),
                None => uploader.handle_timeout(now),
            }
        }
    }
}

/// What the loop needs to start the machine's actions, and the tasks it started. Dropped
/// with the upload: every task it started is aborted.
struct Executor<C> {
    client: Client<C>,
    reports: Reports,
    source: ChunkSource,
    tasks: JoinSet<()>,
    /// The part attempts in flight, to stop one.
    parts: HashMap<PartJob, Stoppable>,
    /// The create, complete or cancel in flight, to stop it.
    request: Option<Stoppable>,
    /// Set to stop the md5 pass (also when the upload is dropped).
    hashing: StopOnDrop,
}

impl<C> Executor<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn start(&mut self, action: Action) {
        match action {
            Action::StopPart(job) => {
                if let Some(task) = self.parts.remove(&job) {
                    task.stop();
                }
            }
            Action::StopRequest => {
                if let Some(task) = self.request.take() {
                    task.stop();
                }
            }
            Action::StopHash => self.hashing.0.store(true, Ordering::Relaxed),
            action => {
                let stopped = Arc::new(AtomicBool::new(false));
                let (reports, silenced) = (self.reports.clone(), Arc::clone(&stopped));
                // A task the machine stopped says nothing more, not even that it ended
                // without an answer: the machine may have sent its request again.
                let answer = move |report| {
                    if !silenced.load(Ordering::Acquire) {
                        let _ = reports.send(report);
                    }
                };
                if let Some(guard) = ReportGuard::new(&action, answer) {
                    self.perform(action, guard, stopped);
                }
            }
        }
    }

    /// Performs `action` on a task of its own, answering through `guard`; a request's task
    /// is kept to stop it (setting `stopped`).
    fn perform<S>(
        &mut self,
        action: Action,
        guard: ReportGuard<TransportError, S>,
        stopped: Arc<AtomicBool>,
    ) where
        S: FnOnce(Report<TransportError>) + Send + 'static,
    {
        match action {
            Action::Send(transmit) => {
                match transmit.into_request(self.client.config(), &boundary()) {
                    Err(report) => guard.send(report),
                    Ok((request, expect)) => {
                        let (client, source) = (self.client.clone(), self.source.clone());
                        let reports = self.reports.clone();
                        let task = self.tasks.spawn(async move {
                            let answer = client.exchange(request, source, &reports).await;
                            guard.send(expect.report(answer));
                        });
                        let task = Stoppable { task, stopped };
                        match expect.part() {
                            Some(job) => {
                                self.parts.insert(job, task);
                            }
                            None => self.request = Some(task),
                        }
                    }
                }
            }
            Action::Hash { .. } => {
                let (source, stop) = (self.source.clone(), Arc::clone(&self.hashing.0));
                tokio::task::spawn_blocking(move || {
                    guard.send(Report::Hashed(source.source().md5_hex(&stop)));
                });
            }
            Action::WriteSnapshot { path, json } => {
                tokio::task::spawn_blocking(move || {
                    guard.send(Report::SnapshotDone(write_atomically(&path, &json)));
                });
            }
            Action::RemoveSnapshot { path } => {
                tokio::task::spawn_blocking(move || {
                    guard.send(Report::SnapshotDone(std::fs::remove_file(path)));
                });
            }
            Action::StopPart(_) | Action::StopRequest | Action::StopHash => {}
        }
    }
}

/// A request's task the machine may stop.
struct Stoppable {
    task: AbortHandle,
    /// Set before the task is aborted: its report guard then sends nothing.
    stopped: Arc<AtomicBool>,
}

impl Stoppable {
    fn stop(self) {
        self.stopped.store(true, Ordering::Release);
        self.task.abort();
    }
}

/// Sets its flag when dropped: stops the md5 pass when the upload ends early.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Opens the file to upload on the blocking pool.
async fn open_file(path: &Path) -> Result<uploads_client_io::OpenedFile, UploadError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || Source::open_file(&path))
        .await
        .map_err(std::io::Error::other)
        .and_then(|opened| opened)
        .map_err(UploadError::Source)
}
