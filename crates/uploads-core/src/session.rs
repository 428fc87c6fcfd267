//! The uploader's state machine: one [`UploadSession`] per Upload, from the Upload that create
//! returned to the complete request.
//!
//! Each part moves like this:
//!
//! ```text
//!              next_job                       handle_part_done
//!   Pending ─────────────▶ InFlight ──────────────────────────────▶ Done
//!      ▲                    │    ▲
//!      │                    │    │ next_job, once now >= the retry time
//!      │                    │    │
//!      │ resume             │  Waiting ◀── RetryAt ──┐
//!      │ (in flight and     │                        │
//!      │  waiting parts     └── handle_part_failed ──┤
//!      │  start over)                                └── GiveUp ──▶ the session is Failed
//! ```
//!
//! and the session as a whole:
//!
//! ```text
//!   Uploading ──── every part Done ────▶ ReadyToComplete ── complete_request() ──▶ (send it)
//!       │
//!       └───── a part gives up ────────▶ Failed(SessionFailure)          (cancel the Upload)
//! ```
//!
//! The session does no I/O and reads no clock: `now` (unix milliseconds) and the retry
//! jitter are parameters. An adapter runs as many workers as it likes; each asks
//! [`UploadSession::next_job`] for a part, sends it, and reports the outcome with
//! [`UploadSession::handle_part_done`] or [`UploadSession::handle_part_failed`]. A part is
//! never handed out twice while in flight, results may arrive in any order, and the complete
//! request lists the part ids in file order. Progress events queue up for
//! [`UploadSession::poll_event`]; the adapter MUST drain them, or they accumulate.
//!
//! A worker that gets no job has three cases: [`UploadSession::is_done`] (stop), a
//! [`UploadSession::next_wakeup`] (sleep until then, or until another worker reports), or
//! neither (other parts are in flight: wait for their results, one of which may schedule a
//! retry).
//!
//! [`UploadSession::snapshot`] captures the Upload and the part ids received so far as JSON;
//! [`UploadSession::resume`] restores it after a crash and hands out only the missing parts.
//!
//! A three-part upload from start to complete request:
//!
//! ```
//! use uploads_core::limits::Limits;
//! use uploads_core::retry::RetryPolicy;
//! use uploads_core::session::{PartJob, PartPlan, ProgressEvent, SessionState, UploadSession};
//! use uploads_core::types::{PartId, Purpose, Upload, UploadId, UploadStatus};
//!
//! let upload = Upload {
//!     id: UploadId::new("upload_abc123"),
//!     object: "upload".to_owned(),
//!     bytes: 10,
//!     created_at: 1_719_184_911,
//!     filename: "train.jsonl".to_owned(),
//!     purpose: Purpose::FineTune,
//!     status: UploadStatus::Pending,
//!     expires_at: 1_719_188_511,
//!     file: None,
//! };
//! // Ten bytes in parts of four: 4 + 4 + 2.
//! let plan = PartPlan::new(10, 4, &Limits::default())?;
//! let mut session = UploadSession::new(upload, plan, RetryPolicy::default(), None);
//! let now = 1_719_184_912_000;
//!
//! // Three workers take one part each; then every part is in flight.
//! let jobs = [
//!     session.next_job(now).unwrap(),
//!     session.next_job(now).unwrap(),
//!     session.next_job(now).unwrap(),
//! ];
//! assert_eq!(jobs[0], PartJob { index: 0, offset: 0, len: 4, attempt: 1 });
//! assert_eq!(jobs[1], PartJob { index: 1, offset: 4, len: 4, attempt: 1 });
//! assert_eq!(jobs[2], PartJob { index: 2, offset: 8, len: 2, attempt: 1 });
//! assert_eq!(session.next_job(now), None);
//!
//! // The answers arrive in any order...
//! session.handle_part_done(2, PartId::new("part_c"));
//! session.handle_part_done(0, PartId::new("part_a"));
//! assert_eq!(session.state(), SessionState::Uploading);
//! session.handle_part_done(1, PartId::new("part_b"));
//! assert_eq!(session.state(), SessionState::ReadyToComplete);
//! assert_eq!(
//!     session.poll_event(),
//!     Some(ProgressEvent::BytesSent { part: 2, bytes: 2, total_sent: 2, total: 10 })
//! );
//!
//! // ...and the complete request lists them in file order.
//! let complete = session.complete_request(None).unwrap();
//! let ids = [PartId::new("part_a"), PartId::new("part_b"), PartId::new("part_c")];
//! assert_eq!(complete.part_ids, ids);
//! # Ok::<(), uploads_core::session::PlanError>(())
//! ```

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::retry::{Failure, GiveUpReason, RetryDecision, RetryPolicy};
use crate::types::{CompleteUploadRequest, PartId, Upload, UploadId, UploadStatus};

/// The snapshot format this version writes, and the only one it reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// How a file is cut into parts: every part `part_size` bytes but the last, which may be
/// shorter. Validated against the service's [`Limits`] before any request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    file_size: u64,
    part_size: u64,
    count: u32,
}

/// Why a file cannot be cut into parts as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A part must hold at least one byte.
    #[error("part size must be at least 1 byte")]
    ZeroPartSize,
    /// The part size is over the service's part limit.
    #[error("part size {part_size} is over the part limit of {max} bytes")]
    PartTooLarge {
        /// The part size asked for.
        part_size: u64,
        /// The largest part the service accepts.
        max: u64,
    },
    /// The file is over the service's upload limit.
    #[error("file size {file_size} is over the upload limit of {max} bytes")]
    FileTooLarge {
        /// The file's size.
        file_size: u64,
        /// The largest Upload the service accepts.
        max: u64,
    },
    /// More parts than the service accepts in one Upload.
    #[error(
        "the file would need {count} parts, over the limit of {max}: use parts of at least \
         {smallest_part_size} bytes"
    )]
    TooManyParts {
        /// How many parts the plan would need.
        count: u64,
        /// The most parts the service accepts in one Upload.
        max: u64,
        /// The smallest part size that cuts the file into at most `max` parts.
        smallest_part_size: u64,
    },
}

