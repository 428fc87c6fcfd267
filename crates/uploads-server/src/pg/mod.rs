//! Metadata in PostgreSQL, for several instances sharing one namespace.
//!
//! The ledger still makes every decision; the database makes each one atomic across
//! instances. A mutation is one transaction:
//!
//! ```text
//! BEGIN -> lock the rows it reads (SELECT ... FOR UPDATE) -> load them into a ledger
//!       -> the ledger plans (or refuses: ROLLBACK) -> write the plan's steps as rows -> COMMIT
//! ```
//!
//! so two mutations of one Upload, on any two instances, run one after the other and the
//! second sees the first's outcome, exactly as the single-process server's record lock does.
//! Rows: an Upload (its record without Parts, with its Parts' count and total, which a
//! trigger keeps), one row per Part (adding a Part reads and writes O(1) rows: the ledger
//! decides over the tally, see [`Scope::NewPart`]), a
//! File with its manifest (written with the completed Upload in one transaction), and the
//! objects the bucket may drop ([`doomed`](self#objects)).
//!
//! # Objects
//!
//! No object outlives its rows, whichever instance dies when. Before an object is written,
//! an *intent* row dooms it after a grace period; the transaction that records the object
//! removes the intent (and fails if a sweeper already claimed it). A transaction that stops
//! needing objects dooms them: at once, or, for bytes a File's download may be reading (on
//! any instance, which no lock here can see), after [`DOWNLOAD_GRACE_SECS`]. Sweepers claim
//! due rows for a while (`claimed_until`, committed before the bucket is touched), delete the
//! objects, then the rows; an intent whose row is claimed is not consumed.
//!
//! # Time
//!
//! Every decision about time uses one clock, the database's: `now()` of the transaction that
//! decides (or of the statement, for a read), never an instance's, whose clock may be off by
//! more than an Upload's lifetime. [`Now::At`] replaces it only where every instance is given
//! the same clock (tests that move time).
//!
//! # Bounded waits
//!
//! Each session sets `lock_timeout`, `statement_timeout` and
//! `idle_in_transaction_session_timeout`, and TCP keepalives both ways: a request waits for a
//! row lock at most [`LOCK_TIMEOUT`], and the locks of an instance that froze (SIGSTOP) or was
//! cut off inside a transaction are released by the database within
//! [`IDLE_IN_TRANSACTION_TIMEOUT`] (or the keepalives). Every interaction is also bounded
//! on this side ([`INTERACTION_DEADLINE`]): a database that went silent ends no wait of its
//! own. A wait that runs out is a [`Rejection::unavailable`]: 503 with `Retry-After`, which
//! the SDKs retry.

#[cfg(test)]
mod agreement_tests;
mod md5_chain;
mod migrations;
mod quota;
#[cfg(test)]
mod tests;
mod tls;
#[cfg(test)]
mod tls_tests;

pub(crate) use md5_chain::ChainClaim;

use crate::records::{MutationError, Scope};

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};
use uploads_core::ledger::{
    FileRecord, Ledger, Owner, PartRecord, PartTally, Planned, RecordState, Step, UploadRecord,
    Usage,
};
use uploads_core::limits::Limits;
use uploads_core::rejection::Rejection;
use uploads_core::types::{FileId, ListFilesQuery, ListOrder, UploadId};

use crate::clock::Clock;
use crate::objects::{file_key, part_key};

/// How long an instance waits to connect, and to check a connection back in.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for one of the pool's connections (then 503).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Connections per instance.
const POOL_SIZE: usize = 16;
/// How long a statement waits for a row lock (then 503): a holder that froze is not waited
/// for longer.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest statement; every statement here is short.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a session may sit inside a transaction without a statement before the database
/// ends it and releases its locks: an instance frozen or cut off mid-transaction.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalives (both ends): idle time before the first probe, between probes, and probes
/// lost before the connection is dropped.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const KEEPALIVE_PROBES: u32 = 3;
/// How long `/healthz` waits for the database.
const HEALTH_DEADLINE: Duration = Duration::from_secs(2);
/// Object deletions one collection runs at once.
const DELETES_IN_FLIGHT: usize = 16;
/// How long a sweeper holds a claim on objects to delete before another may take them.
const COLLECT_CLAIM_SECS: i64 = 300;
/// The database's clock, in unix seconds, or the given one (`$1`, when not null).
const NOW_SQL: &str = "COALESCE($1::bigint, floor(extract(epoch FROM now()))::bigint)";
/// Records a sweep claims at once (the rest wait for the next tick).
const SWEEP_CLAIM_BATCH: i64 = 200;
/// The largest page `GET /files` serves (the ledger refuses larger limits).
const MAX_LIST_LIMIT: i64 = 10_000;

