//! `/healthz` of the shared backend: 503 naming what is unreachable while the database
//! refuses connections or the bucket is gone or silent, 200 again once they are back;
//! startup against a silent bucket fails within seconds, and requests that need it get a
//! retryable 503.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::services::{Namespace, Services};
use support::silencing_proxy::SilencingProxy;
use support::{Client, KEY_A, OWNER_A, Protocol, healthz};
use uploads_server::{Server, ServerBuilder};

async fn health(addr: std::net::SocketAddr) -> (StatusCode, String) {
    let reply = healthz(addr).await;
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

/// The emulator's environment with its endpoint replaced.
fn s3_env_via(namespace: &Namespace, endpoint: &str) -> Vec<(&'static str, String)> {
    let mut env = namespace.s3_env();
    for (key, value) in &mut env {
        if *key == "AWS_ENDPOINT_URL" {
            endpoint.clone_into(value);
        }
    }
    env
}

/// A server on the namespace whose bucket is reached through `proxy`.
fn via(namespace: &Namespace, proxy: &SilencingProxy) -> ServerBuilder {
    Server::builder().api_key(KEY_A, OWNER_A).shared(
        &namespace.database_url,
        &namespace.object_store,
        s3_env_via(namespace, &proxy.endpoint),
    )
}

/// A hang guard, never a measurement: without deadlines these waited 180 s.
const HANG_GUARD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_naming_a_bucket_that_fell_silent_instead_of_hanging() {
    let services = Services::get();
    let namespace = services.fresh();
    let proxy = SilencingProxy::start(services.s3_port).await;
    let server = via(&namespace, &proxy).start().await.unwrap();
    let addr = server.local_addr();
    assert_eq!(health(addr).await.0, StatusCode::OK);

    proxy.silence();
    let (status, body) = tokio::time::timeout(HANG_GUARD, health(addr))
        .await
        .expect("/healthz answers within its own deadline");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("cannot reach the object store"), "{body}");
    assert!(body.contains(&namespace.bucket), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_against_a_silent_bucket_fails_naming_it() {
    let services = Services::get();
    let namespace = services.fresh();
    let proxy = SilencingProxy::start(services.s3_port).await;
    proxy.silence();
    let started = via(&namespace, &proxy).start();
    let error = tokio::time::timeout(HANG_GUARD, started)
        .await
        .expect("startup gives up within its deadline")
        .err()
        .expect("startup fails");
    assert!(error.to_string().contains(&namespace.bucket), "{error}");
}

/// While the bucket is silent, or refuses and cuts connections (it is down), a Part and a
/// download are answered within the bucket's deadlines with a retryable 503 (nothing
/// stored, the SDKs retry), not held for minutes and not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bucket_is_a_retryable_503_for_parts_and_downloads() {
    bucket_fault_is_retryable(SilencingProxy::silence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_bucket_is_a_retryable_503_for_parts_and_downloads() {
    bucket_fault_is_retryable(SilencingProxy::refuse).await;
}

async fn bucket_fault_is_retryable(fault: fn(&SilencingProxy)) {
    let services = Services::get();
    let namespace = services.fresh();
    let proxy = SilencingProxy::start(services.s3_port).await;
    let server = via(&namespace, &proxy).start().await.unwrap();
    let client = Client::connect(server.local_addr(), Protocol::Http1, Some(KEY_A)).await;
    let file = client.upload_file(&[b"abc"]).await;
    let upload = client.create_upload(1).await.id;

    fault(&proxy);
    let part = tokio::time::timeout(HANG_GUARD * 2, client.add_part(&upload, b"x"))
        .await
        .expect("a Part is answered within the bucket's deadlines");
    part.assert_retryable_503();
    let content = tokio::time::timeout(HANG_GUARD * 2, client.content(&file.id))
        .await
        .expect("a download is answered within the bucket's deadlines");
    content.assert_retryable_503();
}
