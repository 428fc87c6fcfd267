//! Quotas and request rates on PostgreSQL: the same for the owner (or the key) as a whole,
//! whichever instances its requests reach.
//!
//! * **Quotas**: a create under a quota ([`Scope::Quota`]) takes a transaction-level
//!   advisory lock on its owner, then counts the owner's usage (its live Files' bytes and its
//!   pending Uploads' declared bytes, from the generated `bytes` columns of migration 0007)
//!   at the transaction's `now`; the ledger decides over that count
//!   ([`Ledger::set_usage`](uploads_core::ledger::Ledger::set_usage)). Creates of one owner
//!   on any instances so take turns: the second counts the first's row once it committed.
//!   Other changes (a complete, a cancel, a delete, the sweep) only lower the usage, so they
//!   need not wait for the lock.
//! * **Rates**: one row per API key digest in `rate_buckets`, updated by one statement with
//!   the database's clock (in microseconds), never an instance's: the core's GCRA formula
//!   ([`uploads_core::rate`]) written in SQL, and the answer read back with
//!   [`RateDecision::from_stored`].

use tokio_postgres::GenericClient;
use uploads_core::auth::KeyDigest;
use uploads_core::ledger::{Owner, Usage};
use uploads_core::rate::{RateDecision, RateLimit};
use uploads_core::rejection::Rejection;

use super::{LoadError, Loaded, Now, PgRecords, bounded, to_i64, to_u64, unavailable};
#[cfg(doc)]
use crate::records::Scope;

/// The key space of the owners' advisory locks (the second argument of
/// `hashtextextended`), apart from any other lock of the service.
const QUOTA_LOCK_SEED: i64 = 0x7175_6f74_61; // "quota"

/// Loads `owner`'s usage at `now` into `loaded`; with `lock`, first waits (at most the
/// session's `lock_timeout`) for the owner's other creates to commit or roll back.
pub(super) async fn load_usage(
    client: &impl GenericClient,
    owner: &Owner,
    now: u64,
    lock: bool,
    loaded: &mut Loaded,
) -> Result<(), LoadError> {
    if lock {
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
                &[&owner.as_str(), &QUOTA_LOCK_SEED],
            )
            .await?;
    }
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(files), 0)::bigint, COALESCE(SUM(bytes), 0)::bigint FROM (
                 SELECT count(*) AS files, SUM(bytes) AS bytes FROM files
                  WHERE owner = $1 AND (expires_at IS NULL OR expires_at > $2)
                 UNION ALL
                 SELECT count(*), SUM(bytes) FROM uploads
                  WHERE owner = $1 AND status = 'pending' AND NOT parts_removed
                    AND expires_at > $2
             ) AS usage",
            &[&owner.as_str(), &to_i64(now)],
        )
        .await?;
    loaded.usage = Some((
        owner.clone(),
        Usage {
            files: to_u64(row.try_get(0)?),
            bytes: to_u64(row.try_get(1)?),
        },
    ));
    Ok(())
}

/// The database's clock in microseconds, or the given time's (`$1`, seconds, when not null).
const NOW_MICROS_SQL: &str =
    "COALESCE($1::bigint * 1000000, floor(extract(epoch FROM now()) * 1000000)::bigint)";

impl PgRecords {
    /// Takes a token from `key`'s bucket, in one statement (one round trip): the row is
    /// locked by the upsert, so concurrent requests for one key on any instances apply one
    /// after the other.
    pub(crate) async fn take_request(
        &self,
        key: &KeyDigest,
        limit: RateLimit,
        now: Now,
    ) -> Result<RateDecision, Rejection> {
        let sql = format!(
            "INSERT INTO rate_buckets AS b (key_digest, tat, allowed, seen_at)
                  SELECT $2, at + $3, true, at FROM (SELECT {NOW_MICROS_SQL} AS at) AS now
             ON CONFLICT (key_digest) DO UPDATE SET
                 tat = CASE WHEN GREATEST(b.tat, EXCLUDED.seen_at) + $3 - EXCLUDED.seen_at <= $4
                            THEN GREATEST(b.tat, EXCLUDED.seen_at) + $3 ELSE b.tat END,
                 allowed = GREATEST(b.tat, EXCLUDED.seen_at) + $3 - EXCLUDED.seen_at <= $4,
                 seen_at = EXCLUDED.seen_at
             RETURNING tat, allowed, seen_at"
        );
        let interval = to_i64(limit.interval_micros());
        let window = to_i64(limit.window_micros());
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let row = client
                .query_one(
                    &sql,
                    &[&now.param(), &&key.as_bytes()[..], &interval, &window],
                )
                .await
                .map_err(|error| unavailable(&error))?;
            let read = || -> Result<RateDecision, tokio_postgres::Error> {
                Ok(RateDecision::from_stored(
                    limit,
                    to_u64(row.try_get(0)?),
                    row.try_get(1)?,
                    to_u64(row.try_get(2)?),
                ))
            };
            read().map_err(|error| unavailable(&error))
        })
        .await
    }
}
