//! What a driver may show the user while an upload runs.

use crate::retry::{Failure, GiveUpReason};

/// A part that failed for good, which ends the upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("part {part} gave up after {attempts} attempt(s): {reason}")]
pub struct PartFailure {
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
/// with [`Uploader::poll_event`](super::Uploader::poll_event).
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
        /// Of those, the bytes that have left the machine (see [`Progress::bytes_delivered`]).
        total_delivered: u64,
        /// The file's size.
        total: u64,
    },
    /// The driver's sockets drained: more of the bytes sent have left the machine. Comes
    /// only from a driver that reports [`Report::Unacknowledged`](super::Report::Unacknowledged).
    Delivered {
        /// Bytes that have left the machine (see [`Progress::bytes_delivered`]).
        total_delivered: u64,
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
        /// Of those, the bytes that have left the machine.
        total_delivered: u64,
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
    /// A part failed for good, which ends the upload.
    GaveUp(PartFailure),
}

/// Bytes and parts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent: done parts in full, in-flight parts as far as reported (handed to the
    /// connection).
    pub bytes_sent: u64,
    /// Of `bytes_sent`, those that have left the machine: the sent bytes less what the
    /// driver's sockets still hold unacknowledged by the peer, as the driver last reported
    /// it ([`Report::Unacknowledged`](super::Report::Unacknowledged)), and never less than
    /// the parts stored. A driver that cannot see its sockets reports nothing, and this is
    /// `bytes_sent`. The rate and the time left follow this, not `bytes_sent`: a socket's
    /// buffer takes megabytes at once, which a slow link then needs seconds to carry.
    pub bytes_delivered: u64,
    /// The file's size.
    pub bytes_total: u64,
    /// Parts the service has stored.
    pub parts_done: u32,
    /// How many parts there are.
    pub parts_total: u32,
    /// Retries scheduled so far.
    pub retries: u64,
}