/// Whose clock decides: the database's, or (tests that move time) a given `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Now {
    /// `now()` of the database, in the transaction that decides.
    Database,
    /// This time, given to every instance alike.
    At(u64),
}

impl From<u64> for Now {
    fn from(now: u64) -> Self {
        Self::At(now)
    }
}

impl Now {
    /// The parameter of [`NOW_SQL`].
    fn param(self) -> Option<i64> {
        match self {
            Self::Database => None,
            Self::At(now) => Some(to_i64(now)),
        }
    }

    /// The time, read from the database unless given.
    async fn resolve(self, client: &impl GenericClient) -> Result<u64, LoadError> {
        match self {
            Self::At(now) => Ok(now),
            Self::Database => {
                let row = client
                    .query_one(&format!("SELECT {NOW_SQL}"), &[&self.param()])
                    .await?;
                Ok(to_u64(row.try_get(0)?))
            }
        }
    }
}

/// The clock of a service on the shared backend: the database's unless every instance is
/// given the same one.
pub(crate) fn decision_time(clock: Option<&dyn Clock>) -> Now {
    clock.map_or(Now::Database, |clock| Now::At(clock.now()))
}

/// A committed mutation.
#[derive(Debug)]
pub(crate) struct Committed<T> {
    /// The ledger's answer.
    pub response: T,
    /// The objects it doomed to go now (not after the download grace): what
    /// [`PgRecords::collect_objects`] may delete at once.
    pub doomed_now: Vec<String>,
}

/// What `/healthz` says of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatabaseHealth {
    /// It answered, and a connection is free or being made.
    Ok,
    /// It answered, but every connection of the pool is in use and requests wait for one.
    Busy,
    /// It did not answer within the health deadline.
    Unreachable,
}

/// The ledger's records in PostgreSQL.
pub(crate) struct PgRecords {
    pool: Pool,
    /// One connection kept apart for `/healthz`, which must not queue behind requests.
    health: Pool,
    limits: Limits,
    /// How long an object may stay unrecorded before a sweeper collects it.
    intent_grace: u64,
}

impl PgRecords {
    /// Connects (within [`POOL_TIMEOUT`]) and applies the migrations this database lacks. The
    /// error names what is unreachable.
    pub(crate) async fn connect(url: &str, limits: Limits) -> io::Result<Self> {
        let (mut config, tls) = tls::PgTls::from_url(url)?;
        bound_sessions(&mut config);
        let target = describe(&config);
        let pool = build_pool(config.clone(), &tls, POOL_SIZE, POOL_WAIT)?;
        let health = build_pool(config, &tls, 1, HEALTH_DEADLINE)?;
        let mut client = pool
            .get()
            .await
            .map_err(|error| tls.connect_failed(&target, &error))?;
        let applied = migrations::migrate(&mut client).await.map_err(|error| {
            io::Error::other(format!("migrating the database at {target}: {error}"))
        })?;
        tracing::info!(%target, applied, version = migrations::latest_version(), "database ready");
        let intent_grace = limits.upload_ttl_secs.saturating_mul(2);
        Ok(Self {
            pool,
            health,
            limits,
            intent_grace,
        })
    }

