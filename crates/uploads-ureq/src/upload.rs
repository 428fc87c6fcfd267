//! The high-level upload: [`Client::upload_file`], [`Client::upload_reader`] and
//! [`Client::resume_upload`]. The core decides everything (its [`UploadRun`] over the
//! [`UploadSession`], the [`RetryLoop`](uploads_core::retry::RetryLoop) of create, complete
//! and cancel); this module runs its parts on a scoped pool of threads, reads the source,
//! sleeps, and writes snapshots.
//!
//! ```text
//!   prepare (options) ─▶ create (retried) ─▶ N threads ─┬─ next_step ─▶ send part ─▶ handle_part_result ─▶ snapshot
//!                                                       ├─ Wait ─▶ sleep until the retry, or until a part finishes
//!                                                       └─ Stop ─▶ complete_request ─▶ Err(cause) ─▶ cancel (unless kept) ─▶ Err(Aborted)
//!   md5 pass (one more thread, in file order, beside the parts) ─▶ complete (retried) ─▶ Ok(Upload)
//! ```

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use uploads_core::session::{PartJob, UploadSession};
use uploads_core::types::{Upload, UploadId, UploadPart};
use uploads_core::upload::{NextStep, SnapshotSource, UploadOptions, UploadRun};

use crate::client::Client;
use crate::error::{AbortCause, Error, TransportError, UploadError};
use uploads_client_io::{Source, write_atomically};
use uploads_client_io::{jitter, now_unix_ms};

/// The longest a waiting thread sleeps before it looks at the stop signal again.
const STOP_POLL: Duration = Duration::from_millis(50);

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
    /// A [`StopSignal`](crate::StopSignal) given to this client stops the upload where it is:
    /// the Upload stays pending and can be resumed from the snapshot with
    /// [`Client::resume_upload`].
    pub fn upload_file(
        &self,
        path: impl AsRef<Path>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let opened = Source::open_file(path.as_ref()).map_err(UploadError::Source)?;
        let (create, plan) = options.prepare(&opened.name, opened.source.len())?;
        let deadline = options.deadline_unix_ms(now_unix_ms());
        let upload = Self::retrying(&options.retry, deadline, || self.create_upload(&create))
            .map_err(UploadError::Create)?;
        let session = UploadSession::new(upload, plan, options.retry, deadline)
            .with_source(opened.fingerprint);
        self.drive(session, &opened.source, options)
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
        let (create, plan) = options.prepare(name, len)?;
        let deadline = options.deadline_unix_ms(now_unix_ms());
        let upload = Self::retrying(&options.retry, deadline, || self.create_upload(&create))
            .map_err(UploadError::Create)?;
        let session = UploadSession::new(upload, plan, options.retry, deadline);
        self.drive(session, &Source::new(reader, len), options)
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
        let session = options.prepare_resume(
            snapshot,
            opened.source.len(),
            &opened.fingerprint,
            now_unix_ms(),
        )?;
        self.drive(session, &opened.source, options)
    }

    /// Runs `session` to its end: the workers, the md5 pass, then complete, or the give-up.
    fn drive(
        &self,
        session: UploadSession,
        source: &Source<'_>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError> {
        let upload_id = session.upload().id.clone();
        let deadline = session.deadline_unix_ms();
        let workers_needed = session.missing_parts().count().min(options.concurrency);
        let run = Run {
            state: Mutex::new(UploadRun::new(session)),
            wake: Condvar::new(),
            snapshot_lock: Mutex::new(()),
            options,
            deadline,
            stop: self.stop().map(crate::StopSignal::flag),
        };
        run.write_snapshot();
        let stop_hashing = AtomicBool::new(false);
        let md5 = std::thread::scope(|scope| {
            let md5 = run
                .options
                .md5
                .then(|| scope.spawn(|| source.md5_hex(&stop_hashing)));
            let workers: Vec<_> = (0..workers_needed)
                .map(|_| scope.spawn(|| self.work(&run, source, &upload_id)))
                .collect();
            for worker in workers {
                if worker.join().is_err() {
                    run.abort(AbortCause::Source(std::io::Error::other(
                        "a part thread panicked",
                    )));
                }
            }
            if run.lock().is_aborted() {
                stop_hashing.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            md5.map(|pass| {
                pass.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the md5 thread panicked")))
            })
        });

        let md5 = match md5.transpose() {
            Ok(md5) => md5,
            Err(error) => {
                // A pass stopped for an earlier cause fails too; that cause wins.
                run.abort(AbortCause::Source(error));
                None
            }
        };
        let complete = run.lock().complete_request(md5);
        let complete = match complete {
            Ok(complete) => complete,
            Err(cause) => return Err(self.give_up(&run, upload_id, cause)),
        };
        let completed = Self::retrying(&run.options.retry, deadline, || {
            self.complete_upload(&upload_id, &complete)
        });
        match completed {
            Ok(upload) => {
                run.remove_snapshot();
                Ok(upload)
            }
            Err(error) => Err(self.give_up(&run, upload_id, AbortCause::Complete(error))),
        }
    }

    /// Cancels the Upload unless the options keep it or the caller stopped the upload, and
    /// says why the upload ended.
    fn give_up(&self, run: &Run<'_>, upload_id: UploadId, cause: AbortCause) -> UploadError {
        let cancelled = run.options.cancels_upload_on(&cause)
            && Self::retrying(&run.options.retry, None, || self.cancel_upload(&upload_id))
                .inspect_err(|error| tracing::warn!(%error, %upload_id, "cancel failed"))
                .is_ok();
        if cancelled {
            run.remove_snapshot();
        }
        UploadError::Aborted {
            upload_id,
            cancelled,
            cause: Box::new(cause),
        }
    }

    /// One of the upload's threads: takes a part, sends it, reports, until the session is
    /// done.
    fn work(&self, run: &Run<'_>, source: &Source<'_>, upload_id: &UploadId) {
        loop {
            match run.next_step() {
                NextStep::Stop => return,
                NextStep::Wait(until) => run.wait(until),
                NextStep::Send(job) => {
                    let on_read = |bytes| run.bytes_sent(job.index, bytes);
                    let timeout = run.request_timeout(self.timeout());
                    let result = self.send_part(
                        upload_id,
                        source,
                        job.offset,
                        job.len,
                        Some(&on_read),
                        timeout,
                    );
                    if run.finish(job, result) {
                        run.write_snapshot();
                    }
                }
            }
        }
    }
}

