//! The parts of one Upload: which are pending, in flight, waiting for a retry or stored.

use std::collections::{BTreeSet, VecDeque};

use super::plan::{CutHint, PartJob, PartPlan};
use super::progress::{Progress, ProgressEvent};
use super::snapshot::{EQUAL_PARTS_VERSION, ResumeError, SNAPSHOT_VERSION, SessionSnapshot};
use crate::limits::Limits;
use crate::retry::{Failure, RetryDecision, RetryPolicy};
use crate::types::{CompleteUploadRequest, PartId, Upload};

#[cfg(test)]
mod tests;

/// Where one part is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PartState {
    Pending,
    InFlight {
        attempt: u32,
        bytes_sent: u64,
        /// When the attempt last moved: handed out, or bytes reported sent.
        active_at_unix_ms: u64,
    },
    /// Scheduled in [`Parts::waiting`].
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

/// The parts of one Upload, from the Upload that create returned (or a snapshot) to the
/// complete request:
///
/// ```text
///              next_job                       handle_part_done
///   Pending ─────────────▶ InFlight ──────────────────────────────▶ Done
///      ▲                    │    ▲
///      │                    │    │ next_job, once now >= the retry time
///      │ resume, abandon    │  Waiting ◀── RetryAt ──┐
///      │                    └── handle_part_failed ──┤
///      └─────────────────────────────────────────────┴── GiveUp (the uploader gives up)
/// ```
///
/// A part is never handed out twice while in flight; a report names the attempt it is for
/// (a [`PartJob`]), so a late report of an attempt that was abandoned changes nothing.
/// Results may arrive in any order; the complete request lists the part ids in file order.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    upload: Upload,
    plan: PartPlan,
    policy: RetryPolicy,
    /// The caller's deadline: no retry starts after it.
    deadline_unix_ms: Option<u64>,
    /// When the Upload expires by this machine's clock, once known (see
    /// [`Parts::expiring_locally_at`]); until then the service's `expires_at`.
    expires_locally_at_ms: Option<u64>,
    source: Option<String>,
    /// The parts cut so far, in file order (all of them from the start for a fixed plan).
    cuts: Vec<Cut>,
    /// Where the bytes not yet cut into a part start.
    uncut_from: u64,
    /// The parts in flight and throttling when a part was last asked for: an adaptive
    /// plan's estimate of the parts still to cut.
    last_hint: CutHint,
    states: Vec<PartState>,
    /// Parts never handed out (or handed out before a resume), lowest index first.
    pending: VecDeque<u32>,
    waiting: BTreeSet<ScheduledRetry>,
    in_flight: u32,
    done: u32,
    bytes_sent: u64,
    /// The bytes of the parts stored.
    bytes_done: u64,
    /// Bytes the driver's sockets held unacknowledged at its last report.
    unacknowledged: u64,
    /// Every byte reported sent, failed attempts included: what the link carried.
    bytes_moved: u64,
    retries: u64,
    events: VecDeque<ProgressEvent>,
}

/// One part's bytes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Where they start.
    pub offset: u64,
    /// How many.
    pub len: u64,
}

impl Parts {
    /// The parts of `plan` for `upload`, as create returned it (its `bytes` MUST be the
    /// plan's file size), none sent yet. Each is retried by `policy`; no retry is scheduled
    /// after `deadline_unix_ms`, nor after the Upload expires.
    pub fn new(
        upload: Upload,
        plan: PartPlan,
        policy: RetryPolicy,
        deadline_unix_ms: Option<u64>,
    ) -> Self {
        let cuts = plan
            .parts()
            .map(|job| {
                let cut = Cut {
                    offset: job.offset,
                    len: job.len,
                };
                (cut, None)
            })
            .collect();
        Self::with_cuts(upload, plan, policy, deadline_unix_ms, cuts)
    }

