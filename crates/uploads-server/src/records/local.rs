//! The records of the directory backend: the ledger in memory, one process.
//!
//! A mutation takes its record's lock, is planned over the ledger (locked only to plan and
//! to apply, never across an fsync), has its steps made durable in the directory's journal
//! in order, and only then is applied and answered. A failed durable write is a 500 and the
//! mutation is not applied: the client retries, it is never told that a write worked.

use std::io;
use std::sync::Arc;

use tokio::sync::Mutex;
use uploads_core::auth::KeyDigest;
use uploads_core::ledger::{Change, Ledger, Planned, Step};
use uploads_core::limits::Limits;
use uploads_core::rate::{RateDecision, RateLimit};
use uploads_core::rejection::Rejection;
use uploads_core::types::UploadId;

use super::buckets::Buckets;
use super::locks::RecordLocks;
use super::recovery::recover_records;
use super::{Answer, Ids, MutationError, NewBytes, Records, Scope, Swept};
use crate::byte_store::ByteStore;
use crate::clock::{Clock, WatchedClock};
use crate::md5_ahead::{HashAhead, InMemory};
use crate::metrics::{ScrapedGauge, free_bytes_of};
use crate::readers::{ReadGuard, Readers};
use crate::stats::ServerStats;
use crate::store::DirStore;

/// Records swept between two yields to the runtime.
const SWEEP_YIELD_EVERY: usize = 32;

/// The ledger of one process over a data directory.
pub(crate) struct LocalRecords {
    /// Locked briefly: to plan a mutation, to apply it, to read. Mutations of one record are
    /// kept apart by its record lock (the ledger's contract), not by this.
    ledger: Mutex<Ledger>,
    locks: RecordLocks,
    store: Arc<DirStore>,
    /// Downloads in flight, which Part removals wait for.
    readers: Arc<Readers>,
    clock: Arc<dyn Clock>,
    /// Each API key's request-rate bucket.
    buckets: Buckets,
}

impl LocalRecords {
    /// Reads the records of `store` back: sweeps what a crash left (temp files, Parts never
    /// recorded, an interrupted complete) and rebuilds the ledger.
    pub(crate) async fn recover(
        store: Arc<DirStore>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        let loaded = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || recover_records(&store))
                .await
                .map_err(io::Error::other)??
        };
        let readers = Arc::new(Readers::new(Arc::clone(&store) as Arc<dyn ByteStore>));
        Ok(Self {
            ledger: Mutex::new(Ledger::load(limits, loaded.0, loaded.1)),
            locks: RecordLocks::default(),
            store,
            readers,
            clock: Arc::new(WatchedClock::new(clock)),
            buckets: Buckets::default(),
        })
    }

    /// Makes a change's steps durable, in order, on a blocking thread.
    async fn persist(&self, change: &Change) -> Answer<()> {
        let steps = change.steps().to_vec();
        let (store, readers) = (Arc::clone(&self.store), Arc::clone(&self.readers));
        tokio::task::spawn_blocking(move || persist(&store, &readers, &steps))
            .await
            .map_err(io::Error::other)
            .and_then(|result| result)
            .map_err(|error| {
                tracing::error!(%error, "a durable write failed; the request was not applied");
                Rejection::server_error(
                    "The server could not store the request durably, so it was not applied. Retry it.",
                )
            })
    }
}

impl Records for LocalRecords {
    async fn read<T, F>(&self, _scope: &Scope, read: F) -> Answer<T>
    where
        T: Send,
        F: FnOnce(&Ledger, u64) -> Answer<T> + Send,
    {
        read(&*self.ledger.lock().await, self.clock.now())
    }

    async fn mutate<T, F>(&self, scope: Scope, mut ids: Ids, plan: F) -> Result<T, MutationError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static,
    {
        let _record = match scope.record() {
            Some(record) => Some(self.locks.lock(&record).await),
            None => None,
        };
        let planned = {
            let ledger = self.ledger.lock().await;
            plan(&ledger, self.clock.now(), &mut ids).map_err(MutationError::Refused)?
        };
        if let Some(change) = planned.change {
            self.persist(&change).await.map_err(MutationError::Failed)?;
            apply(&mut *self.ledger.lock().await, change).map_err(MutationError::Failed)?;
        }
        Ok(planned.response)
    }

    async fn intend(&self, _bytes: NewBytes<'_>) -> Answer<()> {
        // Bytes no record names are found and removed by recovery at the next start.
        Ok(())
    }

