//! The whole client upload as one sans-IO state machine, in the style of quinn-proto:
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
//! Inputs come in through [`Uploader::handle`] (or the `handle_*` method of each report) and
//! [`Uploader::stop`]; outputs come out through the `poll_*` methods. The machine owns every
//! decision: when to retry (with the caller's jitter and the server's `Retry-After`), the
//! deadline, when a silent request has stalled, when to give up and whether to cancel, the
//! order parts start in, what the snapshot holds, and the progress events (which wind back
//! on a retried part). It reads no clock and draws no random numbers: `now` (unix
//! milliseconds) and `jitter` (in `[0, 1)`) are parameters.
//!
//! # The driver contract
//!
//! A driver MUST:
//! * start every [`Action`] that [`poll_action`](Uploader::poll_action) hands out at once, on
//!   a task or thread of its own (the machine bounds how many are in flight);
//! * answer every action that expects a report exactly once: a [`Transmit`] with the
//!   matching [`Report`] (build it with [`Transmit::into_request`] and [`Expect::report`]),
//!   [`Action::Hash`] with [`Report::Hashed`], [`Action::WriteSnapshot`] and
//!   [`Action::RemoveSnapshot`] with [`Report::SnapshotDone`]. A [`ReportGuard`] per action
//!   keeps that promise when a task panics or is dropped;
//! * report [`Report::Sent`] as a part's bytes go out: it is the progress, and the sign of
//!   life the stall rule reads;
//! * on [`Action::StopPart`] stop sending that attempt, on [`Action::StopRequest`] the
//!   create, complete or cancel in flight, on [`Action::StopHash`] the md5 pass. A task it
//!   stops this way SHOULD report nothing more (not even [`RequestError::Unanswered`]: the
//!   machine may have sent the request again, and would take that for its answer); a real
//!   answer that still comes is harmless;
//! * drain [`poll_event`](Uploader::poll_event) (events queue up) and show them outside any
//!   lock it holds;
//! * wait for the next report at most until [`poll_timeout`](Uploader::poll_timeout), then
//!   call [`handle_timeout`](Uploader::handle_timeout).
//!
//! A driver MUST NOT retry, sleep between attempts, time requests out for the machine, or
//! decide to cancel: a failed request is reported as it failed, in the core's terms:
//!
//! | what happened | report it as | retried |
//! |---|---|---|
//! | an answer with any status | the response, through [`Expect::report`] | 408, 409, 429, 5xx |
//! | no connection: refused, timed out, TLS failed | [`RequestError::Connect`] with the address and [`ConnectFailure`](crate::upload::ConnectFailure) | timed out; refused unless on this machine; never TLS |
//! | the driver's own timeout | [`RequestError::Timeout`] | yes |
//! | the connection broke after it was made | [`RequestError::Transport`] | yes |
//! | the source could not be read | [`RequestError::Source`] | never: the upload gives up |
//!
//! **The stall rule.** A request in flight that moves no bytes and gets no answer for
//! [`UploadOptions::stall_timeout`] has stalled: the machine fails it like a timeout and
//! retries it per the policy. It first hands out [`Action::StopPart`] (or
//! [`Action::StopRequest`]), so a driver with no timeout of its own never waits on a silent
//! server for ever. A complete
//! gets longer, in proportion to the Upload's size, since a service may read the whole
//! Upload back to check its md5 before it answers.
//!
//! # Parts in flight
//!
//! By default the machine chooses how many parts are in flight, up to
//! [`UploadOptions::concurrency`] (32 by default): it starts at 8, measures in windows of a
//! few round trips what the link carried, keeps more parts while they pay and fewer while
//! they carry as much, and backs off (a quarter, to half at most, and no new part before the
//! service's `Retry-After`) when the service throttles. [`UploadOptions::concurrency`] set through its
//! builder fixes the number instead. A driver does nothing for it but what the contract above
//! asks; reporting [`Report::Unacknowledged`] makes the measure exact (bytes that left the
//! machine, not bytes a socket buffered).
//!
//! Whenever the driver has nothing in flight, the machine has either finished or a
//! [`poll_timeout`](Uploader::poll_timeout): it cannot stall. A driver's loop:
//!
//! ```text
//!   loop {
//!       while let Some(action) = uploader.poll_action(now) { start it }   // Send / Hash / snapshots / Stop…
//!       let timeout = uploader.poll_timeout();
//!       while let Some(event) = uploader.poll_event() { show it }         // outside every lock
//!       if let Some(result) = uploader.poll_finished() { return result }
//!       wait for a report, at most until the timeout
//!       uploader.handle(report, now, jitter) | uploader.handle_timeout(now)
//!   }
//! ```
//!
//! ```
//! use uploads_core::types::{PartId, Purpose, Upload, UploadId, UploadStatus};
//! use uploads_core::upload::UploadOptions;
//! use uploads_core::uploader::{Action, Report, Transmit, Uploader};
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
//! uploader.handle(Report::Created(Ok(upload.clone())), now, 0.0);
//! // Both parts at once, in file order.
//! let Some(Action::Send(Transmit::Part { job: first, .. })) = uploader.poll_action(now) else { panic!() };
//! let Some(Action::Send(Transmit::Part { job: second, .. })) = uploader.poll_action(now) else { panic!() };
//! uploader.handle(Report::Part(second, Ok(PartId::new("part_b"))), now, 0.0);
//! uploader.handle(Report::Part(first, Ok(PartId::new("part_a"))), now, 0.0);
//! let Some(Action::Send(Transmit::Complete { request, .. })) = uploader.poll_action(now) else { panic!() };
//! assert_eq!(request.part_ids, [PartId::new("part_a"), PartId::new("part_b")]);
//! let completed = Upload { status: UploadStatus::Completed, ..upload };
//! uploader.handle(Report::Completed(Ok(completed.clone())), now, 0.0);
//! assert_eq!(uploader.poll_finished().unwrap().unwrap(), completed);
//! # Ok::<(), uploads_core::upload::OptionsError>(())
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::retry::{Failure, GiveUpReason, RetryDecision, RetryLoop, RetryPolicy};
use crate::types::{CompleteUploadRequest, CreateUploadRequest, PartId, Upload, UploadId};
use crate::upload::{AbortCause, OptionsError, RequestError, UploadError, UploadOptions};

