//! The high-level upload: [`Client::upload_file`], [`Client::upload_reader`] and
//! [`Client::resume_upload`]. The core decides everything (its [`UploadRun`] over the
//! [`UploadSession`], the [`RetryLoop`](uploads_core::retry::RetryLoop) of create, complete
//! and cancel); this module runs its parts on tokio tasks, reads the source, sleeps, and
//! writes snapshots.
//!
//! ```text
//!   prepare (options) ─▶ create (retried) ─▶ N workers ─┬─ next_step ─▶ send part ─▶ handle_part_result ─▶ snapshot
//!                                                       ├─ Wait ─▶ sleep until the retry, or until a part finishes
//!                                                       └─ Stop ─▶ complete_request ─▶ Err(cause) ─▶ cancel (unless kept) ─▶ Err(Aborted)
//!   md5 pass (blocking pool, in file order, beside the workers) ─▶ complete (retried) ─▶ Ok(Upload)
//! ```

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper_util::client::legacy::connect::Connect;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uploads_core::session::{PartJob, UploadSession};
use uploads_core::types::{Upload, UploadId, UploadPart};
use uploads_core::upload::{NextStep, SnapshotSource, UploadOptions, UploadRun};

use crate::client::Client;
use crate::error::{AbortCause, Error, TransportError, UploadError};
use uploads_client_io::{Source, write_atomically};
use uploads_client_io::{jitter, now_unix_ms};

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
        let (create, plan) = options.prepare(&opened.name, opened.source.len())?;
        let deadline = options.deadline_unix_ms(now_unix_ms());
        let upload = Self::retrying(&options.retry, deadline, || self.create_upload(&create))
            .await
            .map_err(UploadError::Create)?;
        let session = UploadSession::new(upload, plan, options.retry, deadline)
            .with_source(opened.fingerprint);
        self.drive(session, opened.source, options).await
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
        let (create, plan) = options.prepare(name, len)?;
        let deadline = options.deadline_unix_ms(now_unix_ms());
        let upload = Self::retrying(&options.retry, deadline, || self.create_upload(&create))
            .await
            .map_err(UploadError::Create)?;
        let session = UploadSession::new(upload, plan, options.retry, deadline);
        self.drive(session, Source::new(reader, len), options).await
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
        let session = options.prepare_resume(
            snapshot,
            opened.source.len(),
            &opened.fingerprint,
            now_unix_ms(),
        )?;
        self.drive(session, opened.source, options).await
    }

    /// Runs `session` to its end: the workers, the md5 pass, then complete, or the give-up.
    async fn drive(
        &self,
        session: UploadSession,
        source: Source<'static>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let upload_id = session.upload().id.clone();
        let deadline = session.deadline_unix_ms();
        let workers_needed = session.missing_parts().count().min(options.concurrency);
        let run = Arc::new(Run {
            state: Mutex::new(UploadRun::new(session)),
            wake: Notify::new(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            options,
        });
        let source = Arc::new(source);
        let stop_hashing = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let md5 = run.options.md5.then(|| {
            let source = Arc::clone(&source);
            let stop = Arc::clone(&stop_hashing.0);
            tokio::task::spawn_blocking(move || source.md5_hex(&stop))
        });

        run.write_snapshot().await;
        let mut workers = JoinSet::new();
        for _ in 0..workers_needed {
            let worker = Worker {
                client: self.clone(),
                run: Arc::clone(&run),
                source: Arc::clone(&source),
                upload_id: upload_id.clone(),
            };
            workers.spawn(worker.work());
        }
        let all_done = async {
            while let Some(joined) = workers.join_next().await {
                if let Err(error) = joined {
                    run.abort(AbortCause::Source(std::io::Error::other(error)));
                }
            }
        };
        match deadline {
            Some(deadline) => {
                let left = Duration::from_millis(deadline.saturating_sub(now_unix_ms()));
                if tokio::time::timeout(left, all_done).await.is_err() {
                    run.abort(AbortCause::Deadline);
                }
            }
            None => all_done.await,
        }
        // Stops workers still sending when the deadline passed.
        workers.abort_all();

        if run.lock().is_aborted() {
            stop_hashing.0.store(true, Ordering::Relaxed);
        }
        let md5 = match md5 {
            None => None,
            Some(pass) => match pass
                .await
                .map_err(std::io::Error::other)
                .and_then(|md5| md5)
            {
                Ok(md5) => Some(md5),
                Err(error) => {
                    // A pass stopped for an earlier cause fails too; that cause wins.
                    run.abort(AbortCause::Source(error));
                    None
                }
            },
        };
        let complete = run.lock().complete_request(md5);
        let complete = match complete {
            Ok(complete) => complete,
            Err(cause) => return Err(self.give_up(&run, upload_id, cause).await),
        };
        let completed = Self::retrying(&run.options.retry, deadline, || {
            self.complete_upload(&upload_id, &complete)
        })
        .await;
        match completed {
            Ok(upload) => {
                run.remove_snapshot().await;
                Ok(upload)
            }
            Err(error) => Err(self
                .give_up(&run, upload_id, AbortCause::Complete(error))
                .await),
        }
    }

    /// Cancels the Upload unless the options keep it, and says why the upload ended.
    async fn give_up(&self, run: &Run, upload_id: UploadId, cause: AbortCause) -> UploadError {
        let cancelled = run.options.cancels_upload_on(&cause)
            && Self::retrying(&run.options.retry, None, || self.cancel_upload(&upload_id))
                .await
                .inspect_err(|error| tracing::warn!(%error, %upload_id, "cancel failed"))
                .is_ok();
        if cancelled {
            run.remove_snapshot().await;
        }
        UploadError::Aborted {
            upload_id,
            cancelled,
            cause: Box::new(cause),
        }
    }
}

