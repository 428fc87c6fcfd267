//! One turn of a client's loop around the [`Uploader`], up to the wait for the next report:
//! the same in both clients, whatever their transport.

use std::time::Duration;

use uploads_core::types::Upload;
use uploads_core::upload::{ProgressCallback, UploadError};
use uploads_core::uploader::{Action, Uploader};

use crate::{StopSignal, now_unix_ms};

/// The longest a loop waits before it looks at its stop signal again.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What the loop does after a turn.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per turn, returned at once; the result is handed on unboxed"
)]
pub enum Turn<E> {
    /// The upload ended: return this.
    Finished(Result<Upload, UploadError<E>>),
    /// Wait for the next report, at most this long (`None`: until one comes); then hand it
    /// to the machine, or call its `handle_timeout`.
    Wait(Option<Duration>),
}

/// Applies the stop signal, gives every action to `start`, hands the progress events to the
/// callback (after the decision to wait, outside any lock: a slow callback holds up no part,
/// and what finishes meanwhile waits in the loop's channel), and says what to do next.
pub fn turn<E>(
    uploader: &mut Uploader<E>,
    stop: Option<&StopSignal>,
    progress: Option<&ProgressCallback>,
    mut start: impl FnMut(Action, &mut Uploader<E>),
) -> Turn<E> {
    let now = now_unix_ms();
    if let Some(mode) = stop.and_then(StopSignal::mode) {
        uploader.stop(mode, now);
    }
    while let Some(action) = uploader.poll_action(now) {
        start(action, uploader);
    }
    let timeout = uploader.poll_timeout();
    while let Some(event) = uploader.poll_event() {
        if let Some(callback) = progress {
            callback(&event);
        }
    }
    if let Some(result) = uploader.poll_finished() {
        return Turn::Finished(result);
    }
    let wait = timeout.map(|at| Duration::from_millis(at.saturating_sub(now_unix_ms())));
    Turn::Wait(match stop {
        Some(_) => Some(wait.map_or(STOP_POLL, |wait| wait.min(STOP_POLL))),
        None => wait,
    })
}