    /// How the database is now, within [`HEALTH_DEADLINE`], on a connection of its own (a
    /// pool busy with requests is not an unreachable database).
    pub(crate) async fn health(&self) -> DatabaseHealth {
        let check = async {
            let client = self.health.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        let answered = tokio::time::timeout(HEALTH_DEADLINE, check)
            .await
            .ok()
            .flatten()
            .is_some();
        let status = self.pool.status();
        if !answered {
            DatabaseHealth::Unreachable
        } else if status.available == 0 && status.size >= status.max_size && status.waiting > 0 {
            DatabaseHealth::Busy
        } else {
            DatabaseHealth::Ok
        }
    }

    /// The time of `now` (the database's clock, unless given).
    pub(crate) async fn time(&self, now: impl Into<Now>) -> Result<u64, Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            now.into()
                .resolve(&**client)
                .await
                .map_err(|error| unavailable(&error))
        })
        .await
    }

    /// Of `keys`, those whose object a request may still be writing: an intent that is not
    /// due yet.
    pub(crate) async fn still_intended(
        &self,
        now: impl Into<Now>,
        keys: &[String],
    ) -> Result<HashSet<String>, Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let sql = format!(
                "SELECT key FROM doomed_objects WHERE key = ANY($2) AND not_before > {NOW_SQL}"
            );
            let rows = client
                .query(&sql, &[&now.into().param(), &keys])
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// How long an object may stay unrecorded before a sweeper collects it (seconds).
    pub(crate) fn intent_grace(&self) -> u64 {
        self.intent_grace
    }

    /// Runs a read of the ledger over the rows of `scope`, as they are at `now`.
    pub(crate) async fn read<T>(
        &self,
        scope: &Scope,
        now: impl Into<Now>,
        read: impl FnOnce(&Ledger, u64) -> Result<T, Rejection>,
    ) -> Result<T, Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let now = now
                .into()
                .resolve(&**client)
                .await
                .map_err(|error| unavailable(&error))?;
            let loaded = load(&**client, scope, now, false)
                .await
                .map_err(|error| unavailable(&error))?;
            read(&loaded.ledger(&self.limits), now)
        })
        .await
    }

    /// Records that `key` is about to be written: a sweeper deletes it after the grace
    /// period unless a mutation recorded it first.
    pub(crate) async fn intend(&self, key: &str, now: impl Into<Now>) -> Result<(), Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            client
                .execute(
                    &format!(
                        "INSERT INTO doomed_objects (key, not_before) VALUES ($2, {NOW_SQL} + $3)
                         ON CONFLICT (key) DO UPDATE SET not_before = EXCLUDED.not_before
                         WHERE doomed_objects.claimed_until IS NULL"
                    ),
                    &[&now.into().param(), &key, &to_i64(self.intent_grace)],
                )
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(())
        })
        .await
    }

    /// One mutation, atomically: lock the rows of `scope`, let the ledger plan over them at
    /// the transaction's `now`, write the plan's steps, commit.
    pub(crate) async fn mutate<T>(
        &self,
        scope: &Scope,
        now: impl Into<Now>,
        plan: impl FnOnce(&Ledger, u64) -> Result<Planned<T>, Rejection>,
    ) -> Result<Committed<T>, MutationError> {
        bounded_mutation(async move {
            let failed = |error: &dyn std::error::Error| MutationError::Failed(unavailable(error));
            let mut client = self.pool.get().await.map_err(|error| failed(&error))?;
            let transaction = client.transaction().await.map_err(|error| failed(&error))?;
            let now = now
                .into()
                .resolve(&*transaction)
                .await
                .map_err(|error| failed(&error))?;
            let loaded = load(&*transaction, scope, now, true)
                .await
                .map_err(|error| failed(&error))?;
            let planned =
                plan(&loaded.ledger(&self.limits), now).map_err(MutationError::Refused)?;
            let mut doomed_now = Vec::new();
            if let Some(change) = planned.change {
                doomed_now = write_steps(&*transaction, change.steps(), &loaded, now, scope)
                    .await
                    .map_err(|error| failed(&error))?;
                transaction.commit().await.map_err(|error| failed(&error))?;
            }
            Ok(Committed {
                response: planned.response,
                doomed_now,
            })
        })
        .await
    }

    /// How many connections the pool holds, how many are free, how many requests wait.
    pub(crate) fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// One sweep: claims (skipping rows another instance holds) the records the ledger may
    /// remove, removes them as the ledger says, and marks expired Uploads' Parts removed.
    /// Returns how many records it changed, and of them how many Uploads had expired.
    pub(crate) async fn sweep(&self, now: impl Into<Now>) -> Result<SweptBatch, Rejection> {
        bounded(async move {
            let mut client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let transaction = client
                .transaction()
                .await
                .map_err(|error| unavailable(&error))?;
            let now = now
                .into()
                .resolve(&*transaction)
                .await
                .map_err(|error| unavailable(&error))?;
            let loaded = claim_sweep(&*transaction, now, self.limits.upload_ttl_secs)
                .await
                .map_err(|error| unavailable(&error))?;
            if loaded.uploads.is_empty() && loaded.files.is_empty() {
                return Ok(SweptBatch::default());
            }
            let ledger = loaded.ledger(&self.limits);
            // An expired Upload's record is marked `parts_removed` by the ledger's own step.
            let Some(change) = ledger.sweep(now) else {
                // Claimed, but nothing the ledger would change: counting it would make a caller
                // that sweeps until nothing is left loop for ever.
                return Ok(SweptBatch::default());
            };
            write_steps(&*transaction, change.steps(), &loaded, now, &Scope::Nothing)
                .await
                .map_err(|error| unavailable(&error))?;
            transaction
                .commit()
                .await
                .map_err(|error| unavailable(&error))?;
            let steps = change.steps();
            Ok(SweptBatch {
                records: steps
                    .iter()
                    .filter(|step| {
                        matches!(
                            step,
                            Step::SaveUpload(_) | Step::RemoveUpload(_) | Step::RemoveFile(_)
                        )
                    })
                    .count(),
                // A sweep saves an Upload only to mark an expired one's Parts removed.
                expired: steps
                    .iter()
                    .filter(|step| matches!(step, Step::SaveUpload(_)))
                    .count(),
            })
        })
        .await
    }

    /// Claims up to `limit` objects that are due for deletion, deletes them with `delete`
    /// and then their rows; rows whose delete failed stay for the next pass. Returns how
    /// many objects it deleted.
    ///
    /// No transaction is held while the bucket works: the claim (`claimed_until`) is
    /// committed first, so a slow bucket cannot keep rows locked, and a claim whose instance
    /// died lapses after [`COLLECT_CLAIM_SECS`].
    ///
    /// `only` limits it to those keys (a request deletes what its own change doomed, not
    /// the backlog). Deletes run [`DELETES_IN_FLIGHT`] at once, on no database connection;
    /// after one that timed out (a silent bucket), no more are started: the rest wait for
    /// the next pass.
    pub(crate) async fn collect_objects<F, Fut>(
        &self,
        now: impl Into<Now>,
        limit: i64,
        only: Option<&[String]>,
        delete: F,
    ) -> Result<usize, Rejection>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        bounded(async move {
            let claimed = self.claim_due(now.into(), limit, only).await?;
            // Each object is deleted before its row: a row outlives its object, never the
            // reverse.
            let deleted = delete_claimed(claimed, delete).await;
            let count = deleted.len();
            let (keys, claims): (Vec<String>, Vec<i64>) = deleted.into_iter().unzip();
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            client
                .execute(
                    "DELETE FROM doomed_objects d
                     USING unnest($1::text[], $2::bigint[]) AS c(key, until)
                     WHERE d.key = c.key AND d.claimed_until = c.until",
                    &[&keys, &claims],
                )
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(count)
        })
        .await
    }

    /// Claims up to `limit` objects due for deletion (of `only`, when given) for
    /// [`COLLECT_CLAIM_SECS`], in one committed statement: `(key, claimed_until)` of each.
    async fn claim_due(
        &self,
        now: Now,
        limit: i64,
        only: Option<&[String]>,
    ) -> Result<Vec<(String, i64)>, Rejection> {
        let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
        let rows = client
            .query(
                &format!(
                    "WITH due AS (
                         SELECT key FROM doomed_objects
                         WHERE not_before <= {NOW_SQL}
                           AND (claimed_until IS NULL OR claimed_until <= {NOW_SQL})
                           AND ($4::text[] IS NULL OR key = ANY($4))
                         ORDER BY not_before LIMIT $2 FOR UPDATE SKIP LOCKED)
                     UPDATE doomed_objects d SET claimed_until = {NOW_SQL} + $3
                     FROM due WHERE d.key = due.key
                     RETURNING d.key, d.claimed_until"
                ),
                &[&now.param(), &limit, &COLLECT_CLAIM_SECS, &only],
            )
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// Deletes the claimed objects with `delete`, [`DELETES_IN_FLIGHT`] at once, holding no
/// database connection; after a delete that timed out (a silent bucket) no more are
/// started. The claims of the objects deleted.
async fn delete_claimed<F, Fut>(claimed: Vec<(String, i64)>, delete: F) -> Vec<(String, i64)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let timed_out = AtomicBool::new(false);
    let outcomes: Vec<Option<(String, i64)>> = futures_util::stream::iter(claimed)
        .map(|(key, until)| {
            let (delete, timed_out) = (&delete, &timed_out);
            async move {
                if timed_out.load(Ordering::SeqCst) {
                    return None;
                }
                match delete(key.clone()).await {
                    Ok(()) => Some((key, until)),
                    Err(error) => {
                        if error.kind() == io::ErrorKind::TimedOut {
                            timed_out.store(true, Ordering::SeqCst);
                        }
                        tracing::warn!(%key, %error, "deleting an object failed; retrying later");
                        None
                    }
                }
            }
        })
        .buffer_unordered(DELETES_IN_FLIGHT)
        .collect()
        .await;
    outcomes.into_iter().flatten().collect()
}