    /// One record at a time: the ledger is locked only to plan and to apply each, never
    /// across the disk work, so requests keep flowing; a record whose removal fails is logged
    /// and skipped (tried again at the next sweep) and never blocks the others.
    async fn sweep(&self) -> Answer<Swept> {
        let changes = self.ledger.lock().await.sweep_each(self.clock.now());
        let mut swept = Swept::default();
        for (done, change) in changes.into_iter().enumerate() {
            if done > 0 && done % SWEEP_YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
            let Some((key, upload)) = swept_record(&change) else {
                continue;
            };
            // A sweep saves an Upload only to mark an expired one's Parts removed.
            let expired_mark = matches!(change.steps().first(), Some(Step::SaveUpload(_)));
            let _record = self.locks.lock(&key).await;
            // Planned before the lock was taken: a mutation may have changed the record
            // since (the next sweep plans it again).
            if !self.ledger.lock().await.is_current(&change) {
                continue;
            }
            if let Err(rejection) = self.persist(&change).await {
                tracing::error!(record = %key, error = %rejection, "sweeping a record failed; skipped until the next sweep");
                continue;
            }
            if let Err(rejection) = apply(&mut *self.ledger.lock().await, change) {
                tracing::error!(record = %key, error = %rejection, "a swept record changed meanwhile");
                continue;
            }
            if expired_mark {
                swept.expired += 1;
            }
            swept.uploads.extend(upload);
        }
        Ok(swept)
    }

    async fn settled(&self, record: &str) {
        drop(self.locks.lock(record).await);
    }

    async fn health(&self) -> Option<String> {
        // The records are on the directory the bytes' probe checks.
        None
    }

    fn enter_download(&self, upload: &UploadId) -> Option<ReadGuard> {
        Some(self.readers.enter(upload))
    }

    async fn take_request(&self, key: &KeyDigest, limit: RateLimit) -> Answer<RateDecision> {
        Ok(self.buckets.take(key, limit, self.clock.now_micros()))
    }

    fn gauges(&self) -> Vec<ScrapedGauge> {
        vec![free_bytes_of(self.store.root().to_path_buf())]
    }

    fn hash_ahead(&self, bytes: Arc<dyn ByteStore>, stats: Arc<ServerStats>) -> Arc<dyn HashAhead> {
        Arc::new(InMemory::new(bytes, stats))
    }
}

/// The record a sweep change removes: its lock's key, and the Upload whose Parts go.
fn swept_record(change: &Change) -> Option<(String, Option<UploadId>)> {
    match change.steps().first()? {
        Step::RemoveFile(id) => Some((id.to_string(), None)),
        // An expired Upload marked before its Parts go.
        Step::SaveUpload(record) => Some((record.id.to_string(), Some(record.id.clone()))),
        Step::RemoveParts { upload_id, .. } | Step::RemoveUpload(upload_id) => {
            Some((upload_id.to_string(), Some(upload_id.clone())))
        }
        _ => None,
    }
}

/// Applies a persisted change; a refusal means the disk and the ledger may disagree (a
/// 500: restarting reloads the disk's truth).
fn apply(ledger: &mut Ledger, change: Change) -> Answer<()> {
    ledger.apply(change).map_err(|error| {
        tracing::error!(%error, "the ledger refused a persisted change");
        Rejection::server_error("The server's state changed during the request. Retry it.")
    })
}

/// Makes a change's steps durable, in order.
fn persist(store: &DirStore, readers: &Readers, steps: &[Step]) -> io::Result<()> {
    for step in steps {
        match step {
            Step::SaveUpload(record) => store.save_upload(&record.id, &to_json(record)?)?,
            Step::AddPart { upload_id, part } => store.append_part(upload_id, &to_json(part)?)?,
            Step::SaveFile(record) => store.save_file(record.id(), &to_json(record)?)?,
            Step::RemoveFile(id) => store.remove_file(id)?,
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => {
                // Bytes no record needs any more (the record saved or removed before says
                // so): the change is committed, and a failure here only leaves garbage that
                // recovery or a later sweep removes. Failing the request would answer "not
                // applied" for a change a restart sees as applied.
                if let Err(error) = readers.remove_parts(upload_id, part_ids) {
                    tracing::warn!(%error, %upload_id, "could not remove Parts no record needs; left for recovery");
                }
            }
            Step::RemoveUpload(id) => store.remove_upload(id)?,
        }
    }
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}
