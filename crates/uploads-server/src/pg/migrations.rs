//! The schema's versions, kept in the repository (`crates/uploads-server/migrations/`) and
//! applied in order at startup. Instances that start at once take turns on a transaction-level
//! advisory lock: the first applies what is missing, the others find it applied.

use tokio_postgres::Client;

/// Every migration, in order: `(version, SQL)`. A version is never edited once released; a
/// change is a new file.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_claims.sql")),
    (3, include_str!("../../migrations/0003_part_tally.sql")),
    (4, include_str!("../../migrations/0004_md5_chain.sql")),
    (
        5,
        include_str!("../../migrations/0005_ids_in_byte_order.sql"),
    ),
    (6, include_str!("../../migrations/0006_records_json.sql")),
    (7, include_str!("../../migrations/0007_quotas.sql")),
];

/// The advisory lock key of the migrations (any constant the service owns).
const MIGRATION_LOCK: i64 = 0x7570_6c6f_6164_7331; // "uploads1"

/// Applies the migrations this database lacks; returns how many it applied.
pub(crate) async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    // Instances starting together wait here for each other, longer than a request may wait
    // for a lock (the session's lock_timeout).
    transaction
        .batch_execute("SET LOCAL lock_timeout = '2min'; SET LOCAL statement_timeout = '5min'")
        .await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let current: i32 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let mut applied = 0;
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
        applied += 1;
    }
    transaction.commit().await?;
    Ok(applied)
}

/// The newest version this build knows.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}