/// Makes every session of `config` bounded: its lock waits, its statements, its idle
/// transactions, and its TCP connection (keepalives on both ends, and unacknowledged data).
fn bound_sessions(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_PROBES)
        .tcp_user_timeout(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES);
    let ms = |duration: Duration| duration.as_millis();
    let bounds = format!(
        "-c lock_timeout={} -c statement_timeout={} -c idle_in_transaction_session_timeout={} \
         -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={}",
        ms(LOCK_TIMEOUT),
        ms(STATEMENT_TIMEOUT),
        ms(IDLE_IN_TRANSACTION_TIMEOUT),
        KEEPALIVE_IDLE.as_secs(),
        KEEPALIVE_INTERVAL.as_secs(),
        KEEPALIVE_PROBES,
    );
    // Settings in the URL's own `options` come after ours, so they win.
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{bounds} {given}"),
        _ => bounds,
    };
    config.options(options);
}

/// A pool of up to `size` connections (over `tls`), where a request waits at most `wait` for one.
fn build_pool(
    config: tokio_postgres::Config,
    tls: &tls::PgTls,
    size: usize,
    wait: Duration,
) -> io::Result<Pool> {
    let manager = Manager::from_config(
        config,
        tls.connector(),
        ManagerConfig {
            // A connection is checked with a round trip before each use: after a database
            // restart or a terminated backend, requests get fresh connections, not errors.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(io::Error::other)
}

/// The records a request loaded, and what they looked like (to write only what changed).
#[derive(Default)]
struct Loaded {
    /// Uploads with their Parts, and the stored record without Parts.
    uploads: Vec<(UploadRecord, Value)>,
    files: Vec<FileRecord>,
    /// Set when the one Upload was loaded for a new Part: its Parts' count and total (its
    /// record then holds only the Part asked about).
    tally: Option<PartTally>,
    /// Set for a create under a quota: the owner's usage, counted over all its rows.
    usage: Option<(Owner, Usage)>,
}

impl Loaded {
    fn ledger(&self, limits: &Limits) -> Ledger {
        if let (Some(tally), [(record, _)]) = (self.tally, self.uploads.as_slice()) {
            return Ledger::load_tallied(limits.clone(), record.clone(), tally);
        }
        let mut ledger = Ledger::load_atomic(
            limits.clone(),
            self.uploads.iter().map(|(record, _)| record.clone()),
            self.files.iter().cloned(),
        );
        if let Some((owner, usage)) = &self.usage {
            ledger.set_usage(owner, *usage);
        }
        ledger
    }

    fn upload(&self, id: &UploadId) -> Option<&(UploadRecord, Value)> {
        self.uploads.iter().find(|(record, _)| record.id == *id)
    }
}

/// Loads the rows of `scope` (locking them when `lock`).
async fn load(
    client: &impl GenericClient,
    scope: &Scope,
    now: u64,
    lock: bool,
) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    let suffix = if lock { " FOR UPDATE" } else { "" };
    match scope {
        Scope::Nothing => {}
        Scope::Quota(owner) => quota::load_usage(client, owner, now, lock, &mut loaded).await?,
        Scope::Upload(id) => {
            let rows = client
                .query(
                    &format!("SELECT record FROM uploads WHERE id = $1{suffix}"),
                    &[&id.as_str()],
                )
                .await?;
            for row in rows {
                loaded.uploads.push(upload_from_row(client, &row).await?);
            }
        }
        Scope::NewPart { upload, part, .. } => {
            let rows = client
                .query(
                    &format!(
                        "SELECT record, part_count, parts_bytes FROM uploads WHERE id = $1{suffix}"
                    ),
                    &[&upload.as_str()],
                )
                .await?;
            for row in rows {
                let stored: Value = row.try_get(0)?;
                let parts = match part {
                    Some(part) => {
                        client
                            .query(
                                "SELECT part_id, bytes, created_at FROM upload_parts
                                 WHERE upload_id = $1 AND part_id = $2",
                                &[&upload.as_str(), &part.as_str()],
                            )
                            .await?
                    }
                    None => Vec::new(),
                };
                loaded.uploads.push((with_parts(&stored, &parts)?, stored));
                loaded.tally = Some(PartTally {
                    count: to_u64(row.try_get(1)?),
                    bytes: to_u64(row.try_get(2)?),
                });
            }
        }
        Scope::File(id) => {
            let rows = client
                .query(
                    &format!("SELECT record FROM files WHERE id = $1{suffix}"),
                    &[&id.as_str()],
                )
                .await?;
            for row in rows {
                loaded.files.push(file_from_row(&row)?);
            }
        }
        Scope::List { owner, query } => {
            loaded.files = list_page(client, owner, query, now).await?;
        }
    }
    Ok(loaded)
}

/// The Files of the page asked for, read from the list index (plus the `after` File, which
/// the ledger checks): the ledger then answers exactly as over all of them, because the page
/// is the first `limit + 1` of the Files it would consider.
async fn list_page(
    client: &impl GenericClient,
    owner: &str,
    query: &ListFilesQuery,
    now: u64,
) -> Result<Vec<FileRecord>, LoadError> {
    let now = to_i64(now);
    let mut files = Vec::new();
    let mut cursor: Option<(i64, String)> = None;
    // PostgreSQL's text holds no NUL, so no stored id or purpose has one, and asking would
    // fail: such a cursor names no File, such a purpose matches none.
    let has_nul = |text: &str| text.contains('\0');
    if let Some(after) = query
        .after
        .as_ref()
        .filter(|after| !has_nul(after.as_str()))
    {
        let rows = client
            .query(
                "SELECT record, created_at FROM files WHERE id = $1 AND owner = $2",
                &[&after.as_str(), &owner],
            )
            .await?;
        for row in rows {
            cursor = Some((row.get(1), after.as_str().to_owned()));
            files.push(file_from_row(&row)?);
        }
    }
    if query.after.is_some() && cursor.is_none() {
        // The ledger answers 400 `after`.
        return Ok(files);
    }
    if query
        .purpose
        .as_ref()
        .is_some_and(|purpose| has_nul(purpose.as_str()))
    {
        return Ok(files);
    }
    let ascending = matches!(query.order, Some(ListOrder::Asc));
    let (compare, direction) = if ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let limit = i64::from(query.limit.unwrap_or(10_000)).clamp(1, MAX_LIST_LIMIT) + 1;
    let purpose = query
        .purpose
        .as_ref()
        .map(|purpose| purpose.as_str().to_owned());
    let (cursor_at, cursor_id) =
        cursor.unwrap_or((if ascending { i64::MIN } else { i64::MAX }, String::new()));
    let cursor_id = if cursor_id.is_empty() && !ascending {
        // Above every id.
        "\u{10FFFF}".to_owned()
    } else {
        cursor_id
    };
    let sql = format!(
        "SELECT record FROM files
         WHERE owner = $1 AND ($2::text IS NULL OR purpose = $2)
           AND (expires_at IS NULL OR expires_at > $3)
           AND (created_at, id) {compare} ($4, $5)
         ORDER BY created_at {direction}, id {direction} LIMIT $6"
    );
    let rows = client
        .query(
            &sql,
            &[&owner, &purpose, &now, &cursor_at, &cursor_id, &limit],
        )
        .await?;
    for row in rows {
        files.push(file_from_row(&row)?);
    }
    Ok(files)
}

/// Claims what a sweep may remove (see the migration's indexes), with the Files of the
/// completed Uploads among them.
async fn claim_sweep(
    client: &impl GenericClient,
    now: u64,
    upload_ttl: u64,
) -> Result<Loaded, LoadError> {
    let now_i = to_i64(now);
    let ttl = to_i64(upload_ttl);
    let mut loaded = Loaded::default();
    let files = client
        .query(
            "SELECT record FROM files WHERE expires_at <= $1 ORDER BY expires_at
             LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now_i, &SWEEP_CLAIM_BATCH],
        )
        .await?;
    for row in files {
        loaded.files.push(file_from_row(&row)?);
    }
    let uploads = client
        .query(
            "SELECT u.record FROM uploads u
             WHERE (u.status = 'pending' AND u.expires_at <= $1 AND NOT u.parts_removed
                    AND u.part_count > 0)
                OR (u.expires_at <= $1 - $2 AND (u.status <> 'completed' OR NOT EXISTS (
                      SELECT 1 FROM files f WHERE f.id = u.file_id
                        AND (f.expires_at IS NULL OR f.expires_at > $1))))
             ORDER BY u.expires_at LIMIT $3 FOR UPDATE OF u SKIP LOCKED",
            &[&now_i, &ttl, &SWEEP_CLAIM_BATCH],
        )
        .await?;
    let claimed_files: HashSet<FileId> =
        loaded.files.iter().map(|file| file.id().clone()).collect();
    for row in uploads {
        let upload = upload_from_row(client, &row).await?;
        if let RecordState::Completed(completion) = &upload.0.state
            && !claimed_files.contains(&completion.file.id)
        {
            let rows = client
                .query(
                    "SELECT record FROM files WHERE id = $1",
                    &[&completion.file.id.as_str()],
                )
                .await?;
            for row in rows {
                loaded.files.push(file_from_row(&row)?);
            }
        }
        loaded.uploads.push(upload);
    }
    Ok(loaded)
}

