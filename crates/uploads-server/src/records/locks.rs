//! A lock per record (an Upload or File id) for the mutations of it in flight on this
//! instance: held from planning a mutation to applying it, so that mutations of one record
//! never interleave while those of different records run side by side.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use uploads_core::rejection::Rejection;

use super::Answer;

/// The record locks of one instance.
#[derive(Default)]
pub(super) struct RecordLocks {
    /// Only records with a mutation in flight keep an entry.
    locks: std::sync::Mutex<HashMap<String, Weak<Mutex<()>>>>,
}

impl RecordLocks {
    /// The lock of `key`, once every earlier holder let go of it.
    pub(super) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.retain(|_, lock| lock.strong_count() > 0);
            if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
                lock
            } else {
                let lock = Arc::new(Mutex::new(()));
                locks.insert(key.to_owned(), Arc::downgrade(&lock));
                lock
            }
        };
        lock.lock_owned().await
    }

    /// [`RecordLocks::lock`], waited for at most `wait`: then 503 with `Retry-After` (the
    /// record is busy: a holder elsewhere froze, or many requests for it arrived at once).
    pub(super) async fn lock_within(
        &self,
        key: &str,
        wait: Duration,
    ) -> Answer<OwnedMutexGuard<()>> {
        tokio::time::timeout(wait, self.lock(key))
            .await
            .map_err(|_| {
                tracing::warn!(record = %key, "gave up waiting for a busy record");
                Rejection::unavailable(
                    "Another request for this object is still being applied. Retry the request.",
                )
            })
    }
}