#[cfg(test)]
mod clock_tests;
mod concurrency;
mod exchange;
mod guard;
mod parts;
mod plan;
mod progress;
mod snapshot;
#[cfg(test)]
mod tests;

use concurrency::{Adaptive, PartsInFlight};
pub use exchange::{Expect, OutgoingBody, PartBody, PartReader, SourceError};
pub use guard::ReportGuard;
use parts::Parts;
pub use plan::{CutHint, MIN_CUT, PartJob, PartPlan, PlanError, ROUNDS_PER_CONNECTION};
pub use progress::{PartFailure, Progress, ProgressEvent};
pub use snapshot::{
    Inconsistency, ResumeError, SNAPSHOT_VERSION, SessionSnapshot, SnapshotSource,
    source_fingerprint,
};

/// A request the driver sends; it reports the answer with the matching [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Transmit {
    /// Create the Upload; report [`Report::Created`].
    Create(CreateUploadRequest),
    /// Add `job`'s bytes as a Part; report [`Report::Sent`] as they go out and
    /// [`Report::Part`] at the end.
    Part {
        /// The Upload the part belongs to.
        upload_id: UploadId,
        /// Which bytes, and which attempt.
        job: PartJob,
    },
    /// Complete the Upload; report [`Report::Completed`].
    Complete {
        /// The Upload to complete.
        upload_id: UploadId,
        /// The ordered part ids and the md5.
        request: CompleteUploadRequest,
    },
    /// Cancel the Upload; report [`Report::Cancelled`].
    Cancel {
        /// The Upload to cancel.
        upload_id: UploadId,
    },
}

/// What the driver does next. Each kind is answered as its docs say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send a request.
    Send(Transmit),
    /// Hash `len` bytes of the source from `offset` with md5 (lower-case hex), beside the
    /// parts; report [`Report::Hashed`]. Asked once, for the whole source.
    Hash {
        /// Where the range starts (0).
        offset: u64,
        /// How many bytes (the whole source).
        len: u64,
    },
    /// Write `json` to `path`, atomically (a crash leaves the old file or the new one);
    /// report [`Report::SnapshotDone`]. Never two at once.
    WriteSnapshot {
        /// Where the snapshot lives.
        path: PathBuf,
        /// The session snapshot.
        json: String,
    },
    /// Remove the snapshot file: the Upload can no longer be resumed. Report
    /// [`Report::SnapshotDone`] (a failure is ignored).
    RemoveSnapshot {
        /// Where the snapshot lives.
        path: PathBuf,
    },
    /// Stop sending this attempt of a part (it stalled, or the upload gives up). No report
    /// is expected; one that still comes is ignored.
    StopPart(PartJob),
    /// Stop the create, complete or cancel request in flight (there is one at most): it
    /// stalled and is sent again. No report is expected; if one still comes, it is taken as
    /// the answer of the request sent again (they ask the service for the same thing).
    StopRequest,
    /// Stop the md5 pass (the upload gives up). Its report, if one still comes, is ignored.
    StopHash,
}