/// Writes a planned change's steps as rows, inside the mutation's transaction; returns the
/// objects it doomed to go at once.
async fn write_steps(
    client: &impl GenericClient,
    steps: &[Step],
    loaded: &Loaded,
    now: u64,
    scope: &Scope,
) -> Result<Vec<String>, LoadError> {
    let now_i = to_i64(now);
    // Bytes a download may be reading outlive the change by the download grace: a File's
    // own bytes, and the Parts of a File that goes (its removal or a completed Upload's).
    let readable_until = to_i64(now.saturating_add(DOWNLOAD_GRACE_SECS));
    let file_goes = steps.iter().any(|step| matches!(step, Step::RemoveFile(_)));
    let mut doomed_now = Vec::new();
    for step in steps {
        match step {
            Step::SaveUpload(record) => save_upload(client, record, loaded).await?,
            Step::AddPart { upload_id, part } => {
                let position = scope.position_of(upload_id, &part.id);
                insert_part(client, upload_id, part, position).await?;
            }
            Step::SaveFile(record) => {
                let json = serde_json::to_value(record)?;
                client
                    .execute(
                        "INSERT INTO files (id, owner, purpose, created_at, expires_at, record)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[
                            &record.id().as_str(),
                            &record.owner.as_str(),
                            &record.file.purpose.as_str(),
                            &to_i64(record.file.created_at),
                            &record.file.expires_at.map(to_i64),
                            &json,
                        ],
                    )
                    .await?;
                if record.upload_id.is_none() {
                    consume_intent(client, &file_key(record.id())).await?;
                }
            }
            Step::RemoveFile(id) => {
                client
                    .execute("DELETE FROM files WHERE id = $1", &[&id.as_str()])
                    .await?;
                doom(client, &[file_key(id)], readable_until).await?;
            }
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => {
                let keys: Vec<String> = part_ids
                    .iter()
                    .map(|part| part_key(upload_id, part))
                    .collect();
                let not_before = if file_goes { readable_until } else { now_i };
                doom(client, &keys, not_before).await?;
                if not_before == now_i {
                    doomed_now.extend(keys);
                }
            }
            Step::RemoveUpload(id) => {
                let record = loaded.upload(id).map(|(record, _)| record);
                let keys: Vec<String> = record
                    .map(|record| {
                        record
                            .parts
                            .iter()
                            .map(|part| part_key(id, &part.id))
                            .collect()
                    })
                    .unwrap_or_default();
                let completed =
                    record.is_some_and(|record| matches!(record.state, RecordState::Completed(_)));
                let not_before = if completed { readable_until } else { now_i };
                doom(client, &keys, not_before).await?;
                if not_before == now_i {
                    doomed_now.extend(keys);
                }
                client
                    .execute("DELETE FROM uploads WHERE id = $1", &[&id.as_str()])
                    .await?;
            }
        }
    }
    Ok(doomed_now)
}

