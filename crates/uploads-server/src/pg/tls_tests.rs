//! PostgreSQL over TLS against real clusters: the harness's (TLS on, its certificate issued
//! for `localhost` and `127.0.0.1` by the harness's CA) and a second one without TLS. Each
//! test connects as the server does ([`PgRecords::connect`]) and asks the database whether
//! its session is encrypted.

use std::path::Path;

use crate::test_services::{Namespace, PlainPostgres, SCRAM_OVER_TLS_ROLE, Services};

use super::*;

/// A name the cluster's certificate does not carry.
const WRONG_NAME: &str = "wrong-name.example";

/// The test's database with `params` (`sslmode=...&...`).
fn url(namespace: &Namespace, params: &str) -> String {
    format!("{}?{params}", namespace.database_url)
}

/// `sslrootcert=` of the harness's CA.
fn harness_ca() -> String {
    format!("sslrootcert={}", Services::get().pg_ca.display())
}

async fn connect(url: &str) -> io::Result<PgRecords> {
    PgRecords::connect(url, Limits::default()).await
}

/// Why connecting to `url` fails, which it must (`why` it must, if it does not).
async fn refused(url: &str, why: &str) -> String {
    connect(url).await.err().expect(why).to_string()
}

/// Whether the database says this session of `records` is encrypted.
async fn encrypted(records: &PgRecords) -> bool {
    let client = records.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The certificate of a CA that signed nothing the cluster has, in `dir`.
fn other_ca(dir: &Path) -> String {
    let path = crate::test_services::certs::TestCa::new("another CA")
        .write_cert(&dir.join("other-ca.crt"));
    format!("sslrootcert={}", path.display())
}

#[tokio::test]
async fn verify_full_with_the_ca_connects_encrypted() {
    let namespace = Services::get().fresh();
    let records = connect(&url(
        &namespace,
        &format!("sslmode=verify-full&{}", harness_ca()),
    ))
    .await
    .unwrap();
    assert!(encrypted(&records).await);
}

#[tokio::test]
async fn verify_full_without_sslrootcert_trusts_only_the_public_roots() {
    let namespace = Services::get().fresh();
    let message = refused(
        &url(&namespace, "sslmode=verify-full"),
        "the harness's CA is not a public root",
    )
    .await;
    assert!(
        message.contains("failed (sslmode=verify-full): invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_not_issued_for_the_host_naming_it() {
    let namespace = Services::get().fresh();
    // The connection goes to 127.0.0.1 (`hostaddr`); the name checked is the host's.
    let url = format!(
        "postgres://postgres@{WRONG_NAME}:{}/{}?hostaddr=127.0.0.1&sslmode=verify-full&{}",
        Services::get().pg_port,
        namespace.database,
        harness_ca()
    );
    let error = connect(&url)
        .await
        .err()
        .expect("the name is not the certificate's");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "the TLS handshake with PostgreSQL at {WRONG_NAME}:{} failed (sslmode=verify-full): ",
            Services::get().pg_port
        )) && message.contains(&format!("not valid for name \"{WRONG_NAME}\"")),
        "{message}"
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_and_not_the_name() {
    let namespace = Services::get().fresh();
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = url(
        &namespace,
        &format!("sslmode=verify-ca&{}", other_ca(dir.path())),
    );
    let message = refused(&wrong_ca, "another CA").await;
    assert!(
        message.contains("failed (sslmode=verify-ca): invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    // The name the certificate does not carry is not checked.
    let url = format!(
        "postgres://postgres@{WRONG_NAME}:{}/{}?hostaddr=127.0.0.1&sslmode=verify-ca&{}",
        Services::get().pg_port,
        namespace.database,
        harness_ca()
    );
    let records = connect(&url).await.unwrap();
    assert!(encrypted(&records).await);
}

#[tokio::test]
async fn require_encrypts_and_checks_the_chain_only_when_given_roots() {
    let namespace = Services::get().fresh();
    let records = connect(&url(&namespace, "sslmode=require")).await.unwrap();
    assert!(encrypted(&records).await);
    // libpq: with a root CA file, require behaves as verify-ca.
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = url(
        &namespace,
        &format!("sslmode=require&{}", other_ca(dir.path())),
    );
    let message = refused(&wrong_ca, "another CA").await;
    assert!(
        message.contains("failed (sslmode=require): invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    let records = connect(&url(
        &namespace,
        &format!("sslmode=require&{}", harness_ca()),
    ))
    .await
    .unwrap();
    assert!(encrypted(&records).await);
}

#[tokio::test]
async fn the_default_prefer_uses_tls_when_the_server_has_it_and_disable_does_not() {
    let namespace = Services::get().fresh();
    let records = connect(&namespace.database_url).await.unwrap();
    assert!(encrypted(&records).await);
    let records = connect(&url(&namespace, "sslmode=disable")).await.unwrap();
    assert!(!encrypted(&records).await);
}

#[tokio::test]
async fn prefer_with_roots_checks_the_chain_and_does_not_fall_back_to_plain() {
    let namespace = Services::get().fresh();
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = url(&namespace, &other_ca(dir.path()));
    let message = refused(&wrong_ca, "another CA").await;
    assert!(
        message.contains("failed (sslmode=prefer): invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    let records = connect(&url(&namespace, &harness_ca())).await.unwrap();
    assert!(encrypted(&records).await);
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_saying_so() {
    let port = PlainPostgres::get().port;
    for mode in ["require", "verify-full"] {
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode={mode}&{}",
            harness_ca()
        );
        let error = connect(&url).await.err().expect("no TLS there");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            error.to_string(),
            format!("PostgreSQL at 127.0.0.1:{port} does not accept TLS, and sslmode={mode}")
        );
    }
}

#[tokio::test]
async fn prefer_against_a_server_without_tls_connects_in_plain() {
    let port = PlainPostgres::get().port;
    let records = connect(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=prefer"
    ))
    .await
    .unwrap();
    assert!(!encrypted(&records).await);
}

#[tokio::test]
async fn a_key_value_string_with_hostaddr_alone_verifies_the_address() {
    let namespace = Services::get().fresh();
    let conninfo = format!(
        "hostaddr=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}'",
        Services::get().pg_port,
        namespace.database,
        Services::get().pg_ca.display()
    );
    let records = connect(&conninfo).await.unwrap();
    assert!(encrypted(&records).await);
}

#[tokio::test]
async fn scram_over_tls_binds_the_channel_as_a_managed_database_asks() {
    let services = Services::get();
    let namespace = services.fresh();
    // The role owns the database, so that it may create the tables (PostgreSQL 15).
    services.psql(&format!(
        "DO $$ BEGIN CREATE ROLE {SCRAM_OVER_TLS_ROLE} LOGIN PASSWORD 'pw-tls'; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    ));
    services.psql(&format!(
        "ALTER DATABASE {} OWNER TO {SCRAM_OVER_TLS_ROLE}",
        namespace.database
    ));
    let url = |params: &str| {
        format!(
            "postgres://{SCRAM_OVER_TLS_ROLE}:pw-tls@127.0.0.1:{}/{}?{params}",
            services.pg_port, namespace.database
        )
    };
    // SCRAM-SHA-256-PLUS: the password proof is bound to this TLS session's certificate.
    let records = connect(&url(&format!(
        "sslmode=verify-full&{}&channel_binding=require",
        harness_ca()
    )))
    .await
    .unwrap();
    assert!(encrypted(&records).await);
    // The role is refused without TLS: the session above did not get in some other way.
    let message = refused(&url("sslmode=disable"), "no plain sessions for the role").await;
    assert!(
        message.contains("pg_hba.conf rejects connection"),
        "{message}"
    );
}