/// One report of the driver, for [`Uploader::handle`]: what a driver's tasks send back to
/// its loop (over a channel, say).
#[derive(Debug)]
pub enum Report<E> {
    /// `bytes` more bytes of the attempt `job` went out.
    Sent {
        /// The attempt, as [`Transmit::Part`] handed it out.
        job: PartJob,
        /// How many more bytes.
        bytes: u64,
    },
    /// The driver's connections hold `bytes` that were written to them but not yet
    /// acknowledged by the peer, over every connection, at this moment (on Linux the sum of
    /// each socket's `SIOCOUTQ`). Optional: a driver that can see its sockets reports it at
    /// every wake-up, and progress then counts what has left the machine
    /// ([`Progress::bytes_delivered`]), not what was handed to a socket.
    Unacknowledged {
        /// Bytes written but not acknowledged, over every connection.
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

/// How fast a service is assumed to read an Upload back when it checks the md5 at complete:
/// a complete may stay silent this long per byte before it has stalled.
const COMPLETE_READ_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// How often a driver that reports [`Report::Unacknowledged`] is woken to sample its
/// sockets again while parts are in flight: progress a person watches moves smoothly.
pub const SAMPLE_INTERVAL_MS: u64 = 200;

/// Where one request of the machine's own (create, complete, cancel) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// To be sent at the next [`Uploader::poll_action`].
    Ready,
    /// Sent at this time.
    InFlight { since_unix_ms: u64 },
    /// A retry, due at this time.
    WaitUntil(u64),
}

/// One of the machine's own requests and its retries.
#[derive(Debug)]
struct Exchange {
    retries: RetryLoop,
    state: Request,
    /// How long it may stay silent before it has stalled.
    stall_ms: u64,
}

impl Exchange {
    fn new(policy: RetryPolicy, deadline_unix_ms: Option<u64>, stall_ms: u64) -> Self {
        Self {
            retries: RetryLoop::new(policy, deadline_unix_ms),
            state: Request::Ready,
            stall_ms,
        }
    }

    /// Sends it if it is ready: returns whether to.
    fn take_ready(&mut self, now_unix_ms: u64) -> bool {
        let ready = self.state == Request::Ready;
        if ready {
            self.state = Request::InFlight {
                since_unix_ms: now_unix_ms,
            };
        }
        ready
    }

    /// How long the request has been in flight at `now_unix_ms`, if it is.
    fn in_flight_for(&self, now_unix_ms: u64) -> Option<u64> {
        match self.state {
            Request::InFlight { since_unix_ms } => Some(now_unix_ms.saturating_sub(since_unix_ms)),
            Request::Ready | Request::WaitUntil(_) => None,
        }
    }

    /// Whether an answer now is one the machine waits for.
    fn awaits_answer(&self) -> bool {
        matches!(self.state, Request::InFlight { .. })
    }

    /// A failed attempt: schedules the retry, or says why to give up.
    fn fail(
        &mut self,
        failure: Option<&Failure>,
        now_unix_ms: u64,
        jitter: f64,
    ) -> Result<(), GiveUpReason> {
        match self.retries.on_failure(failure, now_unix_ms, jitter) {
            RetryDecision::RetryAt { at_unix_ms, .. } => {
                self.state = Request::WaitUntil(at_unix_ms);
                Ok(())
            }
            RetryDecision::GiveUp(reason) => Err(reason),
        }
    }

    /// When the machine next looks at it: a retry's time, or when it stalls.
    fn timeout(&self) -> Option<u64> {
        match self.state {
            Request::Ready => None,
            Request::InFlight { since_unix_ms } => {
                Some(since_unix_ms.saturating_add(self.stall_ms))
            }
            Request::WaitUntil(at) => Some(at),
        }
    }

