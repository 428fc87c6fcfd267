//! The records of the PostgreSQL + object storage backend, shared by several instances: a
//! mutation is one transaction over the rows of its scope ([`crate::pg`]), and the objects a
//! change stops needing are collected after it commits. Also its chores: its health, its
//! sweep, collecting objects, aborting the multipart uploads of dead writers.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use uploads_core::auth::KeyDigest;
use uploads_core::ledger::{Ledger, Planned};
use uploads_core::rate::{RateDecision, RateLimit};
use uploads_core::types::UploadId;

use super::locks::RecordLocks;
use super::{Answer, Ids, MutationError, NewBytes, Records, Scope, Swept};
use crate::byte_store::ByteStore;
use crate::clock::Clock;
use crate::md5_ahead::{HashAhead, InDatabase};
use crate::metrics::ScrapedGauge;
use crate::objects::{ObjectBytes, file_key, part_key};
use crate::pg::{DatabaseHealth, Now, PgRecords, decision_time};
use crate::readers::ReadGuard;
use crate::stats::ServerStats;

/// How long a mutation waits for this instance's earlier mutations of the same record (each
/// waits at most the database's lock timeout in turn).
const RECORD_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The records that several instances share, and the objects they name.
pub(crate) struct PostgresRecords {
    /// The ledger's records.
    records: Arc<PgRecords>,
    /// The bytes, which the records say when to delete.
    objects: Arc<ObjectBytes>,
    /// The clock that replaces the database's, when every instance is given the same one
    /// (tests that move time); `None`: the database's clock decides.
    clock: Option<Arc<dyn Clock>>,
    /// One request per record at a time on this instance takes a database connection.
    locks: RecordLocks,
}

impl PostgresRecords {
    pub(crate) fn new(
        records: PgRecords,
        objects: Arc<ObjectBytes>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        Self {
            records: Arc::new(records),
            objects,
            clock,
            locks: RecordLocks::default(),
        }
    }

    /// Whose clock decides the next transaction.
    fn now(&self) -> Now {
        decision_time(self.clock.as_deref())
    }
}

impl Records for PostgresRecords {
    async fn read<T, F>(&self, scope: &Scope, read: F) -> Answer<T>
    where
        T: Send,
        F: FnOnce(&Ledger, u64) -> Answer<T> + Send,
    {
        self.records.read(scope, self.now(), read).await
    }

    async fn mutate<T, F>(&self, scope: Scope, mut ids: Ids, plan: F) -> Result<T, MutationError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static,
    {
        // One request per record at a time on this instance takes a database connection
        // (the others wait here, bounded), so requests for one busy or locked Upload cannot
        // take the pool every other tenant needs.
        let record_lock = match scope.record() {
            Some(record) => Some(
                self.locks
                    .lock_within(&record, RECORD_LOCK_WAIT)
                    .await
                    .map_err(MutationError::Failed)?,
            ),
            None => None,
        };
        // One transaction that locks the rows it reads: the database keeps mutations of one
        // record apart, on every instance.
        let committed = self
            .records
            .mutate(&scope, self.now(), |ledger, now| {
                plan(ledger, now, &mut ids)
            })
            .await?;
        drop(record_lock);
        if !committed.doomed_now.is_empty() {
            // The bytes this change freed go before the answer, as on the directory (the
            // record is no longer locked meanwhile); a failure (logged) leaves them to the
            // sweep.
            let _ = self.collect_objects(Some(&committed.doomed_now)).await;
        }
        Ok(committed.response)
    }

    async fn intend(&self, bytes: NewBytes<'_>) -> Answer<()> {
        let key = match bytes {
            NewBytes::Part(upload, part) => part_key(upload, part),
            NewBytes::File(file) => file_key(file),
        };
        self.records.intend(&key, self.now()).await
    }

    /// Claims batches (another instance skips what this one holds) until nothing is due,
    /// then deletes the objects no record needs any more.
    async fn sweep(&self) -> Answer<Swept> {
        let mut swept = Swept::default();
        loop {
            let batch = self.records.sweep(self.now()).await?;
            swept.expired += batch.expired;
            if batch.records == 0 {
                break;
            }
        }
        self.collect_objects(None).await?;
        self.abort_stale_multipart().await?;
        // The md5 chains are rows of the Uploads: they went with them (no `uploads`).
        Ok(swept)
    }