/// What the threads of one upload share.
struct Run<'a> {
    /// The parts phase: the session and the first reason to give up.
    state: Mutex<UploadRun<TransportError>>,
    /// Signalled whenever a part finishes, so waiting threads look for new work.
    wake: Condvar,
    /// Held while a snapshot is written, so a later snapshot never lands before an earlier.
    snapshot_lock: Mutex<()>,
    options: UploadOptions,
    /// The session's deadline: a bound on waits and on each part request.
    deadline: Option<u64>,
    stop: Option<&'a AtomicBool>,
}

impl Run<'_> {
    fn lock(&self) -> MutexGuard<'_, UploadRun<TransportError>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop
            .is_some_and(|stop| stop.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Records why the upload gives up (the first cause wins) and wakes every thread.
    fn abort(&self, cause: AbortCause) {
        self.lock().abort(cause);
        self.wake.notify_all();
    }

    fn next_step(&self) -> NextStep {
        let now = now_unix_ms();
        let mut state = self.lock();
        if self.stopped() {
            state.abort(AbortCause::Interrupted);
        }
        state.next_step(now)
    }

    /// Sleeps until `until` (or the deadline, whichever is first), until another thread
    /// reports, or at most [`STOP_POLL`] when a stop signal may come.
    fn wait(&self, until: Option<u64>) {
        let state = self.lock();
        let until = match (until, self.deadline) {
            (Some(until), Some(deadline)) => Some(until.min(deadline)),
            (until, deadline) => until.or(deadline),
        };
        let mut timeout =
            until.map(|until| Duration::from_millis(until.saturating_sub(now_unix_ms())));
        if self.stop.is_some() {
            timeout = Some(timeout.map_or(STOP_POLL, |timeout| timeout.min(STOP_POLL)));
        }
        let _woken = match timeout {
            Some(timeout) => {
                self.wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }

    /// A part request's timeout: the client's, cut short by the deadline.
    fn request_timeout(&self, client_timeout: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => client_timeout.min(
                Duration::from_millis(deadline.saturating_sub(now_unix_ms()))
                    .max(Duration::from_millis(1)),
            ),
            None => client_timeout,
        }
    }

    fn bytes_sent(&self, part: u32, bytes: u64) {
        let mut state = self.lock();
        state.handle_bytes_sent(part, bytes);
        state.report_events(&self.options);
    }

    /// Hands the result of `job` to the run, which decides; once the stop signal is given,
    /// the stop is the cause, not the failure it made. Returns whether the part is stored.
    fn finish(&self, job: PartJob, result: Result<UploadPart, Error>) -> bool {
        let now = now_unix_ms();
        let mut state = self.lock();
        if self.stopped() {
            state.abort(AbortCause::Interrupted);
        }
        let stored = state.handle_part_result(job, result.map(|part| part.id), now, jitter());
        state.report_events(&self.options);
        drop(state);
        self.wake.notify_all();
        stored
    }

    /// Writes the session to the snapshot path, if there is one; a failure aborts.
    fn write_snapshot(&self) {
        let Some(path) = &self.options.snapshot_path else {
            return;
        };
        let _in_order = self
            .snapshot_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let json = self.lock().session().snapshot().to_json();
        if let Err(error) = write_atomically(path, &json) {
            self.abort(AbortCause::Snapshot(error));
        }
    }

    /// Removes the snapshot once it can no longer be resumed.
    fn remove_snapshot(&self) {
        if let Some(path) = &self.options.snapshot_path {
            let _in_order = self
                .snapshot_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = std::fs::remove_file(path);
        }
    }
}