/// Upserts an Upload's row (only when it changed) and inserts its new Parts' rows: O(1) for
/// an added Part, whatever the Upload's Part count.
async fn save_upload(
    client: &impl GenericClient,
    record: &UploadRecord,
    loaded: &Loaded,
) -> Result<(), LoadError> {
    let before = loaded.upload(&record.id);
    let json = record_without_parts(record)?;
    if before.is_none_or(|(_, stored)| *stored != json) {
        let (status, file_id) = match &record.state {
            RecordState::Pending => ("pending", None),
            RecordState::Cancelled { .. } => ("cancelled", None),
            RecordState::Completed(completion) => ("completed", Some(completion.file.id.as_str())),
        };
        client
            .execute(
                "INSERT INTO uploads (id, owner, status, file_id, expires_at, parts_removed, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
                     file_id = EXCLUDED.file_id, expires_at = EXCLUDED.expires_at,
                     parts_removed = EXCLUDED.parts_removed, record = EXCLUDED.record",
                &[
                    &record.id.as_str(),
                    &record.owner.as_str(),
                    &status,
                    &file_id,
                    &to_i64(record.expires_at),
                    &record.parts_removed,
                    &json,
                ],
            )
            .await?;
    }
    let known: HashSet<&str> = before
        .map(|(stored, _)| stored.parts.iter().map(|part| part.id.as_str()).collect())
        .unwrap_or_default();
    for part in record
        .parts
        .iter()
        .filter(|part| !known.contains(part.id.as_str()))
    {
        insert_part(client, &record.id, part, None).await?;
    }
    Ok(())
}