impl PartPlan {
    /// Plans `file_size` bytes in parts of `part_size`. A zero-byte file is one empty part,
    /// because the service refuses to complete an Upload with no parts.
    pub fn new(file_size: u64, part_size: u64, limits: &Limits) -> Result<Self, PlanError> {
        if part_size == 0 {
            return Err(PlanError::ZeroPartSize);
        }
        if part_size > limits.max_part_bytes {
            return Err(PlanError::PartTooLarge {
                part_size,
                max: limits.max_part_bytes,
            });
        }
        if file_size > limits.max_upload_bytes {
            return Err(PlanError::FileTooLarge {
                file_size,
                max: limits.max_upload_bytes,
            });
        }
        let count = file_size.div_ceil(part_size).max(1);
        let max = limits.max_parts_per_upload.min(u64::from(u32::MAX));
        if count > max {
            return Err(PlanError::TooManyParts {
                count,
                max,
                smallest_part_size: file_size.div_ceil(max.max(1)),
            });
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(Self {
            file_size,
            part_size,
            count,
        })
    }

    /// The size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The size of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// How many parts there are (at least one).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Part `index` as a first attempt, or `None` past the last part.
    pub fn part(&self, index: u32) -> Option<PartJob> {
        (index < self.count).then(|| {
            let offset = u64::from(index) * self.part_size;
            PartJob {
                index,
                offset,
                len: self.part_size.min(self.file_size.saturating_sub(offset)),
                attempt: 1,
            }
        })
    }

    /// Every part in file order, as first attempts.
    pub fn parts(&self) -> impl Iterator<Item = PartJob> + use<> {
        let plan = *self;
        (0..plan.count).filter_map(move |index| plan.part(index))
    }

    /// The length of part `index` (0 past the last part).
    fn part_len(&self, index: u32) -> u64 {
        self.part(index).map_or(0, |part| part.len)
    }
}

/// One part to send: `len` bytes of the file from `offset`, as attempt number `attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartJob {
    /// The part's position in the file, from 0; report results under this index.
    pub index: u32,
    /// Where the part's bytes start in the file.
    pub offset: u64,
    /// How many bytes the part holds (0 only for the one part of an empty file).
    pub len: u64,
    /// Which attempt this is for the part, from 1.
    pub attempt: u32,
}

/// Where an [`UploadSession`] is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// Parts remain to be sent or are in flight.
    Uploading,
    /// Every part is done: send [`UploadSession::complete_request`].
    ReadyToComplete,
    /// A part failed for good; the Upload should be cancelled.
    Failed(SessionFailure),
}

/// The part failure that ended a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("part {part} gave up after {attempts} attempt(s): {reason}")]
pub struct SessionFailure {
    /// The index of the part that gave up.
    pub part: u32,
    /// How many attempts were made for it.
    pub attempts: u32,
    /// What went wrong with the last attempt.
    #[source]
    pub failure: Failure,
    /// Why it was not retried.
    pub reason: GiveUpReason,
}

/// Something an adapter may show the user, queued by the `handle_*` methods and taken out
/// with [`UploadSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// More bytes of a part went out.
    BytesSent {
        /// The part's index.
        part: u32,
        /// The bytes this report added.
        bytes: u64,
        /// Bytes sent over all parts, not counting those of failed attempts.
        total_sent: u64,
        /// The file's size.
        total: u64,
    },
    /// A part failed and will be sent again; its bytes no longer count as sent.
    PartRetry {
        /// The part's index.
        part: u32,
        /// The number of the coming attempt.
        attempt: u32,
        /// How long until it may start.
        delay_ms: u64,
        /// The bytes of the failed attempt taken off the total.
        bytes_wound_back: u64,
        /// Bytes sent over all parts after the wind-back.
        total_sent: u64,
        /// What went wrong.
        failure: Failure,
    },
    /// A part is stored by the service.
    PartDone {
        /// The part's index.
        part: u32,
        /// How many parts are done now.
        parts_done: u32,
        /// How many parts there are.
        parts_total: u32,
    },
    /// A part failed for good, which ends the session.
    GaveUp(SessionFailure),
}

/// A snapshot of a session's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent: done parts in full, in-flight parts as far as reported.
    pub bytes_sent: u64,
    /// The file's size.
    pub bytes_total: u64,
    /// Parts the service has stored.
    pub parts_done: u32,
    /// How many parts there are.
    pub parts_total: u32,
    /// Retries scheduled so far.
    pub retries: u64,
}

/// What an [`UploadSession`] needs to resume after a crash, as JSON: the Upload, the plan,
/// and the part ids received so far. Parts in flight or waiting for a retry are not kept;
/// they are sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The snapshot format, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The Upload as create returned it.
    pub upload: Upload,
    /// The size of the file being uploaded.
    pub file_size: u64,
    /// The size of every part but the last.
    pub part_size: u64,
    /// One entry per part, in file order: its id once the service stored it.
    pub part_ids: Vec<Option<PartId>>,
    /// The adapter's fingerprint of the file (path, size, modification time...), to check
    /// before resuming that the file is still the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Why a snapshot cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The text is not a session snapshot.
    #[error("the snapshot is not valid: {message}")]
    Malformed {
        /// What the JSON parser said.
        message: String,
    },
    /// The snapshot was written in a format this version does not read.
    #[error("snapshot version {found} is not supported (this version reads {supported})")]
    UnsupportedVersion {
        /// The snapshot's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The Upload is no longer pending, so it accepts no parts.
    #[error("upload {upload_id} is {status}, not pending")]
    NotPending {
        /// The Upload's id.
        upload_id: UploadId,
        /// Its status in the snapshot.
        status: UploadStatus,
    },
    /// The Upload has expired.
    #[error("upload {upload_id} expired at {expires_at} (unix seconds)")]
    Expired {
        /// The Upload's id.
        upload_id: UploadId,
        /// When it expired, in unix seconds.
        expires_at: u64,
    },
    /// The snapshot's plan breaks the limits.
    #[error("the snapshot's part plan is refused")]
    InvalidPlan(#[source] PlanError),
    /// The snapshot contradicts itself.
    #[error("the snapshot is inconsistent")]
    Inconsistent(#[source] Inconsistency),
}

/// How a snapshot contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    /// The file size is not the byte count the Upload declared.
    #[error("file size {file_size} differs from the {upload_bytes} bytes the upload declared")]
    SizeMismatch {
        /// The snapshot's file size.
        file_size: u64,
        /// The Upload's `bytes`.
        upload_bytes: u64,
    },
    /// The part list does not have one entry per planned part.
    #[error("{found} part entries for a plan of {expected} parts")]
    PartCountMismatch {
        /// Parts in the plan.
        expected: u32,
        /// Entries in the snapshot.
        found: usize,
    },
    /// One part id is listed for two parts (the service would refuse the complete).
    #[error("part id {part_id} is listed twice")]
    DuplicatePartId {
        /// The repeated id.
        part_id: PartId,
    },
}

/// Where one part is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PartState {
    Pending,
    InFlight {
        attempt: u32,
        bytes_sent: u64,
    },
    /// Scheduled in [`UploadSession::waiting`].
    Waiting,
    Done(PartId),
}

impl PartState {
    /// The part's id, once the service stored it.
    fn done_id(&self) -> Option<&PartId> {
        match self {
            Self::Done(part_id) => Some(part_id),
            Self::Pending | Self::InFlight { .. } | Self::Waiting => None,
        }
    }
}

/// A retry waiting for its time; ordered by time first so the earliest comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ScheduledRetry {
    at_unix_ms: u64,
    index: u32,
    attempt: u32,
}

