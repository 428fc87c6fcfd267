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

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::connect::Connect;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinSet;
use uploads_core::types::Upload;
use uploads_core::upload::{SnapshotSource, UploadOptions};
use uploads_core::uploader::{Action, Report, Transmit, Uploader};

use crate::body::ChunkSource;
use crate::client::Client;
use crate::error::{TransportError, UploadError};
use uploads_client_io::{PartReport, Source, write_atomically};
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
    /// Dropping the returned future stops the upload where it is: the Upload stays pending
    /// and can be resumed from the snapshot with [`Client::resume_upload`]. A snapshot write
    /// already under way still lands (whole), so the file may gain a part after the drop.
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
        let executor = Executor {
            client: self.clone(),
            reports,
            source: ChunkSource::new(source),
            parts: JoinSet::new(),
            requests: JoinSet::new(),
            abandon: StopOnDrop(Arc::new(AtomicBool::new(false))),
        };
        let mut executor = executor;
        loop {
            let now = now_unix_ms();
            while let Some(action) = uploader.poll_action(now) {
                executor.start(action);
            }
            let timeout = uploader.poll_timeout();
            // After the decision to wait, outside any lock and any body's poll_frame.
            while let Some(event) = uploader.poll_event() {
                if let Some(callback) = &progress {
                    callback(&event);
                }
            }
            if let Some(result) = uploader.poll_finished() {
                executor.stop_parts();
                return result;
            }
            let report = match timeout {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_unix_ms()));
                    tokio::time::timeout(wait, received.recv())
                        .await
                        .ok()
                        .flatten()
                }
                None => received.recv().await,
            };
            // The tasks' handles are only kept to abort them; reap the finished ones.
            while executor.parts.try_join_next().is_some() {}
            while executor.requests.try_join_next().is_some() {}
            let now = now_unix_ms();
            match report {
                Some(report) => uploader.handle(report, now, jitter()),
                None => uploader.handle_timeout(now),
            }
        }
    }
}

/// What the loop needs to start the machine's actions, and the tasks it started.
struct Executor<C> {
    client: Client<C>,
    reports: Reports,
    source: ChunkSource,
    parts: JoinSet<()>,
    requests: JoinSet<()>,
    /// Set when the parts are abandoned (or the upload dropped): the md5 pass stops.
    abandon: StopOnDrop,
}

impl<C> Executor<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn start(&mut self, action: Action) {
        let reports = self.reports.clone();
        match action {
            Action::Send(Transmit::Part { upload_id, job }) => {
                let client = self.client.clone();
                let source = self.source.clone();
                self.parts.spawn(async move {
                    let sender = reports.clone();
                    let report = PartReport::new(job, move |report| {
                        let _ = sender.send(report);
                    });
                    let live = Arc::new(AtomicBool::new(true));
                    let on_sent = Arc::new(move |bytes| {
                        let _ = reports.send(Report::Sent {
                            part: job.index,
                            bytes,
                        });
                    });
                    let sent = client
                        .send_part(
                            &upload_id,
                            Some(job.index),
                            source,
                            job.offset,
                            job.len,
                            Some(on_sent),
                            Arc::clone(&live),
                        )
                        .await;
                    live.store(false, Ordering::Release);
                    report.finish(sent.map(|part| part.id));
                });
            }
            Action::Send(transmit) => {
                let client = self.client.clone();
                self.requests.spawn(async move {
                    let report = match transmit {
                        Transmit::Create(request) => {
                            Report::Created(client.create_upload(&request).await)
                        }
                        Transmit::Complete { upload_id, request } => {
                            Report::Completed(client.complete_upload(&upload_id, &request).await)
                        }
                        Transmit::Cancel { upload_id } => {
                            Report::Cancelled(client.cancel_upload(&upload_id).await.inspect_err(
                                |error| tracing::warn!(%error, %upload_id, "cancel failed"),
                            ))
                        }
                        Transmit::Part { .. } => return,
                    };
                    let _ = reports.send(report);
                });
            }
            Action::Hash { .. } => {
                let source = self.source.clone();
                let stop = Arc::clone(&self.abandon.0);
                tokio::task::spawn_blocking(move || {
                    let _ = reports.send(Report::Hashed(source.source().md5_hex(&stop)));
                });
            }
            Action::WriteSnapshot { path, json } => {
                tokio::task::spawn_blocking(move || {
                    let _ = reports.send(Report::SnapshotDone(write_atomically(&path, &json)));
                });
            }
            Action::RemoveSnapshot { path } => {
                tokio::task::spawn_blocking(move || {
                    let _ = reports.send(Report::SnapshotDone(std::fs::remove_file(path)));
                });
            }
            Action::StopParts => self.stop_parts(),
        }
    }

    fn stop_parts(&mut self) {
        self.parts.abort_all();
        self.abandon.0.store(true, Ordering::Relaxed);
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