/// How long the bytes of a deleted or expired File stay in the bucket (seconds): a
/// download of it already under way on any instance finishes within this (8 GiB at 5 MB/s
/// takes half of it), then a sweep deletes them.
pub const DOWNLOAD_GRACE_SECS: u64 = 3600;

/// Inserts one Part's row and consumes the intent of its object.
async fn insert_part(
    client: &impl GenericClient,
    upload_id: &UploadId,
    part: &PartRecord,
    position: Option<i32>,
) -> Result<(), LoadError> {
    client
        .execute(
            "INSERT INTO upload_parts (upload_id, part_id, bytes, created_at, position)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &upload_id.as_str(),
                &part.id.as_str(),
                &to_i64(part.bytes),
                &to_i64(part.created_at),
                &position,
            ],
        )
        .await?;
    consume_intent(client, &part_key(upload_id, &part.id)).await
}

/// Removes the intent of an object now recorded; fails when a sweeper got to it first
/// (the object may be gone: the request must not be acknowledged).
async fn consume_intent(client: &impl GenericClient, key: &str) -> Result<(), LoadError> {
    let removed = client
        .execute(
            "DELETE FROM doomed_objects WHERE key = $1 AND claimed_until IS NULL",
            &[&key],
        )
        .await?;
    if removed == 1 {
        Ok(())
    } else {
        Err(LoadError::Collected(key.to_owned()))
    }
}