    fn with_cuts(
        upload: Upload,
        plan: PartPlan,
        policy: RetryPolicy,
        deadline_unix_ms: Option<u64>,
        cuts: Vec<(Cut, Option<PartId>)>,
    ) -> Self {
        let mut parts = Self {
            upload,
            plan,
            policy,
            deadline_unix_ms,
            expires_locally_at_ms: None,
            source: None,
            cuts: Vec::with_capacity(cuts.len()),
            uncut_from: 0,
            last_hint: CutHint::NONE,
            states: Vec::with_capacity(cuts.len()),
            pending: VecDeque::new(),
            waiting: BTreeSet::new(),
            in_flight: 0,
            done: 0,
            bytes_sent: 0,
            bytes_done: 0,
            unacknowledged: 0,
            bytes_moved: 0,
            retries: 0,
            events: VecDeque::new(),
        };
        for (index, (cut, part_id)) in (0..).zip(cuts) {
            let state = if let Some(part_id) = part_id {
                parts.done += 1;
                parts.bytes_sent += cut.len;
                parts.bytes_done += cut.len;
                PartState::Done(part_id)
            } else {
                parts.pending.push_back(index);
                PartState::Pending
            };
            parts.uncut_from = cut.offset + cut.len;
            parts.cuts.push(cut);
            parts.states.push(state);
        }
        parts
    }

    /// Part `index` as cut, as a first attempt.
    fn part(&self, index: u32) -> Option<PartJob> {
        let cut = self.cuts.get(index as usize)?;
        Some(PartJob {
            index,
            offset: cut.offset,
            len: cut.len,
            attempt: 1,
        })
    }

    /// The length of part `index` (0 if not cut).
    fn part_len(&self, index: u32) -> u64 {
        self.cuts.get(index as usize).map_or(0, |cut| cut.len)
    }

    /// The bytes the parts in flight have still to send.
    fn in_flight_left(&self) -> u64 {
        (0..)
            .zip(&self.states)
            .filter_map(|(index, state)| match state {
                PartState::InFlight { bytes_sent, .. } => {
                    Some(self.part_len(index).saturating_sub(*bytes_sent))
                }
                PartState::Pending | PartState::Waiting | PartState::Done(_) => None,
            })
            .sum()
    }

    /// Whether bytes are left to cut into parts (an empty file is one empty part).
    fn uncut(&self) -> bool {
        self.uncut_from < self.plan.file_size() || self.cuts.is_empty()
    }

    /// Cuts the next part from the bytes left, for `hint`; returns its index.
    fn cut_next(&mut self, hint: CutHint) -> Option<u32> {
        if !self.uncut() {
            return None;
        }
        let remaining = self.plan.file_size() - self.uncut_from;
        let parts_cut = self.cuts.len() as u64;
        let len = self
            .plan
            .cut_len(remaining, self.in_flight_left(), parts_cut, &hint);
        let index = u32::try_from(self.cuts.len()).ok()?;
        self.cuts.push(Cut {
            offset: self.uncut_from,
            len,
        });
        self.states.push(PartState::Pending);
        self.uncut_from += len;
        Some(index)
    }

    /// How many parts there will be: those cut, and an estimate of those still to cut at
    /// the sizes the last hint gives.
    fn parts_total(&self) -> u32 {
        let remaining = self.plan.file_size() - self.uncut_from.min(self.plan.file_size());
        let to_cut = if self.uncut() {
            let hint = self.last_hint;
            let next = self.plan.cut_len(
                remaining,
                self.in_flight_left(),
                self.cuts.len() as u64,
                &hint,
            );
            remaining.div_ceil(next.max(1)).max(1)
        } else {
            0
        };
        u32::try_from(self.cuts.len() as u64 + to_cut).unwrap_or(u32::MAX)
    }

    /// Restores the parts of `snapshot` at `now_unix_ms`: only the parts without an id are
    /// handed out (those in flight then start over at attempt 1). Refused when the snapshot's
    /// version is unknown, the Upload is not pending or has expired, the plan breaks
    /// `limits`, or the snapshot contradicts itself.
    pub fn resume(
        snapshot: SessionSnapshot,
        limits: &Limits,
        policy: RetryPolicy,
        now_unix_ms: u64,
        deadline_unix_ms: Option<u64>,
    ) -> Result<Self, ResumeError> {
        let (plan, cuts, snapshot) = snapshot.check(limits, now_unix_ms)?;
        let cuts = cuts.into_iter().zip(snapshot.part_ids).collect();
        let mut parts = Self::with_cuts(snapshot.upload, plan, policy, deadline_unix_ms, cuts);
        parts.source = snapshot.source;
        parts.expires_locally_at_ms = snapshot.expires_locally_at_ms;
        Ok(parts)
    }

