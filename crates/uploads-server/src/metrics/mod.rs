//! What an operator graphs: the server's counters, gauges and histograms in the Prometheus
//! text format (prometheus-client), served on a listener of their own
//! ([`crate::ServerBuilder::metrics_listen`]) so that they are never exposed by accident on
//! the API's address and need no key.
//!
//! Every name starts with `uploads_`. Counters end in `_total`; durations are seconds, sizes
//! bytes. Values that exist only at a moment (Parts in flight, the database pool, free disk
//! space) are read when scraped, not kept up to date.

mod counted_bytes;
mod endpoint;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub(crate) use counted_bytes::CountedBytes;
pub(crate) use endpoint::serve_metrics;

/// A request's labels: its route (the spec's operationId in snake case, `unknown` when none
/// matched) and its status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// A route's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// What happened to an Upload, for `uploads_uploads_total{event}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum UploadEvent {
    /// `POST /uploads` made one.
    Created,
    /// A complete made its File.
    Completed,
    /// A cancel ended it.
    Cancelled,
    /// The sweeper removed the Parts of an Upload that expired pending (one without Parts has
    /// nothing to remove, and is not counted).
    Expired,
}

impl UploadEvent {
    fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Which backend failed, for `uploads_backend_errors_total{backend}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The records: the data directory's journal or PostgreSQL.
    Records,
    /// The bytes: the data directory's files or the object store.
    Bytes,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A gauge whose value is read when the metrics are scraped.
pub(crate) struct ScrapedGauge {
    /// Its name, without the `uploads_` prefix.
    name: &'static str,
    help: &'static str,
    /// Its value now; `None` (not known now) leaves it out of this scrape.
    read: Box<dyn Fn() -> Option<i64> + Send + Sync>,
}

impl ScrapedGauge {
    /// The gauge `name` (without the `uploads_` prefix), read by `read` at each scrape.
    pub(crate) fn new(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Option<i64> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            read: Box::new(read),
        }
    }
}

/// The server's metrics. Cheap to update from any task: counters are atomics, families a
/// read lock once a label set exists.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    received: Family<RouteLabels, Counter>,
    sent: Family<RouteLabels, Counter>,
    uploads: Family<EventLabels, Counter>,
    md5_wait: Histogram,
    sweeps: Family<OutcomeLabels, Counter>,
    sweep_duration: Histogram,
    last_sweep: Gauge<f64, AtomicU64>,
    backend_errors: Family<BackendLabels, Counter>,
}

/// Latency buckets from 1 ms to about 2 minutes (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

impl Metrics {
    /// The metrics, with `gauges` read at each scrape.
    pub(crate) fn new(gauges: Vec<ScrapedGauge>) -> Self {
        let mut registry = Registry::with_prefix("uploads");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let durations: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to its response head, by route",
            durations.clone(),
        );
        let received = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_received_bytes",
            "Request body bytes read, by route",
            received.clone(),
        );
        let sent = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_sent_bytes",
            "Response body bytes answered, by route (a download cut short counts whole)",
            sent.clone(),
        );
        let uploads = Family::<EventLabels, Counter>::default();
        registry.register(
            "uploads",
            "Uploads created, completed, cancelled, and expired (counted when the sweeper \
             removes an expired Upload's Parts: one that expired with none is not counted)",
            uploads.clone(),
        );
        let md5_wait = latency_histogram();
        registry.register(
            "complete_md5_wait_seconds",
            "Time a complete with an md5 spent finishing the digest of its Parts",
            md5_wait.clone(),
        );
        let sweeps = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sweeps",
            "Sweeper runs, by outcome (ok or failed)",
            sweeps.clone(),
        );
        let sweep_duration = latency_histogram();
        registry.register(
            "sweep_duration_seconds",
            "Time one sweeper run took",
            sweep_duration.clone(),
        );
        let last_sweep = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sweep_last_success_timestamp_seconds",
            "When the last sweeper run that succeeded ended (Unix time): the sweeper's lag is \
             time() minus this",
            last_sweep.clone(),
        );
        let backend_errors = Family::<BackendLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Failures of the records (journal or PostgreSQL) and of the bytes (files or object \
             store) that a request or the sweeper met",
            backend_errors.clone(),
        );
        registry.register_collector(Box::new(ScrapeGauges(gauges)));
        Self {
            registry,
            requests,
            durations,
            received,
            sent,
            uploads,
            md5_wait,
            sweeps,
            sweep_duration,
            last_sweep,
            backend_errors,
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(
        &self,
        route: Option<&'static str>,
        status: u16,
        elapsed: Duration,
        received: u64,
        sent: Option<u64>,
    ) {
        let route = route.unwrap_or("unknown");
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        let labels = RouteLabels { route };
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if received > 0 {
            self.received.get_or_create(&labels).inc_by(received);
        }
        if let Some(bytes) = sent {
            self.sent.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// Counts `count` Uploads that went through `event`.
    pub(crate) fn uploads(&self, event: UploadEvent, count: u64) {
        self.uploads
            .get_or_create(&EventLabels {
                event: event.label(),
            })
            .inc_by(count);
    }

    /// Records how long a complete waited for its md5.
    pub(crate) fn md5_wait(&self, waited: Duration) {
        self.md5_wait.observe(waited.as_secs_f64());
    }

    /// Records one sweeper run.
    pub(crate) fn sweep(&self, succeeded: bool, took: Duration) {
        let outcome = if succeeded { "ok" } else { "failed" };
        self.sweeps.get_or_create(&OutcomeLabels { outcome }).inc();
        self.sweep_duration.observe(took.as_secs_f64());
        if succeeded {
            // A report for an operator's graphs, not a decision: the system's clock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_sweep.set(now.as_secs_f64());
        }
    }

    /// Counts one failure of `backend`.
    pub(crate) fn backend_error(&self, backend: Backend) {
        let backend = match backend {
            Backend::Records => "records",
            Backend::Bytes => "bytes",
        };
        self.backend_errors
            .get_or_create(&BackendLabels { backend })
            .inc();
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String fails only if a metric's encoding does; none of ours can.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "metrics could not be encoded");
        }
        text
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Gauges whose values are read when scraped.
struct ScrapeGauges(Vec<ScrapedGauge>);

impl std::fmt::Debug for ScrapeGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|gauge| gauge.name).collect();
        f.debug_tuple("ScrapeGauges").field(&names).finish()
    }
}

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for gauge in &self.0 {
            let Some(value) = (gauge.read)() else {
                continue;
            };
            let value = ConstGauge::new(value);
            let metric =
                encoder.encode_descriptor(gauge.name, gauge.help, None, value.metric_type())?;
            value.encode(metric)?;
        }
        Ok(())
    }
}

/// `data_dir_free_bytes`: the free bytes, for unprivileged writers (`df`'s Avail), on the
/// filesystem holding `dir`.
pub(crate) fn free_bytes_of(dir: std::path::PathBuf) -> ScrapedGauge {
    ScrapedGauge::new(
        "data_dir_free_bytes",
        "Bytes free for the server on the data directory's filesystem",
        move || {
            #[cfg(unix)]
            {
                let stat = rustix::fs::statvfs(&dir).ok()?;
                i64::try_from(stat.f_bavail.saturating_mul(stat.f_frsize)).ok()
            }
            #[cfg(not(unix))]
            {
                let _ = &dir;
                None
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_family_with_its_labels_and_the_scraped_gauges() {
        let metrics = Metrics::new(vec![
            ScrapedGauge::new("parts_in_flight", "Add-part requests being handled", || {
                Some(3)
            }),
            ScrapedGauge::new("unknown_now", "A value not known", || None),
        ]);
        metrics.request(
            Some("add_upload_part"),
            200,
            Duration::from_millis(20),
            1000,
            Some(10),
        );
        metrics.request(None, 404, Duration::from_millis(1), 0, Some(5));
        metrics.uploads(UploadEvent::Expired, 2);
        metrics.sweep(false, Duration::from_millis(3));
        metrics.backend_error(Backend::Bytes);
        let text = metrics.encode();
        for line in [
            "uploads_http_requests_total{route=\"add_upload_part\",status=\"200\"} 1",
            "uploads_http_requests_total{route=\"unknown\",status=\"404\"} 1",
            "uploads_http_request_duration_seconds_count{route=\"add_upload_part\"} 1",
            "uploads_http_received_bytes_total{route=\"add_upload_part\"} 1000",
            "uploads_http_sent_bytes_total{route=\"unknown\"} 5",
            "uploads_uploads_total{event=\"expired\"} 2",
            "uploads_sweeps_total{outcome=\"failed\"} 1",
            "uploads_backend_errors_total{backend=\"bytes\"} 1",
            "# TYPE uploads_parts_in_flight gauge",
            "uploads_parts_in_flight 3",
        ] {
            assert!(
                text.lines().any(|seen| seen == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("unknown_now"), "{text}");
    }
}
