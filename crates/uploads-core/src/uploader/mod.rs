//! The whole high-level upload as one sans-IO state machine, in the style of quinn-proto:
//! create, the parts (N in flight, each retried on its own), the md5, snapshots, complete,
//! and on failure the give-up and cancel. A driver (the hyper and ureq clients, or a user's
//! own runtime) only performs the I/O the [`Uploader`] asks for and reports back.
//!
//! ```text
//!             handle_created                     every part stored       handle_completed
//!  Creating ─────────────────▶ Parts ───────────── + md5 known ─────▶ Completing ─────────▶ Done(Ok)
//!     │ (resume starts here) ───▲ │                                      │
//!     │                           │ a part gives up / deadline /          │ complete fails for good
//!     │                           │ source or snapshot error / stop       │
//!     │                           ▼                                       ▼
//!     │                  cancel?─┬─ yes ─▶ Cancelling ── handle_cancelled ──▶ Done(Err, cancelled)
//!     │                          └─ no ──────────────────────────────────────▶ Done(Err, kept)
//!     └─ create fails for good, or stop ───────────────────────────────────▶ Done(Err)
//! ```
//!
//! Inputs come in through the `handle_*` methods and [`Uploader::stop`]; outputs come out
//! through the `poll_*` methods. A driver's loop:
//!
//! ```text
//!   loop {
//!       while let Some(action) = uploader.poll_action(now) { start it }      // Send / Hash / snapshot / StopParts
//!       while let Some(event) = uploader.poll_event() { show it }            // outside every lock
//!       if let Some(result) = uploader.poll_finished() { return result }
//!       wait for a report, or until uploader.poll_timeout()
//!       uploader.handle_…(report) | uploader.handle_timeout(now)
//!   }
//! ```
//!
//! The machine owns every decision: when to retry (with the caller's jitter and the server's
//! `Retry-After`), the deadline, when to give up and whether to cancel, the order parts start
//! in, what the snapshot holds, and the progress events (which wind back on a retried part).
//! Parts start in index order (retries first, earliest due first), and part `k + 1` is handed
//! out only once part `k` has begun sending ([`Uploader::handle_part_begun`]), so the service
//! receives parts roughly in file order and can hash ahead.
//!
//! It reads no clock and draws no random numbers: `now` (unix milliseconds) and `jitter`
//! (in `[0, 1)`) are parameters. Whenever the driver has nothing in flight, the machine has
//! either finished or a [`poll_timeout`](Uploader::poll_timeout): it cannot stall.
//!
//! ```
//! use uploads_core::types::{PartId, Purpose, Upload, UploadId, UploadStatus};
//! use uploads_core::upload::UploadOptions;
//! use uploads_core::uploader::{Action, Transmit, Uploader};
//!
//! let options = UploadOptions::new(Purpose::Batch).part_size(4).md5(false);
//! let now = 1_719_184_912_000;
//! let mut uploader = Uploader::<std::io::Error>::new(&options, "a.jsonl", 6, None, now)?;
//! let Some(Action::Send(Transmit::Create(create))) = uploader.poll_action(now) else { panic!() };
//! let upload = Upload {
//!     id: UploadId::new("upload_1"), object: "upload".into(), bytes: create.bytes,
//!     created_at: now / 1000, filename: create.filename, purpose: create.purpose,
//!     status: UploadStatus::Pending, expires_at: now / 1000 + 3600, file: None,
//! };
//! uploader.handle_created(Ok(upload.clone()), now, 0.0);
//! // Part 0 first; part 1 once part 0 has begun.
//! let Some(Action::Send(Transmit::Part { job: first, .. })) = uploader.poll_action(now) else { panic!() };
//! assert_eq!(uploader.poll_action(now), None);
//! uploader.handle_part_begun(first.index);
//! let Some(Action::Send(Transmit::Part { job: second, .. })) = uploader.poll_action(now) else { panic!() };
//! uploader.handle_part_result(second, Ok(PartId::new("part_b")), now, 0.0);
//! uploader.handle_part_result(first, Ok(PartId::new("part_a")), now, 0.0);
//! let Some(Action::Send(Transmit::Complete { request, .. })) = uploader.poll_action(now) else { panic!() };
//! assert_eq!(request.part_ids, [PartId::new("part_a"), PartId::new("part_b")]);
//! let completed = Upload { status: UploadStatus::Completed, ..upload };
//! uploader.handle_completed(Ok(completed.clone()), now, 0.0);
//! assert_eq!(uploader.poll_finished().unwrap().unwrap(), completed);
//! # Ok::<(), uploads_core::upload::OptionsError>(())
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;