/// What the workers of one upload share.
struct Run {
    /// The parts phase: the session and the first reason to give up.
    state: Mutex<UploadRun<TransportError>>,
    /// Woken whenever a part finishes, so waiting workers look for new work.
    wake: Notify,
    /// Taken while a snapshot is written, so a later snapshot never lands before an earlier.
    snapshot_lock: tokio::sync::Mutex<()>,
    options: UploadOptions,
}

impl Run {
    fn lock(&self) -> MutexGuard<'_, UploadRun<TransportError>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records why the upload gives up (the first cause wins) and wakes every worker.
    fn abort(&self, cause: AbortCause) {
        self.lock().abort(cause);
        self.wake.notify_waiters();
    }

    fn next_step(&self) -> NextStep {
        let now = now_unix_ms();
        self.lock().next_step(now)
    }

    fn bytes_sent(&self, part: u32, bytes: u64) {
        let mut state = self.lock();
        state.handle_bytes_sent(part, bytes);
        state.report_events(&self.options);
    }

    /// Hands the result of `job` to the run, which decides. Returns whether the part is
    /// stored.
    fn finish(&self, job: PartJob, result: Result<UploadPart, Error>) -> bool {
        let now = now_unix_ms();
        let mut state = self.lock();
        let stored = state.handle_part_result(job, result.map(|part| part.id), now, jitter());
        state.report_events(&self.options);
        drop(state);
        self.wake.notify_waiters();
        stored
    }

    /// Writes the session to the snapshot path, if there is one; a failure aborts.
    async fn write_snapshot(&self) {
        let Some(path) = self.options.snapshot_path.clone() else {
            return;
        };
        let _in_order = self.snapshot_lock.lock().await;
        let json = self.lock().session().snapshot().to_json();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &json))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written);
        if let Err(error) = written {
            self.abort(AbortCause::Snapshot(error));
        }
    }

    /// Removes the snapshot once it can no longer be resumed.
    async fn remove_snapshot(&self) {
        if let Some(path) = self.options.snapshot_path.clone() {
            let _in_order = self.snapshot_lock.lock().await;
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
    }
}

/// One of the upload's workers: takes a part, sends it, reports, until the session is done.
struct Worker<C> {
    client: Client<C>,
    run: Arc<Run>,
    source: Arc<Source<'static>>,
    upload_id: UploadId,
}

impl<C> Worker<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    async fn work(self) {
        loop {
            // Created before looking at the session, so a part finishing in between still
            // wakes this worker.
            let woken = self.run.wake.notified();
            match self.run.next_step() {
                NextStep::Stop => return,
                NextStep::Wait(None) => woken.await,
                NextStep::Wait(Some(at_unix_ms)) => {
                    let delay = Duration::from_millis(at_unix_ms.saturating_sub(now_unix_ms()));
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                NextStep::Send(job) => self.send(job).await,
            }
        }
    }

    async fn send(&self, job: PartJob) {
        let live = Arc::new(AtomicBool::new(true));
        let run = Arc::clone(&self.run);
        let on_sent = Arc::new(move |bytes| run.bytes_sent(job.index, bytes));
        let result = self
            .client
            .send_part(
                &self.upload_id,
                Arc::clone(&self.source),
                job.offset,
                job.len,
                Some(on_sent),
                Arc::clone(&live),
            )
            .await;
        live.store(false, Ordering::Release);
        if self.run.finish(job, result) {
            self.run.write_snapshot().await;
        }
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