/// The uploader's state machine for one Upload. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct UploadSession {
    upload: Upload,
    plan: PartPlan,
    policy: RetryPolicy,
    deadline_unix_ms: Option<u64>,
    source: Option<String>,
    parts: Vec<PartState>,
    /// Parts never handed out (or handed out before a resume), lowest index first.
    pending: VecDeque<u32>,
    waiting: BTreeSet<ScheduledRetry>,
    parts_done: u32,
    bytes_sent: u64,
    retries: u64,
    failure: Option<SessionFailure>,
    events: VecDeque<ProgressEvent>,
}

impl UploadSession {
    /// A session for `upload`, as create returned it, sending the parts of `plan` (whose
    /// file size MUST be the Upload's `bytes`). Each part is retried by `policy`; no retry is
    /// scheduled after `deadline_unix_ms`, nor after the Upload expires.
    pub fn new(
        upload: Upload,
        plan: PartPlan,
        policy: RetryPolicy,
        deadline_unix_ms: Option<u64>,
    ) -> Self {
        let no_parts_done = vec![None; plan.count as usize];
        Self::with_parts(upload, plan, policy, deadline_unix_ms, no_parts_done)
    }

    fn with_parts(
        upload: Upload,
        plan: PartPlan,
        policy: RetryPolicy,
        deadline_unix_ms: Option<u64>,
        part_ids: Vec<Option<PartId>>,
    ) -> Self {
        let mut session = Self {
            upload,
            plan,
            policy,
            deadline_unix_ms,
            source: None,
            parts: Vec::with_capacity(part_ids.len()),
            pending: VecDeque::new(),
            waiting: BTreeSet::new(),
            parts_done: 0,
            bytes_sent: 0,
            retries: 0,
            failure: None,
            events: VecDeque::new(),
        };
        for (index, part_id) in (0..plan.count).zip(part_ids) {
            let state = if let Some(part_id) = part_id {
                session.parts_done += 1;
                session.bytes_sent += plan.part_len(index);
                PartState::Done(part_id)
            } else {
                session.pending.push_back(index);
                PartState::Pending
            };
            session.parts.push(state);
        }
        session
    }

    /// Sets the adapter's fingerprint of the file, kept in snapshots.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The adapter's fingerprint of the file, if set.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The Upload this session fills.
    pub fn upload(&self) -> &Upload {
        &self.upload
    }

    /// How the file is cut into parts.
    pub fn plan(&self) -> &PartPlan {
        &self.plan
    }

    /// The caller's deadline for the whole upload, in unix milliseconds, if it has one.
    pub fn deadline_unix_ms(&self) -> Option<u64> {
        self.deadline_unix_ms
    }

    /// The next part to send at `now_unix_ms`: a retry whose time has come (earliest
    /// first), else a part not sent yet (lowest index first). The part is in flight until
    /// its result is reported. `None` when nothing can be sent now, or the session is done.
    #[must_use = "a part handed out stays in flight until its result is reported"]
    pub fn next_job(&mut self, now_unix_ms: u64) -> Option<PartJob> {
        if self.failure.is_some() {
            return None;
        }
        let (index, attempt) = match self.waiting.first() {
            Some(retry) if retry.at_unix_ms <= now_unix_ms => {
                let retry = *retry;
                self.waiting.remove(&retry);
                (retry.index, retry.attempt)
            }
            _ => (self.pending.pop_front()?, 1),
        };
        let job = self.plan.part(index)?;
        let slot = self.parts.get_mut(index as usize)?;
        *slot = PartState::InFlight {
            attempt,
            bytes_sent: 0,
        };
        Some(PartJob { attempt, ..job })
    }