use crate::retry::{RetryDecision, RetryLoop, RetryPolicy};
use crate::session::{PartJob, PartPlan, ProgressEvent, SessionSnapshot, UploadSession};
use crate::types::{CompleteUploadRequest, CreateUploadRequest, PartId, Upload, UploadId};
use crate::upload::{
    AbortCause, NextStep, OptionsError, RequestError, UploadError, UploadOptions, UploadRun,
};

#[cfg(test)]
mod tests;

/// A request the driver sends; it reports the answer with the matching `handle_*` method.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Transmit {
    /// Create the Upload; report with [`Uploader::handle_created`].
    Create(CreateUploadRequest),
    /// Add `job`'s bytes as a Part; report [`Uploader::handle_part_begun`] when its body
    /// starts going out, [`Uploader::handle_bytes_sent`] as it goes, and
    /// [`Uploader::handle_part_result`] at the end.
    Part {
        /// The Upload the part belongs to.
        upload_id: UploadId,
        /// Which bytes, and which attempt.
        job: PartJob,
    },
    /// Complete the Upload; report with [`Uploader::handle_completed`].
    Complete {
        /// The Upload to complete.
        upload_id: UploadId,
        /// The ordered part ids and the md5.
        request: CompleteUploadRequest,
    },
    /// Cancel the Upload; report with [`Uploader::handle_cancelled`].
    Cancel {
        /// The Upload to cancel.
        upload_id: UploadId,
    },
}

/// What the driver does next. Each kind is reported back as its docs say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send a request.
    Send(Transmit),
    /// Hash `len` bytes of the source from `offset` with md5 (lower-case hex), beside the
    /// parts; report with [`Uploader::handle_hashed`]. Asked once, for the whole source.
    Hash {
        /// Where the range starts (0).
        offset: u64,
        /// How many bytes (the whole source).
        len: u64,
    },
    /// Write `json` to `path`, atomically (a crash leaves the old file or the new one);
    /// report with [`Uploader::handle_snapshot_done`]. Never two at once.
    WriteSnapshot {
        /// Where the snapshot lives.
        path: PathBuf,
        /// The session snapshot.
        json: String,
    },
    /// Remove the snapshot file: the Upload can no longer be resumed. Report with
    /// [`Uploader::handle_snapshot_done`] (a failure is ignored).
    RemoveSnapshot {
        /// Where the snapshot lives.
        path: PathBuf,
    },
    /// The parts phase is over early: stop sending every part in flight (their reports,
    /// if any still come, are ignored) and stop hashing.
    StopParts,
}

/// One report of the driver, for [`Uploader::handle`]: what a driver's tasks send back to
/// its loop (over a channel, say), one variant per `handle_*` method.
#[derive(Debug)]
pub enum Report<E> {
    /// `bytes` more bytes of part `part` went out; 0 says its body has begun.
    Sent {
        /// The part's index.
        part: u32,
        /// How many more bytes.
        bytes: u64,
    },
    /// A part request ended.
    Part(PartJob, Result<PartId, RequestError<E>>),
    /// The create request ended.
    Created(Result<Upload, RequestError<E>>),
    /// The complete request ended.
    Completed(Result<Upload, RequestError<E>>),
    /// The cancel request ended.
    Cancelled(Result<Upload, RequestError<E>>),
    /// The md5 pass ended.
    Hashed(Result<String, std::io::Error>),
    /// The snapshot write or removal ended.
    SnapshotDone(std::io::Result<()>),
}

/// How [`Uploader::stop`] leaves the Upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep the Upload pending (and its snapshot), to resume it later.
    Keep,
    /// Cancel the Upload.
    Cancel,
}