    /// Sets when the Upload expires by this machine's clock (see
    /// [`SessionSnapshot::expires_locally_at_ms`]), kept in snapshots.
    pub fn expiring_locally_at(mut self, at_unix_ms: u64) -> Self {
        self.expires_locally_at_ms = Some(at_unix_ms);
        self
    }

    /// No retry starts after this: the caller's deadline, or the Upload's expiry (the
    /// service refuses parts then: waiting past it would only delay the failure).
    fn retry_deadline_unix_ms(&self) -> u64 {
        let expiry = self
            .expires_locally_at_ms
            .unwrap_or_else(|| self.upload.expires_at.saturating_mul(1000));
        self.deadline_unix_ms
            .map_or(expiry, |deadline| deadline.min(expiry))
    }

    /// Sets the driver's fingerprint of the file, kept in snapshots.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The Upload these parts fill.
    pub fn upload(&self) -> &Upload {
        &self.upload
    }

    /// The next part to send at `now_unix_ms`: a retry whose time has come (earliest
    /// first), else a part not sent yet (lowest index first), else a new part cut for
    /// `hint` (an adaptive plan). The part is in flight until its result is reported or it
    /// is abandoned. `None` when nothing can be sent now.
    pub fn next_job(&mut self, now_unix_ms: u64, hint: CutHint) -> Option<PartJob> {
        self.last_hint = hint;
        let (index, attempt) = match self.waiting.first() {
            Some(retry) if retry.at_unix_ms <= now_unix_ms => {
                let retry = *retry;
                self.waiting.remove(&retry);
                (retry.index, retry.attempt)
            }
            _ => match self.pending.pop_front() {
                Some(index) => (index, 1),
                None => (self.cut_next(hint)?, 1),
            },
        };
        let job = self.part(index)?;
        let slot = self.states.get_mut(index as usize)?;
        *slot = PartState::InFlight {
            attempt,
            bytes_sent: 0,
            active_at_unix_ms: now_unix_ms,
        };
        self.in_flight += 1;
        Some(PartJob { attempt, ..job })
    }

    /// The earliest time a waiting retry may start, if any. Parts never sent are available
    /// at once from [`next_job`](Self::next_job).
    pub fn next_wakeup(&self) -> Option<u64> {
        self.waiting.first().map(|retry| retry.at_unix_ms)
    }

    /// How many parts are in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The attempts in flight, in file order.
    pub fn in_flight_jobs(&self) -> impl Iterator<Item = PartJob> {
        (0..)
            .zip(&self.states)
            .filter_map(|(index, state)| match state {
                PartState::InFlight { attempt, .. } => Some(PartJob {
                    attempt: *attempt,
                    ..self.part(index)?
                }),
                _ => None,
            })
    }

    /// The attempts in flight that have not moved (no byte sent, no answer) since
    /// `stalled_before` (unix milliseconds).
    pub fn stalled(&self, stalled_before: u64) -> Vec<PartJob> {
        self.in_flight_jobs()
            .filter(|job| self.active_at(*job).is_some_and(|at| at <= stalled_before))
            .collect()
    }

    /// When the attempt in flight that moved least recently last moved, if any is in flight.
    pub fn least_recently_active(&self) -> Option<u64> {
        self.in_flight_jobs()
            .filter_map(|job| self.active_at(job))
            .min()
    }

    fn active_at(&self, job: PartJob) -> Option<u64> {
        match self.states.get(job.index as usize)? {
            PartState::InFlight {
                attempt,
                active_at_unix_ms,
                ..
            } if *attempt == job.attempt => Some(*active_at_unix_ms),
            _ => None,
        }
    }

    /// Whether `job` is the attempt of its part in flight (not one stopped, answered or
    /// failed already).
    pub fn is_in_flight(&self, job: PartJob) -> bool {
        self.active_at(job).is_some()
    }