    /// The earliest time a waiting retry may start, if any (`None` also once failed). Parts
    /// never sent are available at once from [`next_job`](Self::next_job).
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.failure.is_some() {
            return None;
        }
        self.waiting.first().map(|retry| retry.at_unix_ms)
    }

    /// Reports that `bytes` more bytes of part `index` went out. Counts at most the part's
    /// length; ignored unless the part is in flight.
    pub fn handle_bytes_sent(&mut self, index: u32, bytes: u64) {
        let len = self.plan.part_len(index);
        if self.failure.is_some() {
            return;
        }
        let Some(PartState::InFlight { bytes_sent, .. }) = self.parts.get_mut(index as usize)
        else {
            return;
        };
        let counted = bytes.min(len.saturating_sub(*bytes_sent));
        if counted == 0 {
            return;
        }
        *bytes_sent += counted;
        self.bytes_sent += counted;
        self.events.push_back(ProgressEvent::BytesSent {
            part: index,
            bytes: counted,
            total_sent: self.bytes_sent,
            total: self.plan.file_size,
        });
    }

    /// Reports that the service stored part `index` as `part_id`. Bytes not yet reported as
    /// sent are counted now. Ignored unless the part is in flight: a late or duplicate
    /// answer, or one after the session failed, changes nothing.
    pub fn handle_part_done(&mut self, index: u32, part_id: PartId) {
        let len = self.plan.part_len(index);
        if self.failure.is_some() {
            return;
        }
        let Some(slot) = self.parts.get_mut(index as usize) else {
            return;
        };
        let PartState::InFlight { bytes_sent, .. } = *slot else {
            return;
        };
        *slot = PartState::Done(part_id);
        let unreported = len.saturating_sub(bytes_sent);
        self.bytes_sent += unreported;
        if unreported > 0 {
            self.events.push_back(ProgressEvent::BytesSent {
                part: index,
                bytes: unreported,
                total_sent: self.bytes_sent,
                total: self.plan.file_size,
            });
        }
        self.parts_done += 1;
        self.events.push_back(ProgressEvent::PartDone {
            part: index,
            parts_done: self.parts_done,
            parts_total: self.plan.count,
        });
    }

    /// Reports that sending part `index` failed at `now_unix_ms`. Its bytes stop counting
    /// as sent, and the policy decides (with the caller's `jitter` in `[0, 1)`): a retry is
    /// scheduled (see [`next_wakeup`](Self::next_wakeup)), or the session fails and the
    /// adapter should cancel the Upload. `None` when the report is ignored because the part
    /// is not in flight (a late or duplicate answer, or one after the session failed).
    pub fn handle_part_failed(
        &mut self,
        index: u32,
        failure: Failure,
        now_unix_ms: u64,
        jitter: f64,
    ) -> Option<RetryDecision> {
        if self.failure.is_some() {
            return None;
        }
        let deadline = self.retry_deadline();
        let slot = self.parts.get_mut(index as usize)?;
        let PartState::InFlight {
            attempt,
            bytes_sent,
        } = *slot
        else {
            return None;
        };
        self.bytes_sent = self.bytes_sent.saturating_sub(bytes_sent);
        let decision = self
            .policy
            .decide(&failure, attempt, now_unix_ms, Some(deadline), jitter);
        match decision {
            RetryDecision::RetryAt {
                at_unix_ms,
                delay_ms,
            } => {
                *slot = PartState::Waiting;
                let next_attempt = attempt.saturating_add(1);
                self.waiting.insert(ScheduledRetry {
                    at_unix_ms,
                    index,
                    attempt: next_attempt,
                });
                self.retries += 1;
                self.events.push_back(ProgressEvent::PartRetry {
                    part: index,
                    attempt: next_attempt,
                    delay_ms,
                    bytes_wound_back: bytes_sent,
                    total_sent: self.bytes_sent,
                    failure,
                });
            }
            RetryDecision::GiveUp(reason) => {
                *slot = PartState::Pending;
                let failure = SessionFailure {
                    part: index,
                    attempts: attempt,
                    failure,
                    reason,
                };
                self.events
                    .push_back(ProgressEvent::GaveUp(failure.clone()));
                self.failure = Some(failure);
            }
        }
        Some(decision)
    }

    /// No retry may start after the caller's deadline, nor after the Upload expires: the
    /// service refuses parts from then on, so waiting for it would only delay the failure.
    fn retry_deadline(&self) -> u64 {
        let expiry = self.upload.expires_at.saturating_mul(1000);
        self.deadline_unix_ms
            .map_or(expiry, |deadline| deadline.min(expiry))
    }

    /// The next progress event, oldest first.
    pub fn poll_event(&mut self) -> Option<ProgressEvent> {
        self.events.pop_front()
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        match &self.failure {
            Some(failure) => SessionState::Failed(failure.clone()),
            None if self.parts_done == self.plan.count => SessionState::ReadyToComplete,
            None => SessionState::Uploading,
        }
    }

    /// Whether no more parts will be handed out: every part is done, or the session failed.
    pub fn is_done(&self) -> bool {
        self.failure.is_some() || self.parts_done == self.plan.count
    }

    /// The failure that ended the session, if it failed.
    pub fn failure(&self) -> Option<&SessionFailure> {
        self.failure.as_ref()
    }

    /// The complete request: every part id in file order, whatever order they finished
    /// in, and the md5 (lower-case hex) if given. `None` unless ready to complete.
    pub fn complete_request(&self, md5_hex: Option<String>) -> Option<CompleteUploadRequest> {
        if self.failure.is_some() {
            return None;
        }
        let part_ids = self
            .parts
            .iter()
            .map(|state| state.done_id().cloned())
            .collect::<Option<Vec<_>>>()?;
        Some(CompleteUploadRequest {
            part_ids,
            md5: md5_hex,
        })
    }

    /// The parts done so far, as `(index, id)` in file order.
    pub fn part_ids(&self) -> impl Iterator<Item = (u32, &PartId)> {
        (0..)
            .zip(&self.parts)
            .filter_map(|(index, state)| Some((index, state.done_id()?)))
    }

    /// The indexes of the parts not done yet, in file order.
    pub fn missing_parts(&self) -> impl Iterator<Item = u32> {
        (0..)
            .zip(&self.parts)
            .filter(|(_, state)| state.done_id().is_none())
            .map(|(index, _)| index)
    }

    /// Bytes and parts so far.
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_sent: self.bytes_sent,
            bytes_total: self.plan.file_size,
            parts_done: self.parts_done,
            parts_total: self.plan.count,
            retries: self.retries,
        }
    }

    /// What is needed to resume this session after a crash.
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            version: SNAPSHOT_VERSION,
            upload: self.upload.clone(),
            file_size: self.plan.file_size,
            part_size: self.plan.part_size,
            part_ids: self
                .parts
                .iter()
                .map(|state| state.done_id().cloned())
                .collect(),
            source: self.source.clone(),
        }
    }

    /// Restores a session from `snapshot` at `now_unix_ms`: it hands out only the parts
    /// without an id (parts that were in flight start over at attempt 1). Refused when the
    /// snapshot's version is unknown, the Upload is not pending or has expired, the plan
    /// breaks `limits`, or the snapshot contradicts itself.
    pub fn resume(
        snapshot: SessionSnapshot,
        limits: &Limits,
        policy: RetryPolicy,
        now_unix_ms: u64,
        deadline_unix_ms: Option<u64>,
    ) -> Result<Self, ResumeError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(ResumeError::UnsupportedVersion {
                found: snapshot.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let upload = snapshot.upload;
        if upload.status != UploadStatus::Pending {
            return Err(ResumeError::NotPending {
                upload_id: upload.id,
                status: upload.status,
            });
        }
        if now_unix_ms >= upload.expires_at.saturating_mul(1000) {
            return Err(ResumeError::Expired {
                upload_id: upload.id,
                expires_at: upload.expires_at,
            });
        }
        let plan = PartPlan::new(snapshot.file_size, snapshot.part_size, limits)
            .map_err(ResumeError::InvalidPlan)?;
        check_consistency(&upload, &plan, &snapshot.part_ids).map_err(ResumeError::Inconsistent)?;
        let mut session =
            Self::with_parts(upload, plan, policy, deadline_unix_ms, snapshot.part_ids);
        session.source = snapshot.source;
        Ok(session)
    }
}

fn check_consistency(
    upload: &Upload,
    plan: &PartPlan,
    part_ids: &[Option<PartId>],
) -> Result<(), Inconsistency> {
    if plan.file_size != upload.bytes {
        return Err(Inconsistency::SizeMismatch {
            file_size: plan.file_size,
            upload_bytes: upload.bytes,
        });
    }
    if part_ids.len() != plan.count as usize {
        return Err(Inconsistency::PartCountMismatch {
            expected: plan.count,
            found: part_ids.len(),
        });
    }
    let mut seen = HashSet::new();
    for part_id in part_ids.iter().flatten() {
        if !seen.insert(part_id) {
            return Err(Inconsistency::DuplicatePartId {
                part_id: part_id.clone(),
            });
        }
    }
    Ok(())
}