/// Where one request of the machine's own (create, complete, cancel) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// To be sent at the next [`Uploader::poll_action`].
    Ready,
    InFlight,
    /// A retry, due at this time.
    WaitUntil(u64),
}

/// The machine's phase.
enum Phase<E> {
    Creating {
        request: CreateUploadRequest,
        plan: PartPlan,
        source: Option<String>,
        retries: RetryLoop,
        state: Request,
    },
    Parts,
    Completing {
        request: CompleteUploadRequest,
        retries: RetryLoop,
        state: Request,
    },
    Cancelling {
        cause: AbortCause<E>,
        retries: RetryLoop,
        state: Request,
    },
    /// Waiting for the snapshot file to settle before handing out the result.
    Finishing(Result<Upload, UploadError<E>>),
    Done,
}

/// The md5 of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Digest {
    Off,
    Wanted,
    Hashing,
    Known(String),
    /// The pass failed; its error went to the run as the abort cause.
    Failed,
}

/// The snapshot file: one write or removal at a time, always of the latest state.
#[derive(Debug)]
struct SnapshotFile {
    /// Where it lives; forgotten once it is removed.
    path: Option<PathBuf>,
    /// A write or removal is under way.
    busy: bool,
    /// The session changed since the last write.
    dirty: bool,
    /// The Upload can no longer be resumed: remove the file.
    remove: bool,
}

/// The whole high-level upload. See the [module docs](self).
pub struct Uploader<E> {
    phase: Phase<E>,
    /// The parts phase, from the Upload's creation (or the resume) on.
    run: Option<UploadRun<E>>,
    policy: RetryPolicy,
    deadline_unix_ms: Option<u64>,
    concurrency: usize,
    cancel_on_failure: bool,
    stop: Option<StopMode>,
    file_size: u64,
    digest: Digest,
    /// Parts handed out whose result is not reported yet.
    in_flight: BTreeSet<u32>,
    /// The part handed out whose body has not begun: no other part starts before it has.
    not_begun: Option<u32>,
    snapshot: SnapshotFile,
    actions: VecDeque<Action>,
    events: VecDeque<ProgressEvent>,
}

