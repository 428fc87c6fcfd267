//! `/healthz` of the shared backend: 503 naming what is unreachable while the database
//! refuses connections or the bucket is gone, 200 again once they are back.

mod support;

use http::StatusCode;
use support::services::Services;
use support::{KEY_A, OWNER_A, raw_exchange};
use uploads_server::Server;

async fn health(addr: std::net::SocketAddr) -> (StatusCode, String) {
    let reply = raw_exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_naming_the_database_or_bucket_while_unreachable() {
    let services = Services::get();
    let namespace = services.fresh();
    let server = Server::builder()
        .api_key(KEY_A, OWNER_A)
        .shared(
            &namespace.database_url,
            &namespace.object_store,
            namespace.s3_env(),
        )
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(health(addr).await.0, StatusCode::OK);

    let database = &namespace.database;
    services.psql(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ));
    services.psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ));
    let (status, body) = health(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("the database is unreachable"), "{body}");
    services.psql(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"));
    let (status, body) = health(addr).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    services.delete_bucket(&namespace.bucket);
    let (status, body) = health(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("cannot reach the object store"), "{body}");
    services.create_bucket(&namespace.bucket);
    assert_eq!(health(addr).await.0, StatusCode::OK);
}
