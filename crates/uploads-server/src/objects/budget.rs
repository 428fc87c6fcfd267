//! The server-wide memory budget of the object sinks.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::MIN_MEMORY_BUDGET;

/// A server-wide cap on the bytes the object sinks hold in memory (bytes gathered toward a
/// piece, pieces being sent).
///
/// Why gathered bytes spill to a temp file rather than wait for room: a write that waited
/// would leave its sink holding what it gathered so far, and stalled clients (a flood of
/// slow bodies) would then hold the whole budget while every other Part waited on them;
/// a sink that spills never waits for a gathering, so it cannot take part in a deadlock and
/// nobody is refused. Bytes must be in memory only while they are sent (object stores take
/// a body from memory): a piece read back from a spill file waits for room, bounded, and
/// the bytes it waits for belong to requests that end within their own deadlines, because
/// gathering may take at most half the budget.
#[derive(Debug)]
pub(super) struct MemoryBudget {
    /// The cap.
    pub(super) bytes: usize,
    /// Room left, in bytes.
    room: Arc<Semaphore>,
    /// Bytes held now.
    pub(super) held: AtomicUsize,
    /// The most ever held at once.
    pub(super) peak: AtomicUsize,
}

impl MemoryBudget {
    pub(super) fn new(bytes: usize) -> Arc<Self> {
        let bytes = bytes.clamp(MIN_MEMORY_BUDGET, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            bytes,
            room: Arc::new(Semaphore::new(bytes)),
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    fn reserved(self: &Arc<Self>, permit: SemaphorePermit<'_>, bytes: usize) -> Reservation {
        permit.forget();
        let held = self.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(held, Ordering::SeqCst);
        Reservation {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// Room for `bytes` more gathered bytes, now or never: gathering leaves half the budget
    /// to pieces being sent.
    pub(super) fn try_gather(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        if self.room.available_permits() < bytes.saturating_add(self.bytes / 2) {
            return None;
        }
        let permit = self
            .room
            .try_acquire_many(u32::try_from(bytes).ok()?)
            .ok()?;
        Some(self.reserved(permit, bytes))
    }

    /// Room for `bytes` about to be sent, waited for at most `limit`.
    pub(super) async fn send(
        self: &Arc<Self>,
        bytes: usize,
        limit: Duration,
    ) -> io::Result<Reservation> {
        let busy = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no room for {bytes} bytes within {limit:?} in the object store's memory budget of {} bytes",
                    self.bytes
                ),
            )
        };
        let wanted = u32::try_from(bytes).map_err(|_| busy())?;
        match tokio::time::timeout(limit, self.room.acquire_many(wanted)).await {
            Ok(Ok(permit)) => Ok(self.reserved(permit, bytes)),
            Ok(Err(closed)) => Err(io::Error::other(closed)),
            Err(_) => Err(busy()),
        }
    }
}

/// Bytes of the [`MemoryBudget`] held until this is dropped.
#[derive(Debug)]
pub(super) struct Reservation {
    budget: Arc<MemoryBudget>,
    /// How many bytes it holds.
    pub(super) bytes: usize,
}

impl Reservation {
    pub(super) fn empty(budget: &Arc<MemoryBudget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    pub(super) fn merge(&mut self, mut other: Self) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
            self.budget.room.add_permits(self.bytes);
        }
    }
}
