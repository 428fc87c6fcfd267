//! Counters of what reached the Part handler, and of requests refused by a rate or a quota,
//! for tests and operators.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a test (or an operator) can read: what reached the Part handler, and what a
/// rate or a quota refused.
#[derive(Debug, Default)]
pub struct ServerStats {
    part_requests: AtomicU64,
    parts_stored: AtomicU64,
    parts_in_flight: AtomicU64,
    peak_parts_in_flight: AtomicU64,
    parts_reread_for_md5: AtomicU64,
    requests_rate_limited: AtomicU64,
    creates_over_quota: AtomicU64,
    downloads_in_flight: AtomicU64,
}

impl ServerStats {
    /// Add-part requests that reached the handler (stored or not).
    pub fn part_requests(&self) -> u64 {
        self.part_requests.load(Ordering::SeqCst)
    }

    /// Parts stored and recorded.
    pub fn parts_stored(&self) -> u64 {
        self.parts_stored.load(Ordering::SeqCst)
    }

    /// Add-part requests being handled now.
    pub fn parts_in_flight(&self) -> u64 {
        self.parts_in_flight.load(Ordering::SeqCst)
    }

    /// File contents being sent now.
    pub fn downloads_in_flight(&self) -> u64 {
        self.downloads_in_flight.load(Ordering::SeqCst)
    }

    /// The most add-part requests that were being handled at the same time.
    pub fn peak_parts_in_flight(&self) -> u64 {
        self.peak_parts_in_flight.load(Ordering::SeqCst)
    }

    /// Parts that completes with an md5 had to read again, because they had not been hashed
    /// ahead in the order the complete listed (0 when Parts arrive in file order).
    pub fn parts_reread_for_md5(&self) -> u64 {
        self.parts_reread_for_md5.load(Ordering::SeqCst)
    }

    /// Requests refused with 429 because their key was over its request rate.
    pub fn requests_rate_limited(&self) -> u64 {
        self.requests_rate_limited.load(Ordering::SeqCst)
    }

    /// Creates (`POST /uploads`, `POST /files`) refused because their owner was over a quota.
    pub fn creates_over_quota(&self) -> u64 {
        self.creates_over_quota.load(Ordering::SeqCst)
    }

    pub(crate) fn count_rate_limited(&self) {
        self.requests_rate_limited.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_over_quota(&self) {
        self.creates_over_quota.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_stored(&self) {
        self.parts_stored.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_reread(&self, parts: usize) {
        self.parts_reread_for_md5
            .fetch_add(parts as u64, Ordering::SeqCst);
    }
}

/// Counts a Part request in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a ServerStats);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(stats: &'a ServerStats) -> Self {
        stats.part_requests.fetch_add(1, Ordering::SeqCst);
        let now = stats.parts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_parts_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.parts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a download in flight until its content is sent (or its client went away).
pub(crate) struct Downloading(Arc<ServerStats>);

impl Downloading {
    pub(crate) fn enter(stats: &Arc<ServerStats>) -> Self {
        stats.downloads_in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(stats))
    }
}

impl Drop for Downloading {
    fn drop(&mut self) {
        self.0.downloads_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