    /// The state of `job`'s part if `job` is the attempt in flight; `None` for a late or
    /// duplicate report (of an attempt abandoned, answered or failed already).
    fn in_flight_slot(&mut self, job: PartJob) -> Option<&mut PartState> {
        let slot = self.states.get_mut(job.index as usize)?;
        matches!(slot, PartState::InFlight { attempt, .. } if *attempt == job.attempt)
            .then_some(slot)
    }

    /// Reports that `bytes` more bytes of `job` went out at `now_unix_ms`. Counts at most
    /// the part's length; ignored unless `job` is the attempt in flight.
    pub fn handle_bytes_sent(&mut self, job: PartJob, bytes: u64, now_unix_ms: u64) {
        let len = self.part_len(job.index);
        let Some(PartState::InFlight {
            bytes_sent,
            active_at_unix_ms,
            ..
        }) = self.in_flight_slot(job)
        else {
            return;
        };
        *active_at_unix_ms = (*active_at_unix_ms).max(now_unix_ms);
        let counted = bytes.min(len.saturating_sub(*bytes_sent));
        if counted == 0 {
            return;
        }
        *bytes_sent += counted;
        self.bytes_sent += counted;
        self.bytes_moved += counted;
        self.events.push_back(ProgressEvent::BytesSent {
            part: job.index,
            bytes: counted,
            total_sent: self.bytes_sent,
            total_delivered: self.bytes_delivered(),
            total: self.plan.file_size(),
        });
    }

    /// Reports that the driver's sockets hold `bytes` sent but not yet acknowledged by the
    /// peer; a [`ProgressEvent::Delivered`] follows when that moves the delivered total.
    pub fn handle_unacknowledged(&mut self, bytes: u64) {
        let before = self.bytes_delivered();
        self.unacknowledged = bytes;
        let after = self.bytes_delivered();
        if after != before {
            self.events.push_back(ProgressEvent::Delivered {
                total_delivered: after,
                total: self.plan.file_size(),
            });
        }
    }

    /// The bytes sent that have left the machine: see [`Progress::bytes_delivered`].
    fn bytes_delivered(&self) -> u64 {
        self.bytes_sent
            .saturating_sub(self.unacknowledged)
            .max(self.bytes_done)
    }

    /// Every byte the link has carried so far, failed attempts included, less what the
    /// sockets still hold: what goodput is measured on.
    pub fn bytes_carried(&self) -> u64 {
        self.bytes_moved.saturating_sub(self.unacknowledged)
    }

    /// Reports that the service stored `job` as `part_id`; returns whether that changed
    /// anything. Bytes not yet reported as sent are counted now. Ignored unless `job` is the
    /// attempt in flight.
    pub fn handle_part_done(&mut self, job: PartJob, part_id: PartId) -> bool {
        let len = self.part_len(job.index);
        let Some(slot) = self.in_flight_slot(job) else {
            return false;
        };
        let PartState::InFlight { bytes_sent, .. } = *slot else {
            return false;
        };
        *slot = PartState::Done(part_id);
        self.in_flight -= 1;
        let delivered_before = self.bytes_delivered();
        let unreported = len.saturating_sub(bytes_sent);
        self.bytes_sent += unreported;
        self.bytes_moved += unreported;
        self.bytes_done += len;
        if unreported > 0 {
            self.events.push_back(ProgressEvent::BytesSent {
                part: job.index,
                bytes: unreported,
                total_sent: self.bytes_sent,
                total_delivered: self.bytes_delivered(),
                total: self.plan.file_size(),
            });
        } else if self.bytes_delivered() != delivered_before {
            // Stored, so delivered, whatever the sockets were last seen to hold.
            self.events.push_back(ProgressEvent::Delivered {
                total_delivered: self.bytes_delivered(),
                total: self.plan.file_size(),
            });
        }
        self.done += 1;
        self.events.push_back(ProgressEvent::PartDone {
            part: job.index,
            parts_done: self.done,
            parts_total: self.parts_total(),
        });
        true
    }