impl SessionSnapshot {
    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        // Strings, numbers and options only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a snapshot from JSON. The version is checked first, so a snapshot from a newer
    /// format is reported as [`ResumeError::UnsupportedVersion`], not as malformed.
    pub fn from_json(json: &str) -> Result<Self, ResumeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let malformed = |error: serde_json::Error| ResumeError::Malformed {
            message: error.to_string(),
        };
        let VersionOnly { version } = serde_json::from_str(json).map_err(malformed)?;
        if version != SNAPSHOT_VERSION {
            return Err(ResumeError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        serde_json::from_str(json).map_err(malformed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::limits::MIB;
    use crate::types::Purpose;
    use proptest::prelude::*;

    const NOW: u64 = 1_719_184_912_000;
    const EXPIRES_AT: u64 = 1_719_188_511;

    fn upload(bytes: u64) -> Upload {
        Upload {
            id: UploadId::new("upload_abc123"),
            object: "upload".to_owned(),
            bytes,
            created_at: EXPIRES_AT - 3600,
            filename: "train.jsonl".to_owned(),
            purpose: Purpose::FineTune,
            status: UploadStatus::Pending,
            expires_at: EXPIRES_AT,
            file: None,
        }
    }

    fn started(file_size: u64, part_size: u64) -> UploadSession {
        let plan = PartPlan::new(file_size, part_size, &Limits::default()).unwrap();
        UploadSession::new(upload(file_size), plan, RetryPolicy::default(), None)
    }

    fn job(index: u32, offset: u64, len: u64, attempt: u32) -> PartJob {
        PartJob {
            index,
            offset,
            len,
            attempt,
        }
    }

    fn id(index: u32) -> PartId {
        PartId::new(format!("part_{index}"))
    }

    fn events(session: &mut UploadSession) -> Vec<ProgressEvent> {
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    fn unavailable() -> Failure {
        Failure::Status {
            status: 503,
            retry_after_ms: None,
            should_retry: None,
        }
    }

    #[test]
    fn parts_are_planned_with_exact_offsets_and_a_short_last_part() {
        let plan = PartPlan::new(10, 4, &Limits::default()).unwrap();
        assert_eq!(plan.count(), 3);
        assert_eq!(
            plan.parts().collect::<Vec<_>>(),
            [job(0, 0, 4, 1), job(1, 4, 4, 1), job(2, 8, 2, 1)]
        );
        assert_eq!(plan.part(3), None);
        let even = PartPlan::new(12, 4, &Limits::default()).unwrap();
        assert_eq!(even.parts().last(), Some(job(2, 8, 4, 1)));
        let big = PartPlan::new(8 * 1024 * MIB, 64 * MIB, &Limits::default()).unwrap();
        assert_eq!(big.count(), 128);
        assert_eq!(big.part(127), Some(job(127, 127 * 64 * MIB, 64 * MIB, 1)));
    }

    #[test]
    fn an_empty_file_is_one_empty_part() {
        let plan = PartPlan::new(0, 4, &Limits::default()).unwrap();
        assert_eq!(plan.parts().collect::<Vec<_>>(), [job(0, 0, 0, 1)]);
        let mut session = started(0, 4);
        assert_eq!(session.next_job(NOW), Some(job(0, 0, 0, 1)));
        session.handle_part_done(0, id(0));
        assert_eq!(session.complete_request(None).unwrap().part_ids, [id(0)]);
        assert_eq!(
            events(&mut session),
            [ProgressEvent::PartDone {
                part: 0,
                parts_done: 1,
                parts_total: 1
            }]
        );
    }

    #[test]
    fn plans_beyond_the_limits_are_refused() {
        let limits = Limits::default();
        assert_eq!(PartPlan::new(10, 0, &limits), Err(PlanError::ZeroPartSize));
        assert_eq!(
            PartPlan::new(10, 64 * MIB + 1, &limits),
            Err(PlanError::PartTooLarge {
                part_size: 64 * MIB + 1,
                max: 64 * MIB
            })
        );
        let too_big = PartPlan::new(8 * 1024 * MIB + 1, 64 * MIB, &limits).unwrap_err();
        assert_eq!(
            too_big.to_string(),
            "file size 8589934593 is over the upload limit of 8589934592 bytes"
        );
        let tiny_parts = PartPlan::new(8 * 1024 * MIB, 1, &limits);
        assert_eq!(
            tiny_parts,
            Err(PlanError::TooManyParts {
                count: 8 * 1024 * MIB,
                max: 10_000,
                smallest_part_size: 858_994,
            })
        );
    }

    #[test]
    fn a_plan_over_the_part_count_limit_names_the_smallest_part_size_that_fits() {
        let limits = Limits::default();
        // `uploads put` of a 3.7 MiB file in parts of 100 bytes: 38,798 parts.
        let file_size = 3_879_731;
        let refused = PartPlan::new(file_size, 100, &limits).unwrap_err();
        assert_eq!(
            refused,
            PlanError::TooManyParts {
                count: 38_798,
                max: 10_000,
                smallest_part_size: 388,
            }
        );
        assert_eq!(
            refused.to_string(),
            "the file would need 38798 parts, over the limit of 10000: use parts of at least 388 bytes"
        );
        let fits = PartPlan::new(file_size, 388, &limits).unwrap();
        assert_eq!(fits.count(), 10_000);
        assert!(PartPlan::new(file_size, 387, &limits).is_err());
        let fewer = limits.with_max_parts_per_upload(3);
        assert!(PartPlan::new(12, 4, &fewer).is_ok());
        assert!(PartPlan::new(13, 4, &fewer).is_err());
    }

    #[test]
    fn a_part_in_flight_is_never_handed_out_again() {
        let mut session = started(8, 4);
        assert_eq!(session.next_job(NOW), Some(job(0, 0, 4, 1)));
        assert_eq!(session.next_job(NOW), Some(job(1, 4, 4, 1)));
        assert_eq!(session.next_job(NOW + 60_000), None);
        let decision = session.handle_part_failed(0, Failure::Timeout, NOW, 0.0);
        assert_eq!(
            decision,
            Some(RetryDecision::RetryAt {
                at_unix_ms: NOW + 500,
                delay_ms: 500
            })
        );
        assert_eq!(session.next_job(NOW + 499), None);
        assert_eq!(session.next_job(NOW + 500), Some(job(0, 0, 4, 2)));
        assert_eq!(session.next_job(NOW + 60_000), None);
        assert_eq!(session.next_wakeup(), None);
        assert_eq!(session.state(), SessionState::Uploading);
    }

    #[test]
    fn part_ids_come_out_in_file_order() {
        let mut session = started(40, 4);
        let jobs: Vec<PartJob> = std::iter::from_fn(|| session.next_job(NOW)).collect();
        assert_eq!(jobs.len(), 10);
        for index in [7, 3, 9, 0, 1, 8, 2, 6, 5] {
            session.handle_part_done(index, id(index));
        }
        assert_eq!(session.complete_request(None), None);
        assert_eq!(session.missing_parts().collect::<Vec<_>>(), [4]);
        session.handle_part_done(4, id(4));
        let complete = session
            .complete_request(Some("d41d8cd98f00b204e9800998ecf8427e".to_owned()))
            .unwrap();
        assert_eq!(complete.part_ids, (0..10).map(id).collect::<Vec<_>>());
        assert_eq!(
            serde_json::to_string(&complete).unwrap(),
            r#"{"part_ids":["part_0","part_1","part_2","part_3","part_4","part_5","part_6","part_7","part_8","part_9"],"md5":"d41d8cd98f00b204e9800998ecf8427e"}"#
        );
        assert!(session.is_done());
    }

    #[test]
    fn retries_wait_for_next_wakeup_earliest_first() {
        let mut session = started(12, 4);
        let _ = [
            session.next_job(NOW),
            session.next_job(NOW),
            session.next_job(NOW),
        ];
        let slow = Failure::Status {
            status: 429,
            retry_after_ms: Some(3_000),
            should_retry: None,
        };
        assert!(session.handle_part_failed(0, slow, NOW, 0.0).is_some());
        assert!(
            session
                .handle_part_failed(2, Failure::Connection, NOW + 100, 0.0)
                .is_some()
        );
        assert_eq!(session.next_wakeup(), Some(NOW + 600));
        assert_eq!(session.next_job(NOW + 599), None);
        assert_eq!(session.next_job(NOW + 600), Some(job(2, 8, 4, 2)));
        assert_eq!(session.next_wakeup(), Some(NOW + 3_000));
        assert_eq!(session.next_job(NOW + 2_999), None);
        assert_eq!(session.next_job(NOW + 3_000), Some(job(0, 0, 4, 2)));
        assert_eq!(session.next_wakeup(), None);
        assert_eq!(session.progress().retries, 2);
    }

    #[test]
    fn a_due_retry_goes_before_parts_never_sent() {
        let mut session = started(12, 4);
        let _ = session.next_job(NOW);
        let _ = session.handle_part_failed(0, Failure::Timeout, NOW, 0.0);
        assert_eq!(session.next_job(NOW + 500), Some(job(0, 0, 4, 2)));
        assert_eq!(session.next_job(NOW + 500), Some(job(1, 4, 4, 1)));
    }

    #[test]
    fn giving_up_fails_the_session_and_ignores_late_answers() {
        let mut session = started(12, 4);
        let _ = [session.next_job(NOW), session.next_job(NOW)];
        let _ = session.handle_part_failed(0, Failure::Timeout, NOW, 0.0);
        let bad_request = Failure::Status {
            status: 400,
            retry_after_ms: None,
            should_retry: None,
        };
        let decision = session.handle_part_failed(1, bad_request.clone(), NOW, 0.0);
        let reason = GiveUpReason::NotRetryable { status: 400 };
        assert_eq!(decision, Some(RetryDecision::GiveUp(reason)));
        let failure = SessionFailure {
            part: 1,
            attempts: 1,
            failure: bad_request,
            reason,
        };
        assert_eq!(session.state(), SessionState::Failed(failure.clone()));
        assert_eq!(
            failure.to_string(),
            "part 1 gave up after 1 attempt(s): status 400 is not retryable"
        );
        assert!(session.is_done());
        assert_eq!(session.next_job(NOW + 60_000), None);
        assert_eq!(session.next_wakeup(), None);
        assert_eq!(session.complete_request(None), None);
        assert_eq!(
            events(&mut session).last(),
            Some(&ProgressEvent::GaveUp(failure.clone()))
        );

        // Late and duplicate answers change nothing and panic nowhere.
        session.handle_part_done(1, id(1));
        session.handle_bytes_sent(2, 4);
        assert_eq!(
            session.handle_part_failed(1, Failure::Timeout, NOW, 0.0),
            None
        );
        assert_eq!(session.state(), SessionState::Failed(failure));
        assert_eq!(session.poll_event(), None);
    }

    #[test]
    fn answers_for_parts_not_in_flight_are_ignored() {
        let mut session = started(12, 4);
        let _ = session.next_job(NOW);
        session.handle_part_done(0, id(0));
        session.handle_part_done(0, PartId::new("part_duplicate"));
        session.handle_part_done(1, id(1)); // never handed out
        session.handle_part_done(99, id(99)); // no such part
        session.handle_bytes_sent(99, 1);
        assert_eq!(
            session.handle_part_failed(0, Failure::Timeout, NOW, 0.0),
            None
        );
        assert_eq!(
            session.handle_part_failed(7, Failure::Timeout, NOW, 0.0),
            None
        );
        assert_eq!(session.part_ids().collect::<Vec<_>>(), [(0, &id(0))]);
        assert_eq!(session.missing_parts().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(session.progress().bytes_sent, 4);
    }

    #[test]
    fn progress_winds_back_on_a_retry() {
        let mut session = started(10, 4);
        let _ = [session.next_job(NOW), session.next_job(NOW)];
        session.handle_bytes_sent(0, 3);
        session.handle_bytes_sent(1, 4);
        session.handle_bytes_sent(1, 1); // over-reported: the part holds 4 bytes
        assert_eq!(session.progress().bytes_sent, 7);
        let _ = session.handle_part_failed(0, unavailable(), NOW, 0.5);
        assert_eq!(
            session.progress(),
            Progress {
                bytes_sent: 4,
                bytes_total: 10,
                parts_done: 0,
                parts_total: 3,
                retries: 1
            }
        );
        session.handle_part_done(1, id(1));
        assert_eq!(
            events(&mut session),
            [
                ProgressEvent::BytesSent {
                    part: 0,
                    bytes: 3,
                    total_sent: 3,
                    total: 10
                },
                ProgressEvent::BytesSent {
                    part: 1,
                    bytes: 4,
                    total_sent: 7,
                    total: 10
                },
                ProgressEvent::PartRetry {
                    part: 0,
                    attempt: 2,
                    delay_ms: 437,
                    bytes_wound_back: 3,
                    total_sent: 4,
                    failure: unavailable()
                },
                ProgressEvent::PartDone {
                    part: 1,
                    parts_done: 1,
                    parts_total: 3
                },
            ]
        );
    }

    #[test]
    fn no_retry_past_the_deadline_or_the_upload_expiry() {
        let plan = PartPlan::new(4, 4, &Limits::default()).unwrap();
        let mut session =
            UploadSession::new(upload(4), plan, RetryPolicy::default(), Some(NOW + 400));
        let _ = session.next_job(NOW);
        let decision = session.handle_part_failed(0, Failure::Timeout, NOW, 0.0);
        assert_eq!(
            decision,
            Some(RetryDecision::GiveUp(GiveUpReason::Deadline {
                retry_at_unix_ms: NOW + 500,
                deadline_unix_ms: NOW + 400
            }))
        );

        let mut session = started(4, 4);
        let _ = session.next_job(NOW);
        let just_before_expiry = EXPIRES_AT * 1000 - 100;
        let decision = session.handle_part_failed(0, Failure::Timeout, just_before_expiry, 0.0);
        assert!(matches!(
            decision,
            Some(RetryDecision::GiveUp(GiveUpReason::Deadline { .. }))
        ));
    }

    #[test]
    fn attempts_run_out_per_part() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let plan = PartPlan::new(4, 4, &Limits::default()).unwrap();
        let mut session = UploadSession::new(upload(4), plan, policy, None);
        let _ = session.next_job(NOW);
        let _ = session.handle_part_failed(0, Failure::Connection, NOW, 0.0);
        assert_eq!(session.next_job(NOW + 500), Some(job(0, 0, 4, 2)));
        let _ = session.handle_part_failed(0, Failure::Connection, NOW + 600, 0.0);
        assert_eq!(
            session.failure().map(|failure| failure.reason),
            Some(GiveUpReason::AttemptsExhausted { attempts: 2 })
        );
    }

    #[test]
    fn the_snapshot_json_is_stable() {
        let mut session = started(10, 4).with_source("/data/train.jsonl:10:1719184900");
        let _ = [session.next_job(NOW), session.next_job(NOW)];
        session.handle_part_done(1, id(1));
        let json = session.snapshot().to_json();
        assert_eq!(
            json,
            r#"{"version":1,"upload":{"id":"upload_abc123","object":"upload","bytes":10,"created_at":1719184911,"filename":"train.jsonl","purpose":"fine-tune","status":"pending","expires_at":1719188511},"file_size":10,"part_size":4,"part_ids":[null,"part_1",null],"source":"/data/train.jsonl:10:1719184900"}"#
        );
        let mut resumed = UploadSession::resume(
            SessionSnapshot::from_json(&json).unwrap(),
            &Limits::default(),
            RetryPolicy::default(),
            NOW + 10_000,
            None,
        )
        .unwrap();
        assert_eq!(resumed.source(), Some("/data/train.jsonl:10:1719184900"));
        assert_eq!(resumed.progress().bytes_sent, 4);
        // Part 0 was in flight when the snapshot was taken: it starts over.
        assert_eq!(resumed.next_job(NOW), Some(job(0, 0, 4, 1)));
        assert_eq!(resumed.next_job(NOW), Some(job(2, 8, 2, 1)));
        assert_eq!(resumed.next_job(NOW), None);
    }

    #[test]
    fn a_snapshot_with_every_part_resumes_ready_to_complete() {
        let mut session = started(4, 4);
        let _ = session.next_job(NOW);
        session.handle_part_done(0, id(0));
        let resumed = UploadSession::resume(
            session.snapshot(),
            &Limits::default(),
            RetryPolicy::default(),
            NOW,
            None,
        )
        .unwrap();
        assert_eq!(resumed.state(), SessionState::ReadyToComplete);
        assert_eq!(resumed.complete_request(None).unwrap().part_ids, [id(0)]);
    }

    fn resume_error(snapshot: SessionSnapshot, now: u64) -> ResumeError {
        UploadSession::resume(
            snapshot,
            &Limits::default(),
            RetryPolicy::default(),
            now,
            None,
        )
        .unwrap_err()
    }

    #[test]
    fn stale_snapshots_are_refused() {
        let snapshot = started(10, 4).snapshot();
        assert_eq!(
            resume_error(snapshot.clone(), EXPIRES_AT * 1000),
            ResumeError::Expired {
                upload_id: UploadId::new("upload_abc123"),
                expires_at: EXPIRES_AT
            }
        );
        let mut cancelled = snapshot.clone();
        cancelled.upload.status = UploadStatus::Cancelled;
        assert_eq!(
            resume_error(cancelled, NOW).to_string(),
            "upload upload_abc123 is cancelled, not pending"
        );
        let mut future = snapshot;
        future.version = 2;
        assert_eq!(
            resume_error(future, NOW),
            ResumeError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let snapshot = started(10, 4).snapshot();
        let mut short = snapshot.clone();
        short.part_ids.pop();
        assert_eq!(
            resume_error(short, NOW),
            ResumeError::Inconsistent(Inconsistency::PartCountMismatch {
                expected: 3,
                found: 2
            })
        );
        let mut resized = snapshot.clone();
        resized.file_size = 11;
        assert_eq!(
            resume_error(resized, NOW),
            ResumeError::Inconsistent(Inconsistency::SizeMismatch {
                file_size: 11,
                upload_bytes: 10
            })
        );
        let mut twice = snapshot.clone();
        twice.part_ids = vec![Some(id(5)), None, Some(id(5))];
        assert_eq!(
            resume_error(twice, NOW),
            ResumeError::Inconsistent(Inconsistency::DuplicatePartId { part_id: id(5) })
        );
        let mut huge_parts = snapshot;
        huge_parts.part_size = 65 * MIB;
        assert_eq!(
            resume_error(huge_parts, NOW),
            ResumeError::InvalidPlan(PlanError::PartTooLarge {
                part_size: 65 * MIB,
                max: 64 * MIB
            })
        );
    }

    #[test]
    fn snapshot_json_is_checked_for_version_first() {
        assert_eq!(
            SessionSnapshot::from_json(r#"{"version":2,"something":"new"}"#),
            Err(ResumeError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        assert!(matches!(
            SessionSnapshot::from_json(r#"{"version":1}"#),
            Err(ResumeError::Malformed { .. })
        ));
        assert!(matches!(
            SessionSnapshot::from_json("not json"),
            Err(ResumeError::Malformed { .. })
        ));
    }

    /// One thing that can happen to a session, in a random interleaving.
    #[derive(Debug, Clone)]
    enum Step {
        /// A worker asks for a job.
        Take,
        /// The in-flight part at position `pick` (modulo their number) reports.
        Report { pick: usize, outcome: Outcome },
        /// Time passes.
        Advance(u64),
    }

    #[derive(Debug, Clone)]
    enum Outcome {
        Sent(u64),
        Done,
        Failed(Failure, f64),
    }

    fn failure_strategy() -> impl Strategy<Value = Failure> {
        prop_oneof![
            8 => Just(Failure::Connection),
            8 => Just(Failure::Timeout),
            8 => proptest::option::of(0_u64..50).prop_map(|retry_after_ms| Failure::Status {
                status: 503,
                retry_after_ms,
                should_retry: None,
            }),
            4 => Just(Failure::Status { status: 429, retry_after_ms: None, should_retry: None }),
            1 => Just(Failure::Status { status: 400, retry_after_ms: None, should_retry: None }),
            1 => Just(Failure::Status { status: 500, retry_after_ms: None, should_retry: Some(false) }),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        let outcome = prop_oneof![
            3 => (0_u64..6).prop_map(Outcome::Sent),
            4 => Just(Outcome::Done),
            2 => (failure_strategy(), 0.0_f64..1.0).prop_map(|(f, j)| Outcome::Failed(f, j)),
        ];
        prop_oneof![
            3 => Just(Step::Take),
            4 => (any::<usize>(), outcome).prop_map(|(pick, outcome)| Step::Report { pick, outcome }),
            1 => (0_u64..200).prop_map(Step::Advance),
        ]
    }

    /// Drives a session and keeps, beside it, the test's own account of what happened.
    struct Driver {
        session: UploadSession,
        now: u64,
        in_flight: BTreeMap<u32, PartJob>,
        bytes_in_flight: BTreeMap<u32, u64>,
        reported_ids: BTreeMap<u32, PartId>,
        failures: BTreeMap<u32, u32>,
        refused: BTreeSet<u32>,
        serial: u32,
    }

    impl Driver {
        fn new(file_size: u64, part_size: u64, max_attempts: u32) -> Self {
            let policy = RetryPolicy {
                max_attempts,
                initial_backoff_ms: 10,
                max_backoff_ms: 80,
                max_retry_after_ms: 100,
            };
            let plan = PartPlan::new(file_size, part_size, &Limits::default()).unwrap();
            Self {
                session: UploadSession::new(upload(file_size), plan, policy, None),
                now: NOW,
                in_flight: BTreeMap::new(),
                bytes_in_flight: BTreeMap::new(),
                reported_ids: BTreeMap::new(),
                failures: BTreeMap::new(),
                refused: BTreeSet::new(),
                serial: 0,
            }
        }

        fn take(&mut self) -> Option<PartJob> {
            let job = self.session.next_job(self.now)?;
            assert!(!self.in_flight.contains_key(&job.index), "{job:?} twice");
            assert!(
                !self.reported_ids.contains_key(&job.index),
                "{job:?} after done"
            );
            let planned = self.session.plan().part(job.index).unwrap();
            let attempt = self.failures.get(&job.index).copied().unwrap_or(0) + 1;
            assert_eq!(job, PartJob { attempt, ..planned });
            self.in_flight.insert(job.index, job);
            Some(job)
        }

        fn report(&mut self, index: u32, outcome: Outcome) {
            let failed_before = self.session.failure().is_some();
            match outcome {
                Outcome::Sent(bytes) => {
                    self.session.handle_bytes_sent(index, bytes);
                    if !failed_before {
                        let len = self.in_flight[&index].len;
                        let sent = self.bytes_in_flight.entry(index).or_default();
                        *sent = (*sent + bytes).min(len);
                    }
                    return;
                }
                Outcome::Done => {
                    self.in_flight.remove(&index);
                    self.bytes_in_flight.remove(&index);
                    self.serial += 1;
                    let part_id = PartId::new(format!("part_{index}_{}", self.serial));
                    self.session.handle_part_done(index, part_id.clone());
                    if !failed_before {
                        self.reported_ids.insert(index, part_id);
                    }
                }
                Outcome::Failed(failure, jitter) => {
                    self.in_flight.remove(&index);
                    let wound_back = self.bytes_in_flight.remove(&index).unwrap_or(0);
                    let decision =
                        self.session
                            .handle_part_failed(index, failure.clone(), self.now, jitter);
                    if failed_before {
                        assert_eq!(decision, None);
                        return;
                    }
                    *self.failures.entry(index).or_default() += 1;
                    if !failure.is_retryable() {
                        self.refused.insert(index);
                    }
                    match decision.unwrap() {
                        RetryDecision::RetryAt { at_unix_ms, .. } => {
                            assert!(self.session.next_wakeup().unwrap() <= at_unix_ms);
                            let retry = events(&mut self.session).pop();
                            let Some(ProgressEvent::PartRetry {
                                bytes_wound_back, ..
                            }) = retry
                            else {
                                panic!("expected a retry event, got {retry:?}")
                            };
                            assert_eq!(bytes_wound_back, wound_back);
                        }
                        RetryDecision::GiveUp(_) => {
                            assert!(self.session.is_done());
                            assert_eq!(self.session.next_job(self.now), None);
                        }
                    }
                }
            }
            self.check_progress();
        }

        fn check_progress(&self) {
            if self.session.failure().is_some() {
                return;
            }
            let plan = self.session.plan();
            let done: u64 = self
                .reported_ids
                .keys()
                .map(|&index| plan.part(index).unwrap().len)
                .sum();
            let in_flight: u64 = self.bytes_in_flight.values().sum();
            let progress = self.session.progress();
            assert_eq!(progress.bytes_sent, done + in_flight);
            assert!(progress.bytes_sent <= progress.bytes_total);
            assert_eq!(progress.parts_done as usize, self.reported_ids.len());
        }

        fn apply(&mut self, step: Step) {
            match step {
                Step::Take => {
                    let _ = self.take();
                }
                Step::Report { pick, outcome } => {
                    if self.in_flight.is_empty() {
                        return;
                    }
                    let index = *self
                        .in_flight
                        .keys()
                        .nth(pick % self.in_flight.len())
                        .unwrap();
                    self.report(index, outcome);
                }
                Step::Advance(ms) => self.now += ms,
            }
        }

        /// Runs to the end with every remaining part succeeding.
        fn finish(&mut self) {
            while !self.session.is_done() {
                while self.take().is_some() {}
                if let Some(&index) = self.in_flight.keys().next() {
                    self.report(index, Outcome::Done);
                } else {
                    let wakeup = self
                        .session
                        .next_wakeup()
                        .expect("stuck: nothing to wait for");
                    self.now = self.now.max(wakeup);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_interleaving_completes_in_order_or_fails_for_a_reason(
            file_size in 0_u64..60,
            part_size in 1_u64..9,
            max_attempts in 1_u32..8,
            steps in proptest::collection::vec(step_strategy(), 0..300),
        ) {
            let mut driver = Driver::new(file_size, part_size, max_attempts);
            for step in steps {
                driver.apply(step);
            }
            driver.finish();
            match driver.session.state() {
                SessionState::ReadyToComplete => {
                    let count = driver.session.plan().count();
                    let expected: Vec<PartId> =
                        (0..count).map(|index| driver.reported_ids[&index].clone()).collect();
                    let complete = driver.session.complete_request(None).unwrap();
                    prop_assert_eq!(complete.part_ids, expected);
                    prop_assert!(driver.refused.is_empty());
                    prop_assert!(driver.failures.values().all(|&failures| failures < max_attempts));
                    prop_assert_eq!(driver.session.progress().bytes_sent, file_size);
                }
                SessionState::Failed(failure) => {
                    let part = failure.part;
                    prop_assert_eq!(failure.attempts, driver.failures[&part]);
                    prop_assert!(
                        driver.refused.contains(&part) || driver.failures[&part] >= max_attempts,
                        "failed without cause: {:?}", failure
                    );
                    prop_assert_eq!(driver.session.complete_request(None), None);
                }
                SessionState::Uploading => prop_assert!(false, "finish left the session uploading"),
            }
        }

        #[test]
        fn a_snapshot_at_any_point_resumes_to_the_same_upload(
            file_size in 0_u64..60,
            part_size in 1_u64..9,
            steps in proptest::collection::vec(step_strategy(), 0..200),
        ) {
            let mut driver = Driver::new(file_size, part_size, 4);
            for step in steps {
                driver.apply(step);
            }
            let original = &driver.session;
            let json = original.clone().with_source("fingerprint").snapshot().to_json();
            let mut resumed = UploadSession::resume(
                SessionSnapshot::from_json(&json).unwrap(),
                &Limits::default(),
                RetryPolicy::default(),
                driver.now,
                None,
            ).unwrap();
            prop_assert_eq!(resumed.upload(), original.upload());
            prop_assert_eq!(resumed.plan(), original.plan());
            prop_assert_eq!(resumed.source(), Some("fingerprint"));
            prop_assert_eq!(
                resumed.part_ids().collect::<Vec<_>>(),
                original.part_ids().collect::<Vec<_>>()
            );
            let missing: Vec<u32> = original.missing_parts().collect();
            prop_assert_eq!(resumed.missing_parts().collect::<Vec<_>>(), missing.clone());
            prop_assert_eq!(resumed.progress().parts_done as usize, original.part_ids().count());
            // In-flight and waiting parts are pending again: each missing part exactly once.
            let handed_out: Vec<PartJob> = std::iter::from_fn(|| resumed.next_job(driver.now)).collect();
            prop_assert_eq!(
                handed_out,
                missing.iter().map(|&index| original.plan().part(index).unwrap()).collect::<Vec<_>>()
            );
        }
    }
}