/// Dooms objects now (a sweeper deletes them).
async fn doom(client: &impl GenericClient, keys: &[String], now: i64) -> Result<(), LoadError> {
    if keys.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO doomed_objects (key, not_before) SELECT unnest($1::text[]), $2
             ON CONFLICT (key) DO UPDATE SET not_before = LEAST(doomed_objects.not_before, EXCLUDED.not_before)",
            &[&keys, &now],
        )
        .await?;
    Ok(())
}

fn record_without_parts(record: &UploadRecord) -> Result<Value, LoadError> {
    let mut json = serde_json::to_value(record)?;
    if let Value::Object(fields) = &mut json {
        fields.remove("parts");
    }
    Ok(json)
}

/// An Upload from its row and its Parts' rows, in the order they were added.
async fn upload_from_row(
    client: &impl GenericClient,
    row: &Row,
) -> Result<(UploadRecord, Value), LoadError> {
    let stored: Value = row.try_get(0)?;
    let id = stored.get("id").and_then(Value::as_str).unwrap_or_default();
    let parts = client
        .query(
            "SELECT part_id, bytes, created_at FROM upload_parts WHERE upload_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?;
    Ok((with_parts(&stored, &parts)?, stored))
}

/// An Upload's record from its row's JSON (without Parts) and the rows of its Parts
/// (`part_id, bytes, created_at`), in order.
fn with_parts(stored: &Value, parts: &[Row]) -> Result<UploadRecord, LoadError> {
    let mut json = stored.clone();
    if let Value::Object(fields) = &mut json {
        fields.insert("parts".to_owned(), Value::Array(Vec::new()));
    }
    let mut record: UploadRecord = serde_json::from_value(json)?;
    record.parts = parts
        .iter()
        .map(|part| PartRecord {
            id: part.get::<_, String>(0).into(),
            bytes: to_u64(part.get(1)),
            created_at: to_u64(part.get(2)),
        })
        .collect();
    Ok(record)
}

fn file_from_row(row: &Row) -> Result<FileRecord, LoadError> {
    let json: Value = row.try_get(0)?;
    Ok(serde_json::from_value(json)?)
}

/// Why rows could not be read or written.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("database")]
    Database(#[from] tokio_postgres::Error),
    #[error("a stored record does not parse")]
    Record(#[from] serde_json::Error),
    #[error("the object {0} was collected before it was recorded")]
    Collected(String),
}

/// A 503 with `Retry-After` for a database that failed or did not answer in time (a lock
/// wait, a statement, the pool's queue or the whole interaction that ran out, a lost
/// connection), logged. Retrying is safe: a transaction is in or out, and a retried complete
/// or cancel replays the first.
/// The error is logged with its sources: tokio-postgres says only "db error", and the
/// database's own message (a statement timeout, a lock timeout, a refused value) is the
/// source's.
fn unavailable(error: &dyn std::error::Error) -> Rejection {
    tracing::error!(error = %with_sources(error), "the database failed");
    Rejection::unavailable("The server could not reach its database in time. Retry the request.")
}

/// An error and its sources, each after a `: `.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut why = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    why
}

/// `user@host:port/db` of a config, without its password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// How long one whole interaction with the database may take, from waiting for a
/// connection to the answer of its last statement. The server-side timeouts cannot end a
/// wait on a database that went silent (stopped, or partitioned behind a peer that still
/// acknowledges packets): this does.
const INTERACTION_DEADLINE: Duration = Duration::from_secs(20);

/// `work`, given up with a 503 after [`INTERACTION_DEADLINE`].
async fn bounded<T>(work: impl Future<Output = Result<T, Rejection>>) -> Result<T, Rejection> {
    tokio::time::timeout(INTERACTION_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(&io::Error::other(format!(
                "no answer within {INTERACTION_DEADLINE:?}"
            ))))
        })
}

/// [`bounded`] for a mutation.
async fn bounded_mutation<T>(
    work: impl Future<Output = Result<Committed<T>, MutationError>>,
) -> Result<Committed<T>, MutationError> {
    tokio::time::timeout(INTERACTION_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(MutationError::Failed(unavailable(&io::Error::other(
                format!("no answer within {INTERACTION_DEADLINE:?}"),
            ))))
        })
}

/// Unix seconds and byte counts fit in `bigint` for any real value; larger ones saturate.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// What one [`PgRecords::sweep`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SweptBatch {
    /// Records changed: Uploads marked or removed, Files removed (0: nothing left to sweep).
    pub records: usize,
    /// Of them, Uploads that had expired pending, whose Parts now go.
    pub expired: usize,
}
