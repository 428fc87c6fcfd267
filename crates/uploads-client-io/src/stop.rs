//! Stopping uploads from outside: one signal, the same in both clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use uploads_core::uploader::StopMode;

/// Stops uploads from any thread or task (a Ctrl-C handler, a progress callback...).
///
/// Once given, the uploads of every client carrying the signal end within a few tens of
/// milliseconds with [`AbortCause::Interrupted`](uploads_core::upload::AbortCause::Interrupted)
/// (or [`UploadError::Interrupted`](uploads_core::upload::UploadError::Interrupted) before the
/// Upload exists): parts in flight are cut short and nothing new starts.
/// [`stop`](Self::stop) keeps the Upload (never cancelled) so the snapshot can resume it;
/// [`cancel`](Self::cancel) cancels it. The first call wins.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicU8>);

/// [`StopSignal`]'s states.
const NOT_STOPPED: u8 = 0;
const STOP_AND_KEEP: u8 = 1;
const STOP_AND_CANCEL: u8 = 2;

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal: the Upload is kept for a resume.
    pub fn stop(&self) {
        self.give(STOP_AND_KEEP);
    }

    /// Gives the signal: the Upload is cancelled.
    pub fn cancel(&self) {
        self.give(STOP_AND_CANCEL);
    }

    fn give(&self, mode: u8) {
        let _ = self
            .0
            .compare_exchange(NOT_STOPPED, mode, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        self.mode().is_some()
    }

    /// How the upload stops, once the signal is given.
    pub fn mode(&self) -> Option<StopMode> {
        match self.0.load(Ordering::Relaxed) {
            STOP_AND_KEEP => Some(StopMode::Keep),
            STOP_AND_CANCEL => Some(StopMode::Cancel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_wins_and_every_clone_sees_it() {
        let signal = StopSignal::new();
        let seen_by_a_client = signal.clone();
        assert_eq!(seen_by_a_client.mode(), None);
        signal.cancel();
        signal.stop();
        assert!(seen_by_a_client.is_stopped());
        assert_eq!(seen_by_a_client.mode(), Some(StopMode::Cancel));
    }
}
