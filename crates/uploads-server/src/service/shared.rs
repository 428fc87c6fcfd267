//! The scale-out backend's chores: its health, its sweep, collecting objects.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::Answer;
use crate::clock::Clock;
use crate::objects::ObjectBytes;
use crate::pg::{DatabaseHealth, Now, PgRecords, decision_time};

/// The records and bytes that several instances share.
pub(crate) struct Shared {
    /// The ledger's records.
    pub records: Arc<PgRecords>,
    /// The bytes (also the service's `store`).
    pub objects: Arc<ObjectBytes>,
    /// The clock that replaces the database's, when every instance is given the same one
    /// (tests that move time); `None`: the database's clock decides.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Shared {
    /// Whose clock decides the next transaction.
    pub(super) fn now(&self) -> Now {
        decision_time(self.clock.as_deref())
    }
}

/// Object deletions one sweep tick runs at most (the rest wait for the next tick).
const COLLECT_BATCH: i64 = 500;

/// What makes the scale-out backend unusable now, as the end of a sentence (`" The
/// database is unreachable."`), or `None` while both the database and the bucket answer.
pub(super) async fn shared_health(shared: &Shared) -> Option<String> {
    let (database, bucket) = tokio::join!(shared.records.health(), shared.objects.check());
    let mut problems = Vec::new();
    match database {
        DatabaseHealth::Unreachable => problems.push("the database is unreachable".to_owned()),
        // Requests wait for a connection, but the database answers: this instance is
        // serving, and taking it out of a balancer would only move the load.
        DatabaseHealth::Busy => tracing::warn!("health check: every database connection is in use"),
        DatabaseHealth::Ok => {}
    }
    if let Err(error) = bucket {
        problems.push(error.to_string());
    }
    if problems.is_empty() {
        return None;
    }
    let problems = problems.join("; ");
    tracing::error!(%problems, "health check: the shared backend is not usable");
    Some(format!(" {problems}."))
}

/// One sweep of shared records: claims batches (another instance skips what this one holds)
/// until nothing is due, then deletes the objects no record needs any more.
pub(super) async fn sweep_shared(shared: &Shared) -> Answer<()> {
    while shared.records.sweep(shared.now()).await? > 0 {}
    collect_objects(shared, None).await?;
    abort_stale_multipart(shared).await
}

/// Aborts the multipart uploads of Parts whose writer died (a SIGKILL mid-Part): those
/// begun longer ago than an unrecorded object may live (the intent grace, by the database's
/// clock), so the bucket stops keeping (and billing) their pieces. A failure is logged and
/// left to the next sweep.
async fn abort_stale_multipart(shared: &Shared) -> Answer<()> {
    let now = shared.records.time(shared.now()).await?;
    let cutoff = now.saturating_sub(shared.records.intent_grace());
    let initiated_before = UNIX_EPOCH + Duration::from_secs(cutoff);
    // A Part still being written (its intent not due) is kept whatever the bucket's dates
    // say: the records decide, as for every other object.
    let still_wanted = |keys: Vec<String>| async move {
        shared
            .records
            .still_intended(shared.now(), &keys)
            .await
            .map_err(|rejection| std::io::Error::other(rejection.to_string()))
    };
    match shared
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
pub(super) async fn collect_objects(shared: &Shared, only: Option<&[String]>) -> Answer<()> {
    loop {
        let deleted = shared
            .records
            .collect_objects(shared.now(), COLLECT_BATCH, only, |key| {
                let objects = Arc::clone(&shared.objects);
                async move { objects.delete(&key).await }
            })
            .await?;
        if only.is_some() || deleted < usize::try_from(COLLECT_BATCH).unwrap_or(usize::MAX) {
            return Ok(());
        }
    }
}
