//! Every action answered exactly once, whatever happens to the task that performs it.

use super::{Action, PartJob, Report, Transmit};
use crate::upload::RequestError;

/// The answer to one [`Action`], on its way back to the driver's loop: `send` (the driver's
/// channel, say) gets the report given to [`ReportGuard::send`], or, if the guard is dropped
/// without one (the task panicked, was aborted, or returned early), the report that says
/// so ([`RequestError::Unanswered`] for a request, an I/O error for the md5 pass or a
/// snapshot). So the loop never waits in vain; the machine ignores a report it no longer
/// waits for (of a part it stopped, say).
///
/// ```
/// use std::sync::mpsc;
/// use uploads_core::uploader::{Action, PartJob, Report, ReportGuard, Transmit};
/// use uploads_core::types::UploadId;
///
/// let job = PartJob { index: 0, offset: 0, len: 4, attempt: 1 };
/// let action = Action::Send(Transmit::Part { upload_id: UploadId::new("upload_1"), job });
/// let (reports, received) = mpsc::channel::<Report<std::io::Error>>();
/// let guard = ReportGuard::new(&action, move |report| { let _ = reports.send(report); });
/// let task = std::thread::spawn(move || {
///     let _guard = guard;
///     panic!("a bug in the part's task");
/// });
/// assert!(task.join().is_err());
/// assert!(matches!(received.recv(), Ok(Report::Part(reported, Err(_))) if reported == job));
/// ```
pub struct ReportGuard<E, S: FnOnce(Report<E>)> {
    send: Option<S>,
    action: Answering,
    _report: std::marker::PhantomData<fn(Report<E>)>,
}

/// The kind of action a guard answers: what its report says when it has none.
#[derive(Debug, Clone, Copy)]
enum Answering {
    Create,
    Part(PartJob),
    Complete,
    Cancel,
    Hash,
    Snapshot,
}

impl Answering {
    fn unanswered<E>(self) -> Report<E> {
        let io = |what: &str| {
            std::io::Error::other(format!("the driver's {what} task ended without an answer"))
        };
        match self {
            Self::Create => Report::Created(Err(RequestError::Unanswered)),
            Self::Part(job) => Report::Part(job, Err(RequestError::Unanswered)),
            Self::Complete => Report::Completed(Err(RequestError::Unanswered)),
            Self::Cancel => Report::Cancelled(Err(RequestError::Unanswered)),
            Self::Hash => Report::Hashed(Err(io("md5"))),
            Self::Snapshot => Report::SnapshotDone(Err(io("snapshot"))),
        }
    }
}

impl<E, S: FnOnce(Report<E>)> std::fmt::Debug for ReportGuard<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportGuard")
            .field("action", &self.action)
            .field("answered", &self.send.is_none())
            .finish()
    }
}

impl<E, S: FnOnce(Report<E>)> ReportGuard<E, S> {
    /// The guard of `action`'s answer, to be given to `send`; `None` for an action that
    /// expects no report (the `Stop…` actions).
    pub fn new(action: &Action, send: S) -> Option<Self> {
        let action = match action {
            Action::Send(Transmit::Create(_)) => Answering::Create,
            Action::Send(Transmit::Part { job, .. }) => Answering::Part(*job),
            Action::Send(Transmit::Complete { .. }) => Answering::Complete,
            Action::Send(Transmit::Cancel { .. }) => Answering::Cancel,
            Action::Hash { .. } => Answering::Hash,
            Action::WriteSnapshot { .. } | Action::RemoveSnapshot { .. } => Answering::Snapshot,
            Action::StopPart(_) | Action::StopRequest | Action::StopHash => return None,
        };
        Some(Self {
            send: Some(send),
            action,
            _report: std::marker::PhantomData,
        })
    }

    /// Sends the answer.
    pub fn send(mut self, report: Report<E>) {
        if let Some(send) = self.send.take() {
            send(report);
        }
    }
}

impl<E, S: FnOnce(Report<E>)> Drop for ReportGuard<E, S> {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            send(self.action.unanswered());
        }
    }
}
