//! The parts phase of an upload.

use super::{AbortCause, RequestError};
use crate::retry::{GiveUpReason, RetryDecision};
use crate::session::{PartJob, ProgressEvent, UploadSession};
use crate::types::{CompleteUploadRequest, PartId};

/// What a worker of a high-level upload does next (see [`UploadRun::next_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum NextStep {
    /// Send this part, then report with [`UploadRun::handle_part_result`].
    Send(PartJob),
    /// Nothing to send now: wait until another worker reports, or until the given time
    /// (unix milliseconds), when a retry is due.
    Wait(Option<u64>),
    /// The parts are over (all stored, or the upload gives up): the worker stops.
    Stop,
}

/// The parts phase of one high-level upload as all of the adapter's workers share it
/// (behind the adapter's lock): the [`UploadSession`] and the first reason to give up. It
/// turns each part attempt's result into the session's update or the abort cause, so both
/// adapters decide alike; they only send, sleep, and read the clock.
///
/// ```text
///   next_step(now) ─┬─ Send(job) ─▶ (adapter sends) ─▶ handle_part_result(job, result, now, jitter)
///                   │                                     ├─ stored ─────────────▶ the part is done
///                   │                                     ├─ retryable ──────────▶ a retry is scheduled
///                   │                                     └─ failed for good ────▶ the abort cause
///                   ├─ Wait(until) ─▶ sleep until then, or until another worker reports
///                   └─ Stop ─▶ (every worker stopped) ─▶ complete_request(md5) ─▶ Ok(request) | Err(cause)
/// ```
///
/// Causes only the adapter sees (the caller's stop, a source that cannot be hashed, a
/// snapshot that cannot be written) go in through [`abort`](Self::abort); the first cause
/// wins.
#[derive(Debug)]
pub(crate) struct UploadRun<E> {
    session: UploadSession,
    abort: Option<AbortCause<E>>,
}

impl<E> UploadRun<E> {
    /// The parts phase of `session`; its deadline bounds the run.
    pub fn new(session: UploadSession) -> Self {
        Self {
            session,
            abort: None,
        }
    }

    /// The session, for its snapshot, progress and missing parts.
    pub fn session(&self) -> &UploadSession {
        &self.session
    }

    /// Gives up for `cause`, unless the run gave up already (the first cause wins): no part
    /// is handed out any more.
    pub fn abort(&mut self, cause: AbortCause<E>) {
        self.abort.get_or_insert(cause);
    }

    /// Whether the run gives up.
    pub fn is_aborted(&self) -> bool {
        self.abort.is_some()
    }

    /// What a worker does next at `now_unix_ms`. Once the deadline has come the run gives
    /// up with [`AbortCause::Deadline`].
    pub fn next_step(&mut self, now_unix_ms: u64) -> NextStep {
        if self.abort.is_some() || self.session.is_done() {
            return NextStep::Stop;
        }
        if self
            .session
            .deadline_unix_ms()
            .is_some_and(|deadline| now_unix_ms >= deadline)
        {
            self.abort(AbortCause::Deadline);
            return NextStep::Stop;
        }
        match self.session.next_job(now_unix_ms) {
            Some(job) => NextStep::Send(job),
            None => NextStep::Wait(self.session.next_wakeup()),
        }
    }

    /// Reports that `bytes` more bytes of part `index` went out.
    pub fn handle_bytes_sent(&mut self, index: u32, bytes: u64) {
        self.session.handle_bytes_sent(index, bytes);
    }

    /// Reports how sending `job` ended at `now_unix_ms`; returns whether the part is stored.
    ///
    /// A stored part is recorded even after the run gave up (a snapshot keeps it). A failure
    /// after the run gave up changes nothing. Otherwise a failure becomes, in this order:
    /// * [`AbortCause::Source`] when the data could not be read;
    /// * [`AbortCause::Deadline`] when the deadline has come (the attempt was likely cut
    ///   short by it);
    /// * [`AbortCause::Part`] with [`GiveUpReason::CannotSend`] when the request cannot be
    ///   built, which no retry fixes;
    /// * else the session's decision with the caller's `jitter` in `[0, 1)`: a retry
    ///   scheduled, or [`AbortCause::Part`] with the policy's reason.
    pub fn handle_part_result(
        &mut self,
        job: PartJob,
        result: Result<PartId, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) -> bool {
        let error = match result {
            Ok(part_id) => {
                self.session.handle_part_done(job.index, part_id);
                return true;
            }
            Err(error) => error,
        };
        if self.abort.is_some() {
            return false;
        }
        let deadline_passed = self
            .session
            .deadline_unix_ms()
            .is_some_and(|deadline| now_unix_ms >= deadline);
        let cause = match error {
            RequestError::Source(error) => Some(AbortCause::Source(error)),
            _ if deadline_passed => Some(AbortCause::Deadline),
            error => {
                let reason = match error.as_failure(now_unix_ms) {
                    None => Some(GiveUpReason::CannotSend),
                    Some(failure) => match self.session.handle_part_failed(
                        job.index,
                        failure,
                        now_unix_ms,
                        jitter,
                    ) {
                        Some(RetryDecision::GiveUp(reason)) => Some(reason),
                        Some(RetryDecision::RetryAt { .. }) | None => None,
                    },
                };
                reason.map(|reason| AbortCause::Part {
                    part: job.index,
                    reason,
                    error,
                })
            }
        };
        if let Some(cause) = cause {
            self.abort(cause);
        }
        false
    }

    /// The next progress event, oldest first; the adapter MUST drain them.
    pub fn poll_event(&mut self) -> Option<ProgressEvent> {
        self.session.poll_event()
    }

    /// Once every worker stopped: the complete request (part ids in file order, and the md5
    /// if given), or why the upload gives up. The abort cause is taken out.
    pub fn complete_request(
        &mut self,
        md5_hex: Option<String>,
    ) -> Result<CompleteUploadRequest, AbortCause<E>> {
        if let Some(cause) = self.abort.take() {
            return Err(cause);
        }
        self.session
            .complete_request(md5_hex)
            .ok_or_else(|| AbortCause::Unfinished {
                missing: u32::try_from(self.session.missing_parts().count()).unwrap_or(u32::MAX),
            })
    }
}