    async fn settled(&self, record: &str) {
        drop(self.locks.lock(record).await);
    }

    async fn health(&self) -> Option<String> {
        match self.records.health().await {
            DatabaseHealth::Unreachable => Some("the database is unreachable".to_owned()),
            // Requests wait for a connection, but the database answers: this instance is
            // serving, and taking it out of a balancer would only move the load.
            DatabaseHealth::Busy => {
                tracing::warn!("health check: every database connection is in use");
                None
            }
            DatabaseHealth::Ok => None,
        }
    }

    fn enter_download(&self, _upload: &UploadId) -> Option<ReadGuard> {
        // A download may run on any instance, which no lock here can see: the bytes of a
        // File that goes stay for the download grace instead (see `crate::pg`).
        None
    }

    async fn take_request(&self, key: &KeyDigest, limit: RateLimit) -> Answer<RateDecision> {
        self.records.take_request(key, limit, self.now()).await
    }

    fn gauges(&self) -> Vec<ScrapedGauge> {
        let in_use = Arc::clone(&self.records);
        let waiting = Arc::clone(&self.records);
        vec![
            ScrapedGauge::new(
                "database_connections_in_use",
                "Connections of this instance's PostgreSQL pool serving a request",
                move || {
                    let status = in_use.pool_status();
                    i64::try_from(status.size.saturating_sub(status.available)).ok()
                },
            ),
            ScrapedGauge::new(
                "database_connections_waiting",
                "Requests of this instance waiting for a PostgreSQL connection",
                move || i64::try_from(waiting.pool_status().waiting).ok(),
            ),
        ]
    }

    fn hash_ahead(&self, bytes: Arc<dyn ByteStore>, stats: Arc<ServerStats>) -> Arc<dyn HashAhead> {
        Arc::new(InDatabase::new(
            Arc::clone(&self.records),
            bytes,
            stats,
            self.clock.clone(),
        ))
    }
}

/// Object deletions one sweep tick runs at most (the rest wait for the next tick).
const COLLECT_BATCH: i64 = 500;

impl PostgresRecords {
    /// Aborts the multipart uploads of Parts whose writer died (a SIGKILL mid-Part): those
    /// begun longer ago than an unrecorded object may live (the intent grace, by the database's
    /// clock), so the bucket stops keeping (and billing) their pieces. A failure is logged and
    /// left to the next sweep.
    async fn abort_stale_multipart(&self) -> Answer<()> {
        let now = self.records.time(self.now()).await?;
        let cutoff = now.saturating_sub(self.records.intent_grace());
        let initiated_before = UNIX_EPOCH + Duration::from_secs(cutoff);
        // A Part still being written (its intent not due) is kept whatever the bucket's dates
        // say: the records decide, as for every other object.
        let still_wanted = |keys: Vec<String>| async move {
            self.records
                .still_intended(self.now(), &keys)
                .await
                .map_err(|rejection| std::io::Error::other(rejection.to_string()))
        };
        match self
            .objects
            .abort_stale_multipart(initiated_before, still_wanted)
            .await
        {
            Ok(0) => {}
            Ok(aborted) => tracing::info!(aborted, "aborted stale multipart uploads"),
            Err(error) => {
                tracing::warn!(%error, "listing stale multipart uploads failed; retrying at the next sweep");
            }
        }
        Ok(())
    }

    /// Deletes the objects due for deletion in batches claimed with `SKIP LOCKED`: of `only`
    /// (a request's own change) in one batch, or of the whole backlog (a sweep) until a batch
    /// comes back short.
    async fn collect_objects(&self, only: Option<&[String]>) -> Answer<()> {
        loop {
            let deleted = self
                .records
                .collect_objects(self.now(), COLLECT_BATCH, only, |key| {
                    let objects = Arc::clone(&self.objects);
                    async move { objects.delete(&key).await }
                })
                .await?;
            if only.is_some() || deleted < usize::try_from(COLLECT_BATCH).unwrap_or(usize::MAX) {
                return Ok(());
            }
        }
    }
}