impl<E> std::fmt::Debug for Uploader<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("in_flight", &self.in_flight)
            .field("digest", &self.digest)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl<E> Uploader<E> {
    /// A new upload of a source of `size` bytes named `source_name` (the File's name unless
    /// the options set one), with `fingerprint` (see
    /// [`source_fingerprint`](crate::upload::source_fingerprint)) kept in snapshots, starting
    /// at `now_unix_ms`: the options are checked before anything is sent.
    pub fn new(
        options: &UploadOptions,
        source_name: &str,
        size: u64,
        fingerprint: Option<String>,
        now_unix_ms: u64,
    ) -> Result<Self, OptionsError> {
        let (request, plan) = options.prepare(source_name, size)?;
        let deadline = options.deadline_unix_ms(now_unix_ms);
        let phase = Phase::Creating {
            request,
            plan,
            source: fingerprint,
            retries: RetryLoop::new(options.retry, deadline),
            state: Request::Ready,
        };
        Ok(Self::with_phase(options, phase, None, deadline, size))
    }

    /// Resumes the upload of `snapshot` from a source of `size` bytes with `fingerprint`, at
    /// `now_unix_ms`: only the parts the snapshot lacks are sent. Refused before any request
    /// when the snapshot cannot be resumed or the source is not the one it was taken of.
    pub fn resume(
        options: &UploadOptions,
        snapshot: SessionSnapshot,
        size: u64,
        fingerprint: &str,
        now_unix_ms: u64,
    ) -> Result<Self, UploadError<E>> {
        let session = options.prepare_resume(snapshot, size, fingerprint, now_unix_ms)?;
        let deadline = session.deadline_unix_ms();
        let mut uploader = Self::with_phase(options, Phase::Parts, None, deadline, size);
        uploader.start_parts(session);
        Ok(uploader)
    }

    fn with_phase(
        options: &UploadOptions,
        phase: Phase<E>,
        run: Option<UploadRun<E>>,
        deadline_unix_ms: Option<u64>,
        file_size: u64,
    ) -> Self {
        Self {
            phase,
            run,
            policy: options.retry,
            deadline_unix_ms,
            concurrency: options.concurrency,
            cancel_on_failure: options.cancel_on_failure,
            stop: None,
            file_size,
            digest: if options.md5 {
                Digest::Wanted
            } else {
                Digest::Off
            },
            in_flight: BTreeSet::new(),
            not_begun: None,
            snapshot: SnapshotFile {
                path: options.snapshot_path.clone(),
                busy: false,
                dirty: false,
                remove: false,
            },
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn start_parts(&mut self, session: UploadSession) {
        self.phase = Phase::Parts;
        self.run = Some(UploadRun::new(session));
        self.snapshot.dirty = true;
        if self.digest == Digest::Wanted {
            self.digest = Digest::Hashing;
            self.actions.push_back(Action::Hash {
                offset: 0,
                len: self.file_size,
            });
        }
    }

    /// The session of the parts phase, once the Upload exists: its snapshot, progress and
    /// missing parts.
    pub fn session(&self) -> Option<&UploadSession> {
        self.run.as_ref().map(UploadRun::session)
    }

    /// The Upload's id, once it exists.
    pub fn upload_id(&self) -> Option<&UploadId> {
        self.session().map(|session| &session.upload().id)
    }

    /// The caller's deadline for the whole upload, in unix milliseconds, if it has one: a
    /// driver may bound each part request by it.
    pub fn deadline_unix_ms(&self) -> Option<u64> {
        self.deadline_unix_ms
    }

    /// How many parts are in flight.
    pub fn parts_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands `report` to the matching `handle_*` method at `now_unix_ms`, with `jitter` in
    /// `[0, 1)` for any retry it schedules.
    pub fn handle(&mut self, report: Report<E>, now_unix_ms: u64, jitter: f64) {
        match report {
            Report::Sent { part, bytes } => self.handle_bytes_sent(part, bytes),
            Report::Part(job, result) => self.handle_part_result(job, result, now_unix_ms, jitter),
            Report::Created(result) => self.handle_created(result, now_unix_ms, jitter),
            Report::Completed(result) => self.handle_completed(result, now_unix_ms, jitter),
            Report::Cancelled(result) => self.handle_cancelled(result, now_unix_ms, jitter),
            Report::Hashed(result) => self.handle_hashed(result, now_unix_ms),
            Report::SnapshotDone(result) => self.handle_snapshot_done(result, now_unix_ms),
        }
    }

    /// Reports create's answer at `now_unix_ms`; a failure is retried per the policy (with
    /// `jitter` in `[0, 1)`) or ends the upload with [`UploadError::Create`].
    pub fn handle_created(
        &mut self,
        result: Result<Upload, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        let Phase::Creating {
            plan,
            source,
            retries,
            state,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if *state != Request::InFlight {
            return;
        }
        match result {
            Ok(upload) => {
                let mut session =
                    UploadSession::new(upload, *plan, self.policy, self.deadline_unix_ms);
                if let Some(source) = source.take() {
                    session = session.with_source(source);
                }
                self.start_parts(session);
            }
            Err(error) => match retries.on_failure(
                error.as_failure(now_unix_ms).as_ref(),
                now_unix_ms,
                jitter,
            ) {
                RetryDecision::RetryAt { at_unix_ms, .. } => {
                    *state = Request::WaitUntil(at_unix_ms);
                }
                RetryDecision::GiveUp(_) => self.finish(Err(UploadError::Create(error))),
            },
        }
        self.advance(now_unix_ms);
    }

    /// Reports that the body of part `index` started going out: the next part may be handed
    /// out.
    pub fn handle_part_begun(&mut self, index: u32) {
        if self.not_begun == Some(index) {
            self.not_begun = None;
        }
    }

    /// Reports that `bytes` more bytes of part `index` went out (implies it has begun).
    pub fn handle_bytes_sent(&mut self, index: u32, bytes: u64) {
        self.handle_part_begun(index);
        if !matches!(self.phase, Phase::Parts) || !self.in_flight.contains(&index) {
            return;
        }
        if let Some(run) = &mut self.run {
            run.handle_bytes_sent(index, bytes);
        }
        self.drain_run_events();
    }

    /// Reports how sending `job` ended at `now_unix_ms`: stored as a part id, or failed (then
    /// retried per the policy with `jitter` in `[0, 1)`, or given up).
    pub fn handle_part_result(
        &mut self,
        job: PartJob,
        result: Result<PartId, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        self.handle_part_begun(job.index);
        if !matches!(self.phase, Phase::Parts) || !self.in_flight.remove(&job.index) {
            return;
        }
        if let Some(run) = &mut self.run
            && run.handle_part_result(job, result, now_unix_ms, jitter)
        {
            self.snapshot.dirty = true;
        }
        self.drain_run_events();
        self.advance(now_unix_ms);
    }

    /// Reports the md5 pass: the digest as lower-case hex, or why the source could not be
    /// read (which ends the upload).
    pub fn handle_hashed(&mut self, result: Result<String, std::io::Error>, now_unix_ms: u64) {
        if self.digest != Digest::Hashing {
            return;
        }
        match result {
            Ok(md5) => self.digest = Digest::Known(md5),
            Err(error) => {
                self.digest = Digest::Failed;
                if let Some(run) = &mut self.run {
                    run.abort(AbortCause::Source(error));
                }
            }
        }
        self.advance(now_unix_ms);
    }

    /// Reports that the last [`Action::WriteSnapshot`] or [`Action::RemoveSnapshot`] ended.
    /// A write that failed ends the upload ([`AbortCause::Snapshot`]).
    pub fn handle_snapshot_done(&mut self, result: std::io::Result<()>, now_unix_ms: u64) {
        if !self.snapshot.busy {
            return;
        }
        self.snapshot.busy = false;
        if let Err(error) = result
            && !self.snapshot.remove
        {
            if let Some(run) = &mut self.run {
                run.abort(AbortCause::Snapshot(error));
            }
            // Nothing more to write: the file is not writable.
            self.snapshot.dirty = false;
        }
        self.advance(now_unix_ms);
    }

    /// Reports complete's answer at `now_unix_ms`; a failure is retried per the policy, or
    /// gives up (and cancels unless the options keep the Upload).
    pub fn handle_completed(
        &mut self,
        result: Result<Upload, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        let Phase::Completing { retries, state, .. } = &mut self.phase else {
            return;
        };
        if *state != Request::InFlight {
            return;
        }
        match result {
            Ok(upload) => {
                self.snapshot.remove = true;
                self.finish(Ok(upload));
            }
            Err(error) => match retries.on_failure(
                error.as_failure(now_unix_ms).as_ref(),
                now_unix_ms,
                jitter,
            ) {
                RetryDecision::RetryAt { at_unix_ms, .. } => {
                    *state = Request::WaitUntil(at_unix_ms);
                }
                RetryDecision::GiveUp(_) => self.give_up(AbortCause::Complete(error)),
            },
        }
        self.advance(now_unix_ms);
    }

    /// Reports cancel's answer at `now_unix_ms`; a failure is retried per the policy, and if
    /// it gives up the Upload is reported as kept.
    pub fn handle_cancelled(
        &mut self,
        result: Result<Upload, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        let Phase::Cancelling { retries, state, .. } = &mut self.phase else {
            return;
        };
        if *state != Request::InFlight {
            return;
        }
        let cancelled = match result {
            Ok(_) => true,
            Err(error) => match retries.on_failure(
                error.as_failure(now_unix_ms).as_ref(),
                now_unix_ms,
                jitter,
            ) {
                RetryDecision::RetryAt { at_unix_ms, .. } => {
                    *state = Request::WaitUntil(at_unix_ms);
                    return;
                }
                RetryDecision::GiveUp(_) => false,
            },
        };
        let Phase::Cancelling { cause, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        self.snapshot.remove = cancelled;
        self.finish_aborted(cause, cancelled);
        self.advance(now_unix_ms);
    }

    /// Time has come to `now_unix_ms`: a retry may be due, or the deadline may have passed.
    pub fn handle_timeout(&mut self, now_unix_ms: u64) {
        self.advance(now_unix_ms);
    }

    /// The caller stops the upload at `now_unix_ms`: nothing new is sent, parts in flight are
    /// abandoned, and the Upload is kept for a resume or cancelled as `mode` says. The result
    /// is [`AbortCause::Interrupted`] (or [`UploadError::Interrupted`] before the Upload
    /// exists). A stop once the upload is completing or finishing changes nothing.
    pub fn stop(&mut self, mode: StopMode, now_unix_ms: u64) {
        match self.phase {
            Phase::Creating { .. } => self.finish(Err(UploadError::Interrupted)),
            Phase::Parts => {
                self.stop = Some(mode);
                if let Some(run) = &mut self.run {
                    run.abort(AbortCause::Interrupted);
                }
            }
            Phase::Completing { .. }
            | Phase::Cancelling { .. }
            | Phase::Finishing(_)
            | Phase::Done => return,
        }
        self.advance(now_unix_ms);
    }

    /// The next thing to do at `now_unix_ms`, if any.
    pub fn poll_action(&mut self, now_unix_ms: u64) -> Option<Action> {
        self.advance(now_unix_ms);
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if let Some(action) = self.snapshot_action() {
            return Some(action);
        }
        match &mut self.phase {
            Phase::Creating { request, state, .. } => (*state == Request::Ready).then(|| {
                *state = Request::InFlight;
                Action::Send(Transmit::Create(request.clone()))
            }),
            Phase::Parts => self.next_part(now_unix_ms),
            Phase::Completing { request, state, .. } => {
                let upload_id = self.run.as_ref()?.session().upload().id.clone();
                (*state == Request::Ready).then(|| {
                    *state = Request::InFlight;
                    Action::Send(Transmit::Complete {
                        upload_id,
                        request: request.clone(),
                    })
                })
            }
            Phase::Cancelling { state, .. } => {
                let upload_id = self.run.as_ref()?.session().upload().id.clone();
                (*state == Request::Ready).then(|| {
                    *state = Request::InFlight;
                    Action::Send(Transmit::Cancel { upload_id })
                })
            }
            Phase::Finishing(_) | Phase::Done => None,
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) at the latest, in unix
    /// milliseconds, if the machine waits for time to pass.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.phase {
            Phase::Creating { state, .. }
            | Phase::Completing { state, .. }
            | Phase::Cancelling { state, .. } => match state {
                Request::WaitUntil(at) => Some(*at),
                Request::Ready | Request::InFlight => None,
            },
            Phase::Parts => {
                let room = self.in_flight.len() < self.concurrency && self.not_begun.is_none();
                let retry = self
                    .run
                    .as_ref()
                    .and_then(|run| run.session().next_wakeup())
                    .filter(|_| room);
                match (retry, self.deadline_unix_ms) {
                    (Some(retry), Some(deadline)) => Some(retry.min(deadline)),
                    (retry, deadline) => retry.or(deadline),
                }
            }
            Phase::Finishing(_) | Phase::Done => None,
        }
    }

    /// The next progress event, oldest first. The driver MUST drain them (they queue up),
    /// and SHOULD show them outside any lock it holds.
    pub fn poll_event(&mut self) -> Option<ProgressEvent> {
        self.events.pop_front()
    }

    /// The upload's result, once (then `None`). Whatever is still in flight can be dropped.
    pub fn poll_finished(&mut self) -> Option<Result<Upload, UploadError<E>>> {
        if !matches!(self.phase, Phase::Finishing(_))
            || self.snapshot.busy
            || self.snapshot_action_pending()
        {
            return None;
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Finishing(result) => Some(result),
            _ => None,
        }
    }

    /// Whether the upload has ended and its result was taken.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn next_part(&mut self, now_unix_ms: u64) -> Option<Action> {
        if self.in_flight.len() >= self.concurrency || self.not_begun.is_some() {
            return None;
        }
        let run = self.run.as_mut()?;
        match run.next_step(now_unix_ms) {
            NextStep::Send(job) => {
                self.in_flight.insert(job.index);
                self.not_begun = Some(job.index);
                let upload_id = run.session().upload().id.clone();
                Some(Action::Send(Transmit::Part { upload_id, job }))
            }
            NextStep::Wait(_) | NextStep::Stop => None,
        }
    }

    fn snapshot_action_pending(&self) -> bool {
        self.snapshot.path.is_some() && (self.snapshot.remove || self.snapshot.dirty)
    }

    fn snapshot_action(&mut self) -> Option<Action> {
        if self.snapshot.busy {
            return None;
        }
        let path = self.snapshot.path.clone()?;
        if self.snapshot.remove {
            // Removed once; the path is forgotten so nothing writes it again.
            self.snapshot.path = None;
            self.snapshot.busy = true;
            return Some(Action::RemoveSnapshot { path });
        }
        if !self.snapshot.dirty {
            return None;
        }
        let json = self.run.as_ref()?.session().snapshot().to_json();
        self.snapshot.dirty = false;
        self.snapshot.busy = true;
        Some(Action::WriteSnapshot { path, json })
    }

    fn drain_run_events(&mut self) {
        if let Some(run) = &mut self.run {
            while let Some(event) = run.poll_event() {
                self.events.push_back(event);
            }
        }
    }

    /// Moves on from the parts phase or a retry wait, as the state allows at `now_unix_ms`.
    fn advance(&mut self, now_unix_ms: u64) {
        match &mut self.phase {
            Phase::Creating { state, .. }
            | Phase::Completing { state, .. }
            | Phase::Cancelling { state, .. } => {
                if matches!(*state, Request::WaitUntil(at) if at <= now_unix_ms) {
                    *state = Request::Ready;
                }
            }
            Phase::Parts => self.advance_parts(now_unix_ms),
            Phase::Finishing(_) | Phase::Done => {}
        }
    }

    fn advance_parts(&mut self, now_unix_ms: u64) {
        let Some(run) = &mut self.run else {
            return;
        };
        if self
            .deadline_unix_ms
            .is_some_and(|deadline| now_unix_ms >= deadline)
        {
            run.abort(AbortCause::Deadline);
        }
        if run.is_aborted() {
            let cause = match run.complete_request(None) {
                Err(cause) => cause,
                Ok(_) => AbortCause::Unfinished { missing: 0 },
            };
            self.drain_run_events();
            if !self.in_flight.is_empty() || self.digest == Digest::Hashing {
                self.actions.push_back(Action::StopParts);
            }
            self.in_flight.clear();
            self.not_begun = None;
            self.give_up(cause);
            return;
        }
        if !run.session().is_done() {
            return;
        }
        let md5 = match &self.digest {
            Digest::Off => None,
            Digest::Known(md5) => Some(md5.clone()),
            Digest::Wanted | Digest::Hashing | Digest::Failed => return,
        };
        match run.complete_request(md5) {
            Ok(request) => {
                self.phase = Phase::Completing {
                    request,
                    retries: RetryLoop::new(self.policy, self.deadline_unix_ms),
                    state: Request::Ready,
                };
            }
            Err(cause) => self.give_up(cause),
        }
    }

    /// Ends the upload for `cause`: cancels the Upload first unless it is kept.
    fn give_up(&mut self, cause: AbortCause<E>) {
        let cancel = match cause {
            AbortCause::Interrupted => self.stop == Some(StopMode::Cancel),
            _ => self.cancel_on_failure,
        };
        if cancel {
            self.phase = Phase::Cancelling {
                cause,
                retries: RetryLoop::new(self.policy, None),
                state: Request::Ready,
            };
        } else {
            self.finish_aborted(cause, false);
        }
    }

    fn finish_aborted(&mut self, cause: AbortCause<E>, cancelled: bool) {
        let Some(upload_id) = self.upload_id().cloned() else {
            return;
        };
        self.finish(Err(UploadError::Aborted {
            upload_id,
            cancelled,
            cause: Box::new(cause),
        }));
    }

    fn finish(&mut self, result: Result<Upload, UploadError<E>>) {
        self.phase = Phase::Finishing(result);
    }
}
