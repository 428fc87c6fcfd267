//! The server's one place that reads the time, and a manual clock for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in unix seconds; the ledger's `now`.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the unix epoch.
    fn now(&self) -> u64;

    /// Microseconds since the unix epoch, for what needs finer steps than a second (a rate
    /// limit's bucket); by default [`Clock::now`]'s seconds, so a test clock moves it in
    /// whole seconds.
    fn now_micros(&self) -> u64 {
        self.now().saturating_mul(1_000_000)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        // A clock before 1970 is a broken machine; count it as the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }

    fn now_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            })
    }
}

/// A clock that moves only when told to: expiry tests run an hour in a microsecond.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now` (unix seconds).
    pub fn new(now: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock of a one-process server, watched: a reading earlier than the latest one (an
/// NTP step back after a jump, an operator's correction) is logged once per step. The time
/// is still the clock's own: what a step back could do wrong is prevented by the records
/// (an Upload whose Parts were removed stays expired: `UploadRecord::parts_removed`).
pub(crate) struct WatchedClock {
    inner: Arc<dyn Clock>,
    latest: AtomicU64,
}

impl WatchedClock {
    /// Watches `inner`.
    pub(crate) fn new(inner: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            latest: AtomicU64::new(0),
        }
    }

    /// The time, and by how many seconds it went back since the latest reading (0 if not).
    fn read(&self) -> (u64, u64) {
        let now = self.inner.now();
        let latest = self.latest.fetch_max(now, Ordering::SeqCst);
        (now, latest.saturating_sub(now))
    }
}

impl Clock for WatchedClock {
    fn now(&self) -> u64 {
        let (now, back) = self.read();
        if back > 0 {
            tracing::warn!(
                seconds = back,
                "the clock went back; Uploads whose Parts were removed stay expired"
            );
            // Logged once: the next reading compares with this one.
            self.latest.store(now, Ordering::SeqCst);
        }
        now
    }

    fn now_micros(&self) -> u64 {
        self.inner.now_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_back_is_noticed_once_and_the_time_stays_the_clocks() {
        let manual = ManualClock::new(1_000);
        let watched = WatchedClock::new(Arc::new(manual.clone()));
        assert_eq!(watched.read(), (1_000, 0));
        manual.set(5_000);
        assert_eq!(watched.read(), (5_000, 0));
        manual.set(1_200);
        assert_eq!(watched.read(), (1_200, 3_800));
        assert_eq!(watched.now(), 1_200);
        // `now` logged the step and moved on from it.
        assert_eq!(watched.read(), (1_200, 0));
        manual.advance(1);
        assert_eq!(watched.now(), 1_201);
    }
}
