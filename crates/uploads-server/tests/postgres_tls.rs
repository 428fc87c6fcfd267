//! The server on PostgreSQL over TLS, as a team runs it against a managed database: a
//! `verify-full` URL with `sslrootcert` serves an Upload from creation to its File's bytes
//! over encrypted sessions only, and a URL the database cannot honour stops the start with
//! the reason.

mod support;

use support::services::{PlainPostgres, Services};
use support::{KEY_A, OWNER_A, TestServer, pattern};
use uploads_server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_verify_full_database_url_completes_an_upload_over_tls() {
    let services = Services::get();
    let namespace = services.fresh();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        namespace.database_url,
        services.pg_ca.display()
    );
    let server = TestServer::start_with(|builder| {
        builder.shared(&url, &namespace.object_store, namespace.s3_env())
    })
    .await;
    let client = server.client().await;
    let (first, second) = (pattern(70_000, 1), pattern(123, 2));
    let file = client.upload_file(&[&first, &second]).await;
    assert_eq!(client.content_ok(&file.id).await, [first, second].concat());
    // Every session of the server's on its database is encrypted (psql's own aside).
    let sessions = services.psql_on(
        &namespace.database,
        "SELECT count(*) FILTER (WHERE ssl) || ' ' || count(*) FILTER (WHERE NOT ssl)
         FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let (encrypted, plain) = sessions.split_once(' ').unwrap();
    assert!(encrypted.parse::<u32>().unwrap() > 0, "{sessions}");
    assert_eq!(plain, "0", "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_has_no_tls_under_sslmode_require_does_not_start() {
    let namespace = Services::get().fresh();
    let port = PlainPostgres::get().port;
    let dir = tempfile::tempdir().unwrap();
    let error = Server::builder()
        .data_dir(dir.path())
        .api_key(KEY_A, OWNER_A)
        .shared(
            format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"),
            &namespace.object_store,
            namespace.s3_env(),
        )
        .start()
        .await
        .err()
        .expect("the database has no TLS");
    assert_eq!(
        error.to_string(),
        format!("PostgreSQL at 127.0.0.1:{port} does not accept TLS, and sslmode=require")
    );
}
