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
const QUOTA_LOCK_SEED: i64 = 0x0071_756f_7461; // "quota"

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use uploads_core::ledger::{RandomIds, Usage};
    use uploads_core::limits::Limits;
    use uploads_core::types::Upload;

    use super::*;
    use crate::records::{MutationError, Scope};
    use crate::test_services as services;

    const NOW: u64 = 1_700_000_000;

    fn owner() -> Owner {
        Owner::new("proj_quota")
    }

    fn body(bytes: u64) -> String {
        format!(
            r#"{{"filename":"a","purpose":"user_data","bytes":{bytes},"mime_type":"text/plain"}}"#
        )
    }

    async fn create(records: &PgRecords, bytes: u64) -> Result<Upload, MutationError> {
        let body = body(bytes);
        records
            .mutate(&Scope::Quota(owner()), NOW, |ledger, now| {
                let mut ids =
                    RandomIds::new(|buffer: &mut [u8]| getrandom::fill(buffer).expect("entropy"));
                ledger.create_upload(&owner(), body.as_bytes(), now, &mut ids)
            })
            .await
            .map(|committed| committed.response)
    }

    async fn usage(records: &PgRecords) -> Usage {
        records
            .read(&Scope::Quota(owner()), NOW, |ledger, now| {
                Ok(ledger.usage(&owner(), now))
            })
            .await
            .unwrap()
    }

    /// Two instances' creates of one owner: the second waits on the first's advisory lock
    /// and then counts its row, so the quota holds; never both within it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn creates_of_one_owner_on_two_instances_take_turns() {
        let namespace = services::Services::get().fresh();
        let limits = Limits::default().with_quota_bytes(100);
        let connect = || PgRecords::connect(&namespace.database_url, limits.clone());
        let (first, second) = (
            Arc::new(connect().await.unwrap()),
            Arc::new(connect().await.unwrap()),
        );
        // The first instance plans, and holds its transaction open until told to go on.
        let (planned_tx, planned_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let holding = {
            let first = Arc::clone(&first);
            tokio::spawn(async move {
                let body = body(60);
                first
                    .mutate(&Scope::Quota(owner()), NOW, move |ledger, now| {
                        let mut ids = RandomIds::new(|buffer: &mut [u8]| {
                            getrandom::fill(buffer).expect("entropy");
                        });
                        let planned =
                            ledger.create_upload(&owner(), body.as_bytes(), now, &mut ids);
                        planned_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                        planned
                    })
                    .await
                    .map(|committed| committed.response)
            })
        };
        tokio::task::spawn_blocking(move || planned_rx.recv().unwrap())
            .await
            .unwrap();
        // The second instance's create: either it waits on the lock (seen in pg_locks), or,
        // were there no lock, it would finish first and both would be within the quota.
        let racing = {
            let second = Arc::clone(&second);
            tokio::spawn(async move { create(&second, 60).await })
        };
        let services = services::Services::get();
        loop {
            if racing.is_finished() {
                break;
            }
            let waiting = services.psql_on(
                &namespace.database,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            );
            if waiting == "1" {
                break;
            }
            tokio::task::yield_now().await;
        }
        go_tx.send(()).unwrap();
        let first_answer = holding.await.unwrap();
        let second_answer = racing.await.unwrap();
        assert!(first_answer.is_ok(), "{first_answer:?}");
        match second_answer {
            Err(MutationError::Refused(rejection)) => {
                assert_eq!(rejection.status.as_u16(), 400);
                assert_eq!(rejection.param(), Some("bytes"));
            }
            other => panic!("the second create went through as well: {other:?}"),
        }
        assert_eq!(
            usage(&second).await,
            Usage {
                bytes: 60,
                files: 1
            }
        );
        // 40 more fit, on either instance; then nothing.
        create(&second, 40).await.unwrap();
        assert!(matches!(
            create(&first, 1).await,
            Err(MutationError::Refused(_))
        ));
        assert_eq!(
            usage(&first).await,
            Usage {
                bytes: 100,
                files: 2
            }
        );
    }

    /// The SQL bucket answers as the core's over one key, and keeps keys apart.
    #[tokio::test]
    async fn the_sql_bucket_is_the_cores() {
        let namespace = services::Services::get().fresh();
        let records = PgRecords::connect(&namespace.database_url, Limits::default())
            .await
            .unwrap();
        let limit = RateLimit::per_minute(3);
        let key = KeyDigest::of("sk-one");
        let mut tat = None;
        for (step, at) in [0u64, 0, 0, 0, 0, 20, 20, 21, 100, 100, 100, 100, 200]
            .into_iter()
            .enumerate()
        {
            let now = NOW + at;
            let expected = limit.take(tat, now * 1_000_000);
            let got = records
                .take_request(&key, limit, Now::At(now))
                .await
                .unwrap();
            assert_eq!(got, expected, "step {step} at {at}");
            if got.allowed {
                tat = Some(got.tat);
            }
        }
        let other = KeyDigest::of("sk-two");
        assert!(
            records
                .take_request(&other, limit, Now::At(NOW))
                .await
                .unwrap()
                .allowed
        );
        // The key itself is never stored: only its digest.
        let stored = services::Services::get().psql_on(
            &namespace.database,
            "SELECT count(*) FROM rate_buckets WHERE position('sk-one' IN encode(key_digest, 'escape')) > 0",
        );
        assert_eq!(stored, "0");
    }
}