    /// Reports that sending `job` failed at `now_unix_ms`. Its bytes stop counting as sent,
    /// and the policy decides (with the caller's `jitter` in `[0, 1)`): a retry is scheduled
    /// (see [`next_wakeup`](Self::next_wakeup)), or the part goes back to pending and the
    /// caller gives up. `None` when the report is ignored because `job` is not the attempt
    /// in flight.
    pub fn handle_part_failed(
        &mut self,
        job: PartJob,
        failure: Failure,
        now_unix_ms: u64,
        jitter: f64,
    ) -> Option<RetryDecision> {
        let deadline = self.retry_deadline_unix_ms();
        let policy = self.policy;
        let slot = self.in_flight_slot(job)?;
        let PartState::InFlight { bytes_sent, .. } = *slot else {
            return None;
        };
        let decision = policy.decide(&failure, job.attempt, now_unix_ms, Some(deadline), jitter);
        let next_attempt = job.attempt.saturating_add(1);
        *slot = match decision {
            RetryDecision::RetryAt { .. } => PartState::Waiting,
            RetryDecision::GiveUp(_) => PartState::Pending,
        };
        self.in_flight -= 1;
        self.bytes_sent = self.bytes_sent.saturating_sub(bytes_sent);
        match decision {
            RetryDecision::RetryAt {
                at_unix_ms,
                delay_ms,
            } => {
                self.waiting.insert(ScheduledRetry {
                    at_unix_ms,
                    index: job.index,
                    attempt: next_attempt,
                });
                self.retries += 1;
                self.events.push_back(ProgressEvent::PartRetry {
                    part: job.index,
                    attempt: next_attempt,
                    delay_ms,
                    bytes_wound_back: bytes_sent,
                    total_sent: self.bytes_sent,
                    total_delivered: self.bytes_delivered(),
                    failure,
                });
            }
            RetryDecision::GiveUp(_) => self.pending.push_front(job.index),
        }
        Some(decision)
    }

    /// Takes `job` out of flight without a decision of the policy (its data cannot be read,
    /// or its request cannot be built): it is pending again and its bytes stop counting.
    pub fn abandon(&mut self, job: PartJob) {
        let Some(slot) = self.in_flight_slot(job) else {
            return;
        };
        let PartState::InFlight { bytes_sent, .. } = *slot else {
            return;
        };
        *slot = PartState::Pending;
        self.in_flight -= 1;
        self.bytes_sent = self.bytes_sent.saturating_sub(bytes_sent);
        self.pending.push_front(job.index);
    }

    /// The next progress event, oldest first.
    pub fn poll_event(&mut self) -> Option<ProgressEvent> {
        self.events.pop_front()
    }

    /// Whether every part is stored.
    pub fn all_done(&self) -> bool {
        !self.uncut() && self.done as usize == self.cuts.len()
    }

    /// The complete request: every part id in file order, whatever order they finished
    /// in, and the md5 (lower-case hex) if given. `None` unless every part is stored.
    pub fn complete_request(&self, md5_hex: Option<String>) -> Option<CompleteUploadRequest> {
        let part_ids = self
            .states
            .iter()
            .map(|state| state.done_id().cloned())
            .collect::<Option<Vec<_>>>()?;
        Some(CompleteUploadRequest {
            part_ids,
            md5: md5_hex,
        })
    }

    /// Bytes and parts so far.
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_sent: self.bytes_sent,
            bytes_delivered: self.bytes_delivered(),
            bytes_total: self.plan.file_size(),
            parts_done: self.done,
            parts_total: self.parts_total(),
            retries: self.retries,
        }
    }

    /// What is needed to resume after a crash.
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            version: if self.plan.is_adaptive() {
                SNAPSHOT_VERSION
            } else {
                EQUAL_PARTS_VERSION
            },
            upload: self.upload.clone(),
            file_size: self.plan.file_size(),
            part_size: self.plan.part_size(),
            part_ids: self
                .states
                .iter()
                .map(|state| state.done_id().cloned())
                .collect(),
            // Equal parts keep the first format, which any version resumes.
            part_lens: self
                .plan
                .is_adaptive()
                .then(|| self.cuts.iter().map(|cut| cut.len).collect()),
            source: self.source.clone(),
            expires_locally_at_ms: self.expires_locally_at_ms,
        }
    }
}
