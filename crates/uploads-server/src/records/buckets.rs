//! The rate limits of one process: a token bucket per API key, in memory (the arithmetic is
//! the core's, [`uploads_core::rate`]). Bounded: past [`MAX_BUCKETS`] keys, buckets that are
//! full again are forgotten, which changes no answer (a forgotten bucket is a full one).

use std::collections::HashMap;
use std::sync::Mutex;

use uploads_core::auth::KeyDigest;
use uploads_core::rate::{RateDecision, RateLimit};

/// Keys whose buckets are kept before full ones are forgotten. Keys are configured, so this
/// is only reached by a server with very many of them.
pub(crate) const MAX_BUCKETS: usize = 10_000;

/// Each key's bucket: its theoretical arrival time (microseconds).
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    tats: Mutex<HashMap<KeyDigest, u64>>,
}

impl Buckets {
    /// Takes a token from `key`'s bucket at `now` (microseconds).
    pub(crate) fn take(&self, key: &KeyDigest, limit: RateLimit, now: u64) -> RateDecision {
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let decision = limit.take(tats.get(key).copied(), now);
        if decision.allowed {
            tats.insert(*key, decision.tat);
            if tats.len() > MAX_BUCKETS {
                tats.retain(|_, tat| !limit.is_full(*tat, now));
            }
        }
        decision
    }

    /// How many buckets are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.lock().map_or(0, |tats| tats.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_buckets_are_forgotten_past_the_bound_and_answers_stay_the_same() {
        let buckets = Buckets::default();
        let limit = RateLimit::per_minute(60);
        for key in 0..=MAX_BUCKETS {
            let digest = KeyDigest::of(&format!("sk-{key}"));
            assert!(buckets.take(&digest, limit, 0).allowed);
        }
        // All spent a token at 0: none is full yet, so none was forgotten.
        assert_eq!(buckets.len(), MAX_BUCKETS + 1);
        // A second later they are full again: the next new key makes room.
        let newcomer = KeyDigest::of("sk-new");
        assert!(buckets.take(&newcomer, limit, 1_000_000).allowed);
        assert_eq!(buckets.len(), 1);
        // A key's bucket is its own.
        for _ in 0..59 {
            assert!(buckets.take(&newcomer, limit, 1_000_000).allowed);
        }
        assert!(!buckets.take(&newcomer, limit, 1_000_000).allowed);
        assert!(
            buckets
                .take(&KeyDigest::of("sk-0"), limit, 1_000_000)
                .allowed
        );
    }
}