    /// A retry whose time has come becomes ready; returns how long the request in flight
    /// stayed silent if it has stalled at `now_unix_ms`.
    fn advance(&mut self, now_unix_ms: u64) -> Option<u64> {
        match self.state {
            Request::WaitUntil(at) if at <= now_unix_ms => {
                self.state = Request::Ready;
                None
            }
            Request::InFlight { since_unix_ms } => (since_unix_ms.saturating_add(self.stall_ms)
                <= now_unix_ms)
                .then_some(self.stall_ms),
            Request::Ready | Request::WaitUntil(_) => None,
        }
    }
}

/// The machine's phase.
enum Phase<E> {
    Creating {
        request: CreateUploadRequest,
        plan: PartPlan,
        source: Option<String>,
        exchange: Exchange,
    },
    Parts,
    Completing {
        request: CompleteUploadRequest,
        exchange: Exchange,
    },
    Cancelling {
        cause: AbortCause<E>,
        exchange: Exchange,
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
    /// The pass failed or was stopped.
    Failed,
}

/// The snapshot file: one write or removal at a time, always of the latest state.
#[derive(Debug)]
struct SnapshotFile {
    /// Where it lives; forgotten once it is removed.
    path: Option<PathBuf>,
    /// A write or removal is under way.
    busy: bool,
    /// The parts changed since the last write.
    dirty: bool,
    /// The Upload can no longer be resumed: remove the file.
    remove: bool,
}

/// The whole client upload. See the [module docs](self).
pub struct Uploader<E> {
    phase: Phase<E>,
    /// The parts, from the Upload's creation (or the resume) on.
    parts: Option<Parts>,
    /// Why the parts phase gives up; the first cause wins.
    abort: Option<AbortCause<E>>,
    policy: RetryPolicy,
    deadline_unix_ms: Option<u64>,
    in_flight: PartsInFlight,
    stall_ms: u64,
    /// The caller's latest jitter, for the retries the machine schedules on its own (a
    /// stalled request found at a timeout).
    jitter: f64,
    cancel_on_failure: bool,
    stop: Option<StopMode>,
    /// When the driver last reported its sockets' unacknowledged bytes, if it does.
    sampled_at_unix_ms: Option<u64>,
    file_size: u64,
    digest: Digest,
    snapshot: SnapshotFile,
    actions: VecDeque<Action>,
    events: VecDeque<ProgressEvent>,
}

impl<E> std::fmt::Debug for Uploader<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("parts_in_flight", &self.parts_in_flight())
            .field("digest", &self.digest)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl<E> Uploader<E> {
    /// A new upload of a source of `size` bytes named `source_name` (the File's name unless
    /// the options set one), with `fingerprint` (see [`source_fingerprint`]) kept in
    /// snapshots, starting at `now_unix_ms`: the options are checked before anything is sent.
    pub fn new(
        options: &UploadOptions,
        source_name: &str,
        size: u64,
        fingerprint: Option<String>,
        now_unix_ms: u64,
    ) -> Result<Self, OptionsError> {
        let (request, plan) = options.prepare(source_name, size)?;
        let deadline = options.deadline_unix_ms(now_unix_ms);
        let stall_ms = duration_ms(options.stall_timeout);
        let phase = Phase::Creating {
            request,
            plan,
            source: fingerprint,
            exchange: Exchange::new(options.retry, deadline, stall_ms),
        };
        Ok(Self::with_phase(options, phase, deadline, size))
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
        options.check()?;
        let changed = match &snapshot.source {
            Some(expected) => expected != fingerprint,
            None => size != snapshot.file_size,
        };
        if changed {
            return Err(UploadError::SourceChanged {
                expected: snapshot
                    .source
                    .unwrap_or_else(|| format!("{} bytes", snapshot.file_size)),
                found: fingerprint.to_owned(),
            });
        }
        let deadline = options.deadline_unix_ms(now_unix_ms);
        let parts = Parts::resume(
            snapshot,
            &options.limits,
            options.retry,
            now_unix_ms,
            deadline,
        )?
        .with_source(fingerprint);
        let mut uploader = Self::with_phase(options, Phase::Parts, deadline, size);
        uploader.start_parts(parts);
        Ok(uploader)
    }

    fn with_phase(
        options: &UploadOptions,
        phase: Phase<E>,
        deadline_unix_ms: Option<u64>,
        file_size: u64,
    ) -> Self {
        Self {
            phase,
            parts: None,
            abort: None,
            policy: options.retry,
            deadline_unix_ms,
            in_flight: {
                let max = u32::try_from(options.concurrency).unwrap_or(u32::MAX);
                if options.adaptive {
                    PartsInFlight::Adaptive(Adaptive::new(max))
                } else {
                    PartsInFlight::Fixed(max)
                }
            },
            stall_ms: duration_ms(options.stall_timeout),
            jitter: 0.5,
            cancel_on_failure: options.cancel_on_failure,
            stop: None,
            sampled_at_unix_ms: None,
            file_size,
            digest: if options.md5 {
                Digest::Wanted
            } else {
                Digest::Off
            },
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

    fn start_parts(&mut self, parts: Parts) {
        self.phase = Phase::Parts;
        self.parts = Some(parts);
        self.snapshot.dirty = true;
        if self.digest == Digest::Wanted {
            self.digest = Digest::Hashing;
            self.actions.push_back(Action::Hash {
                offset: 0,
                len: self.file_size,
            });
        }
    }

    /// The Upload being filled, once it exists.
    pub fn upload(&self) -> Option<&Upload> {
        self.parts.as_ref().map(Parts::upload)
    }

    /// The Upload's id, once it exists.
    pub fn upload_id(&self) -> Option<&UploadId> {
        self.upload().map(|upload| &upload.id)
    }

    /// Bytes and parts so far, once the Upload exists.
    pub fn progress(&self) -> Option<Progress> {
        self.parts.as_ref().map(Parts::progress)
    }

    /// What a resume needs, once the Upload exists.
    pub fn snapshot(&self) -> Option<SessionSnapshot> {
        self.parts.as_ref().map(Parts::snapshot)
    }

    /// The caller's deadline for the whole upload, in unix milliseconds, if it has one.
    pub fn deadline_unix_ms(&self) -> Option<u64> {
        self.deadline_unix_ms
    }

    /// How long `transmit` may move no bytes and get no answer before the stall rule gives
    /// up on it. A driver that cannot cut a blocking request short (it waits for the answer
    /// on a thread) bounds its wait for the answer by this, so the thread ends about when the
    /// machine stops waiting for it.
    pub fn stall_timeout(&self, transmit: &Transmit) -> std::time::Duration {
        std::time::Duration::from_millis(match transmit {
            Transmit::Complete { .. } => self.complete_stall_ms(),
            Transmit::Create(_) | Transmit::Part { .. } | Transmit::Cancel { .. } => self.stall_ms,
        })
    }

    /// A complete's stall time: the service may read the whole Upload back to check the md5
    /// before it answers.
    fn complete_stall_ms(&self) -> u64 {
        let reading_back_ms = self.file_size.saturating_mul(1000) / COMPLETE_READ_BYTES_PER_SEC;
        self.stall_ms.saturating_add(reading_back_ms)
    }

    /// How many parts the machine lets be in flight now: the caller's number when it is
    /// fixed, the level found so far when it adapts.
    pub fn parts_in_flight_limit(&self) -> usize {
        self.in_flight.limit() as usize
    }

    /// How many parts are in flight.
    pub fn parts_in_flight(&self) -> usize {
        self.parts
            .as_ref()
            .map_or(0, |parts| parts.in_flight() as usize)
    }

    /// Takes `report` in at `now_unix_ms`, with `jitter` in `[0, 1)` for any retry it
    /// schedules. A report the machine no longer waits for (of an attempt it stopped, or
    /// after the upload ended) changes nothing.
    pub fn handle(&mut self, report: Report<E>, now_unix_ms: u64, jitter: f64) {
        self.jitter = jitter;
        match report {
            Report::Sent { job, bytes } => self.handle_bytes_sent(job, bytes, now_unix_ms),
            Report::Unacknowledged { bytes } => self.handle_unacknowledged(bytes, now_unix_ms),
            Report::Part(job, result) => self.handle_part_result(job, result, now_unix_ms, jitter),
            Report::Created(result) => self.handle_created(result, now_unix_ms, jitter),
            Report::Completed(result) => self.handle_completed(result, now_unix_ms, jitter),
            Report::Cancelled(result) => self.handle_cancelled(result, now_unix_ms, jitter),
            Report::Hashed(result) => self.handle_hashed(result, now_unix_ms),
            Report::SnapshotDone(result) => self.handle_snapshot_done(result, now_unix_ms),
        }
    }

    /// Reports create's answer at `now_unix_ms`: the parts phase starts, or a failure is
    /// retried per the policy (with `jitter` in `[0, 1)`), or ends the upload.
    pub fn handle_created(
        &mut self,
        result: Result<Upload, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        let Phase::Creating { exchange, .. } = &mut self.phase else {
            return;
        };
        if !exchange.awaits_answer() {
            return;
        }
        let round_trip_ms = exchange.in_flight_for(now_unix_ms);
        match result {
            Ok(upload) => {
                if let (PartsInFlight::Adaptive(adaptive), Some(round_trip_ms)) =
                    (&mut self.in_flight, round_trip_ms)
                {
                    *adaptive = adaptive.clone().with_round_trip(round_trip_ms);
                }
                let Phase::Creating { plan, source, .. } =
                    std::mem::replace(&mut self.phase, Phase::Parts)
                else {
                    return;
                };
                let expires_locally_at = local_expiry(&upload, now_unix_ms);
                let mut parts = Parts::new(upload, plan, self.policy, self.deadline_unix_ms)
                    .expiring_locally_at(expires_locally_at);
                if let Some(source) = source {
                    parts = parts.with_source(source);
                }
                self.start_parts(parts);
            }
            Err(error) => {
                if exchange
                    .fail(error.as_failure(now_unix_ms).as_ref(), now_unix_ms, jitter)
                    .is_err()
                {
                    self.finish(Err(UploadError::Create(error)));
                }
            }
        }
        self.advance(now_unix_ms);
    }

    /// Reports that `bytes` more bytes of the attempt `job` went out at `now_unix_ms`.
    pub fn handle_bytes_sent(&mut self, job: PartJob, bytes: u64, now_unix_ms: u64) {
        if let (Phase::Parts, Some(parts)) = (&self.phase, &mut self.parts) {
            parts.handle_bytes_sent(job, bytes, now_unix_ms);
            self.drain_part_events();
        }
    }

    /// Reports that the driver's connections hold `bytes` written but not yet acknowledged
    /// by the peer at `now_unix_ms` (see [`Report::Unacknowledged`]). From the first such
    /// report on, the machine asks for a wake-up every [`SAMPLE_INTERVAL_MS`] while parts
    /// are in flight, so that the driver samples its sockets again.
    pub fn handle_unacknowledged(&mut self, bytes: u64, now_unix_ms: u64) {
        self.sampled_at_unix_ms = Some(now_unix_ms);
        if let (Phase::Parts, Some(parts)) = (&self.phase, &mut self.parts) {
            parts.handle_unacknowledged(bytes);
            self.drain_part_events();
        }
    }

    /// Reports how sending `job` ended at `now_unix_ms`: stored as a part id, or failed (then
    /// retried per the policy with `jitter` in `[0, 1)`, or given up). A part stored after
    /// the upload gave up still counts: the snapshot keeps it for a resume.
    pub fn handle_part_result(
        &mut self,
        job: PartJob,
        result: Result<PartId, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) {
        self.check_deadline(now_unix_ms);
        if matches!(self.phase, Phase::Parts) {
            match result {
                Ok(part_id) => {
                    if let Some(parts) = &mut self.parts
                        && parts.handle_part_done(job, part_id)
                    {
                        self.snapshot.dirty = true;
                    }
                }
                Err(error) if self.abort.is_none() => {
                    self.part_failed(job, error, now_unix_ms, jitter);
                }
                // The upload gives up already: the attempt is over, nothing to stop.
                Err(_) => {
                    if let Some(parts) = &mut self.parts {
                        parts.abandon(job);
                    }
                }
            }
            self.drain_part_events();
        }
        self.advance(now_unix_ms);
    }

    /// A part attempt failed: a retry is scheduled, or the upload gives up.
    fn part_failed(&mut self, job: PartJob, error: RequestError<E>, now_unix_ms: u64, jitter: f64) {
        // A late report of an attempt the machine stopped (it stalled) says nothing.
        let Some(parts) = self.parts.as_mut().filter(|parts| parts.is_in_flight(job)) else {
            return;
        };
        let failure = match error {
            // Not the part's fault, and no retry can fix it.
            RequestError::Source(error) => {
                parts.abandon(job);
                return self.abort_parts(AbortCause::Source(error));
            }
            ref error => error.as_failure(now_unix_ms),
        };
        let reason = match failure {
            None => {
                parts.abandon(job);
                GiveUpReason::CannotSend
            }
            Some(failure) => {
                if let Some(retry_after_ms) = failure.throttling() {
                    self.in_flight.throttled(now_unix_ms, retry_after_ms);
                }
                match parts.handle_part_failed(job, failure.clone(), now_unix_ms, jitter) {
                    None | Some(RetryDecision::RetryAt { .. }) => return,
                    Some(RetryDecision::GiveUp(reason)) => {
                        self.events.push_back(ProgressEvent::GaveUp(PartFailure {
                            part: job.index,
                            attempts: job.attempt,
                            failure,
                            reason,
                        }));
                        reason
                    }
                }
            }
        };
        self.abort_parts(AbortCause::Part {
            part: job.index,
            reason,
            error,
        });
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
                self.abort_parts(AbortCause::Source(error));
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
            self.abort_parts(AbortCause::Snapshot(error));
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
        let Phase::Completing { exchange, .. } = &mut self.phase else {
            return;
        };
        if !exchange.awaits_answer() {
            return;
        }
        match result {
            Ok(upload) => {
                self.snapshot.remove = true;
                self.finish(Ok(upload));
            }
            Err(error) => {
                if exchange
                    .fail(error.as_failure(now_unix_ms).as_ref(), now_unix_ms, jitter)
                    .is_err()
                {
                    self.give_up(AbortCause::Complete(error));
                }
            }
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
        let Phase::Cancelling { exchange, .. } = &mut self.phase else {
            return;
        };
        if !exchange.awaits_answer() {
            return;
        }
        let cancelled = match result {
            Ok(_) => true,
            Err(error) => {
                if exchange
                    .fail(error.as_failure(now_unix_ms).as_ref(), now_unix_ms, jitter)
                    .is_ok()
                {
                    return;
                }
                false
            }
        };
        self.finish_cancelling(cancelled);
        self.advance(now_unix_ms);
    }

    fn finish_cancelling(&mut self, cancelled: bool) {
        let Phase::Cancelling { cause, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        self.snapshot.remove = cancelled;
        self.finish_aborted(cause, cancelled);
    }

    /// Time has come to `now_unix_ms`: a retry may be due, a request may have stalled, or
    /// the deadline may have passed.
    pub fn handle_timeout(&mut self, now_unix_ms: u64) {
        self.advance(now_unix_ms);
    }

    /// The caller stops the upload at `now_unix_ms`: nothing new is sent, parts in flight are
    /// stopped, and the Upload is kept for a resume or cancelled as `mode` says. The result
    /// is [`AbortCause::Interrupted`] (or [`UploadError::Interrupted`] before the Upload
    /// exists). A stop once the upload is completing or finishing changes nothing.
    pub fn stop(&mut self, mode: StopMode, now_unix_ms: u64) {
        match self.phase {
            Phase::Creating { .. } => self.finish(Err(UploadError::Interrupted)),
            Phase::Parts => {
                self.stop.get_or_insert(mode);
                self.abort_parts(AbortCause::Interrupted);
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
        let upload_id = self.upload_id().cloned();
        match &mut self.phase {
            Phase::Creating {
                request, exchange, ..
            } => exchange
                .take_ready(now_unix_ms)
                .then(|| Action::Send(Transmit::Create(request.clone()))),
            Phase::Parts => self.next_part(now_unix_ms),
            Phase::Completing { request, exchange } => {
                let upload_id = upload_id?;
                exchange.take_ready(now_unix_ms).then(|| {
                    Action::Send(Transmit::Complete {
                        upload_id,
                        request: request.clone(),
                    })
                })
            }
            Phase::Cancelling { exchange, .. } => {
                let upload_id = upload_id?;
                exchange
                    .take_ready(now_unix_ms)
                    .then_some(Action::Send(Transmit::Cancel { upload_id }))
            }
            Phase::Finishing(_) | Phase::Done => None,
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) at the latest, in unix
    /// milliseconds, if the machine waits for time to pass.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.phase {
            Phase::Creating { exchange, .. }
            | Phase::Completing { exchange, .. }
            | Phase::Cancelling { exchange, .. } => exchange.timeout(),
            Phase::Parts => {
                let parts = self.parts.as_ref()?;
                let room = parts.in_flight() < self.in_flight.limit();
                // A retry waits for room, and for a pause of new starts to end.
                let retry = parts
                    .next_wakeup()
                    .filter(|_| room)
                    .map(|at| at.max(self.in_flight.paused_until().unwrap_or(0)));
                let tuning = self
                    .in_flight
                    .next_wakeup()
                    .filter(|_| self.abort.is_none());
                let stall = parts
                    .least_recently_active()
                    .map(|at| at.saturating_add(self.stall_ms));
                let sample = self
                    .sampled_at_unix_ms
                    .filter(|_| parts.in_flight() > 0)
                    .map(|at| at.saturating_add(SAMPLE_INTERVAL_MS));
                [retry, stall, sample, tuning, self.deadline_unix_ms]
                    .into_iter()
                    .flatten()
                    .min()
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
        if self.abort.is_some() {
            return None;
        }
        let parts = self.parts.as_mut()?;
        if parts.in_flight() >= self.in_flight.limit() || !self.in_flight.may_start(now_unix_ms) {
            return None;
        }
        let hint = CutHint {
            level: self.in_flight.cut_level(),
            throttled: self.in_flight.throttled_lately(now_unix_ms),
            min_len: self.in_flight.part_worth_a_request(),
        };
        let job = parts.next_job(now_unix_ms, hint)?;
        let upload_id = parts.upload().id.clone();
        Some(Action::Send(Transmit::Part { upload_id, job }))
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
        let json = self.parts.as_ref()?.snapshot().to_json();
        self.snapshot.dirty = false;
        self.snapshot.busy = true;
        Some(Action::WriteSnapshot { path, json })
    }

    fn drain_part_events(&mut self) {
        if let Some(parts) = &mut self.parts {
            while let Some(event) = parts.poll_event() {
                self.events.push_back(event);
            }
        }
    }

    /// Gives the parts phase up for `cause`, unless it gave up already (the first cause
    /// wins): no part is handed out any more.
    fn abort_parts(&mut self, cause: AbortCause<E>) {
        self.abort.get_or_insert(cause);
    }

    /// The one place the caller's deadline is checked: once it has come, the parts phase
    /// gives up (a failure reported from then on was likely cut short by it).
    fn check_deadline(&mut self, now_unix_ms: u64) {
        if matches!(self.phase, Phase::Parts)
            && self
                .deadline_unix_ms
                .is_some_and(|deadline| now_unix_ms >= deadline)
        {
            self.abort_parts(AbortCause::Deadline);
        }
    }

    /// Moves on as the state allows at `now_unix_ms`: a retry wait ends, a stalled request
    /// fails, the parts phase completes or gives up.
    fn advance(&mut self, now_unix_ms: u64) {
        self.check_deadline(now_unix_ms);
        let stalled = match &mut self.phase {
            Phase::Creating { exchange, .. }
            | Phase::Completing { exchange, .. }
            | Phase::Cancelling { exchange, .. } => exchange.advance(now_unix_ms),
            Phase::Parts => {
                self.advance_parts(now_unix_ms);
                None
            }
            Phase::Finishing(_) | Phase::Done => None,
        };
        if let Some(silent_ms) = stalled {
            self.actions.push_back(Action::StopRequest);
            self.request_stalled(silent_ms, now_unix_ms);
        }
    }

    /// The machine's own request in flight has stalled: it fails as a timeout would.
    fn request_stalled(&mut self, silent_ms: u64, now_unix_ms: u64) {
        let stalled = RequestError::Stalled(std::time::Duration::from_millis(silent_ms));
        let jitter = self.jitter;
        match &self.phase {
            Phase::Creating { .. } => self.handle_created(Err(stalled), now_unix_ms, jitter),
            Phase::Completing { .. } => self.handle_completed(Err(stalled), now_unix_ms, jitter),
            Phase::Cancelling { .. } => self.handle_cancelled(Err(stalled), now_unix_ms, jitter),
            Phase::Parts | Phase::Finishing(_) | Phase::Done => {}
        }
    }

    fn advance_parts(&mut self, now_unix_ms: u64) {
        if self.abort.is_none() {
            self.stop_stalled_parts(now_unix_ms);
        }
        let Some(parts) = &mut self.parts else {
            return;
        };
        self.in_flight.tick(now_unix_ms, parts.bytes_carried());
        if let Some(cause) = self.abort.take() {
            for job in parts.in_flight_jobs().collect::<Vec<_>>() {
                self.actions.push_back(Action::StopPart(job));
            }
            if self.digest == Digest::Hashing {
                self.digest = Digest::Failed;
                self.actions.push_back(Action::StopHash);
            }
            self.give_up(cause);
            return;
        }
        if !parts.all_done() {
            return;
        }
        let md5 = match &self.digest {
            Digest::Off => None,
            Digest::Known(md5) => Some(md5.clone()),
            Digest::Wanted | Digest::Hashing | Digest::Failed => return,
        };
        // Every part is stored, so the request lists them all.
        let Some(request) = parts.complete_request(md5) else {
            return;
        };
        self.phase = Phase::Completing {
            request,
            exchange: Exchange::new(self.policy, self.deadline_unix_ms, self.complete_stall_ms()),
        };
    }

    /// Fails every part attempt that has not moved for the stall time, as a timeout would,
    /// and tells the driver to stop it.
    fn stop_stalled_parts(&mut self, now_unix_ms: u64) {
        let Some(parts) = &self.parts else {
            return;
        };
        let stalled = parts.stalled(now_unix_ms.saturating_sub(self.stall_ms));
        for job in stalled {
            self.actions.push_back(Action::StopPart(job));
            let timeout = RequestError::Stalled(std::time::Duration::from_millis(self.stall_ms));
            self.part_failed(job, timeout, now_unix_ms, spread(self.jitter, job.index));
            self.drain_part_events();
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
                exchange: Exchange::new(self.policy, None, self.stall_ms),
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

/// The caller's `jitter` moved along for part `index`, so parts that fail together (a stall
/// found at one timeout) do not retry together.
fn spread(jitter: f64, index: u32) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    (jitter + f64::from(index) * GOLDEN).fract()
}

/// When an Upload create answered at `answered_unix_ms` expires by this machine's clock:
/// its lifetime (`expires_at - created_at`, both on the service's clock) from then. The two
/// clocks may disagree by hours; the lifetime does not depend on either.
fn local_expiry(upload: &Upload, answered_unix_ms: u64) -> u64 {
    let lifetime_secs = upload.expires_at.saturating_sub(upload.created_at);
    answered_unix_ms.saturating_add(lifetime_secs.saturating_mul(1000))
}

/// `duration` in whole milliseconds, saturating.
fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
