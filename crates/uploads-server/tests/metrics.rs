//! `GET /metrics` on the metrics listener: what the API did, in the Prometheus text format,
//! over real HTTP; never served on the API's address.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use support::{Client, Protocol, TestServer, full, md5_hex, pattern, shared_backend};

/// Every sample of a scrape, by its series (`name{labels}`).
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// `GET /metrics` from `addr`, checked to be well-formed text format 0.0.4: every
    /// sample belongs to a family announced by `# TYPE`, and has a number for its value.
    async fn from(addr: SocketAddr) -> Self {
        let reply = Client::connect(addr, Protocol::Http1, None)
            .await
            .get("/metrics")
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            reply.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(reply.body.to_vec()).expect("UTF-8");
        let mut families = Vec::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                families.push(declared.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let name = series.split('{').next().unwrap();
            assert!(
                families
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "{name} has no # TYPE line:\n{text}"
            );
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            samples.insert(series.to_owned(), value);
        }
        Self { samples, text }
    }

    /// The value of `series`, 0 when absent (a counter not yet incremented).
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }
}

// Counters are whole numbers, exact in an f64.
#[allow(clippy::float_cmp)]
#[tokio::test]
async fn the_metrics_count_requests_bytes_and_each_uploads_fate() {
    let server = TestServer::start_with(|builder| {
        builder
            .metrics_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .sweep_interval(Duration::from_millis(20))
    })
    .await;
    let metrics = server.running.metrics_addr().expect("a metrics listener");
    let client = server.client().await;

    // One Upload completed with an md5, read back.
    let (first, second) = (pattern(3000, 1), pattern(2000, 2));
    let upload = client.create_upload(5000).await;
    let part_a = client.add_part_ok(&upload.id, &first).await;
    let part_b = client.add_part_ok(&upload.id, &second).await;
    let md5 = md5_hex(&[&first, &second]);
    let completed = client
        .complete_ok(&upload.id, &[&part_a.id, &part_b.id], Some(&md5))
        .await;
    let file = completed.file.expect("the File");
    assert_eq!(client.content_ok(&file.id).await.len(), 5000);
    // One cancelled (twice: the replay is no second cancellation).
    let cancelled = client.create_upload(10).await;
    assert_eq!(client.cancel(&cancelled.id).await.status, StatusCode::OK);
    assert_eq!(client.cancel(&cancelled.id).await.status, StatusCode::OK);
    // One left to expire with a Part, which the sweeper removes.
    let expiring = client.create_upload(10).await;
    client.add_part_ok(&expiring.id, b"abc").await;
    // A request without a key.
    let anonymous = client.with_key(None);
    let refused = anonymous.create_upload_json(r#"{"bytes": 1}"#).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // Past the Upload's expiry, not yet past its record's retention (the sweeper would then
    // forget the record with its Parts at once, which is no expiry seen).
    server.clock.advance(3600 + 1);
    // The bound only keeps a broken server from hanging the suite.
    let mut scrape = Scrape::from(metrics).await;
    for _ in 0..3000 {
        if scrape.value("uploads_uploads_total{event=\"expired\"}") >= 1.0
            && scrape.value("uploads_downloads_in_flight") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        scrape = Scrape::from(metrics).await;
    }
    let text = &scrape.text;
    for (series, expected) in [
        (
            "uploads_http_requests_total{route=\"create_upload\",status=\"200\"}",
            3.0,
        ),
        (
            "uploads_http_requests_total{route=\"create_upload\",status=\"401\"}",
            1.0,
        ),
        (
            "uploads_http_requests_total{route=\"add_upload_part\",status=\"200\"}",
            3.0,
        ),
        (
            "uploads_http_requests_total{route=\"cancel_upload\",status=\"200\"}",
            2.0,
        ),
        (
            "uploads_http_request_duration_seconds_count{route=\"complete_upload\"}",
            1.0,
        ),
        (
            "uploads_http_sent_bytes_total{route=\"download_file\"}",
            5000.0,
        ),
        ("uploads_uploads_total{event=\"created\"}", 3.0),
        ("uploads_uploads_total{event=\"completed\"}", 1.0),
        ("uploads_uploads_total{event=\"cancelled\"}", 1.0),
        ("uploads_uploads_total{event=\"expired\"}", 1.0),
        ("uploads_complete_md5_wait_seconds_count", 1.0),
        ("uploads_parts_in_flight", 0.0),
        ("uploads_downloads_in_flight", 0.0),
    ] {
        assert_eq!(scrape.value(series), expected, "{series} in\n{text}");
    }
    // The Parts' bodies are multipart forms: their data and a few hundred bytes of fields.
    let received = scrape.value("uploads_http_received_bytes_total{route=\"add_upload_part\"}");
    assert!(
        (5003.0..8000.0).contains(&received),
        "{received} bytes received for 5003 bytes of Parts"
    );
    assert!(
        scrape.value("uploads_sweeps_total{outcome=\"ok\"}") >= 1.0,
        "{text}"
    );
    assert!(scrape.has("uploads_sweep_duration_seconds_count"), "{text}");
    assert!(
        scrape.value("uploads_sweep_last_success_timestamp_seconds") > 1.7e9,
        "a Unix time: {text}"
    );
    if shared_backend() {
        assert!(scrape.has("uploads_database_connections_in_use"), "{text}");
        assert!(scrape.has("uploads_database_connections_waiting"), "{text}");
    } else {
        assert!(scrape.value("uploads_data_dir_free_bytes") > 0.0, "{text}");
    }
    assert_eq!(
        scrape.value("uploads_backend_errors_total{backend=\"bytes\"}"),
        0.0
    );
}

#[tokio::test]
async fn metrics_are_served_only_on_their_own_listener_and_only_at_slash_metrics() {
    let server = TestServer::start_with(|builder| {
        builder.metrics_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await;
    let api = server.client().await;
    assert_eq!(api.get("/metrics").await.status, StatusCode::NOT_FOUND);
    let metrics = Client::connect(
        server.running.metrics_addr().unwrap(),
        Protocol::Http1,
        None,
    )
    .await;
    assert_eq!(metrics.get("/v1/files").await.status, StatusCode::NOT_FOUND);
    let posted = metrics
        .send(Method::POST, "/metrics", None, full(Vec::new()))
        .await;
    assert_eq!(posted.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(posted.headers["allow"], "GET, HEAD");

    let without = TestServer::start().await;
    assert_eq!(without.running.metrics_addr(), None);
}

#[tokio::test]
async fn a_metrics_address_in_use_stops_the_start_naming_it() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = uploads_server::Server::builder()
        .data_dir(dir.path())
        .metrics_listen(addr)
        .start()
        .await
        .err()
        .expect("the metrics address is taken");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot listen for metrics on {addr}:")),
        "{error}"
    );
    // Nothing of the failed start holds the directory.
    let server = uploads_server::Server::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    server.shutdown().await;
}
