//! The metrics listener: `GET /metrics` on an address of its own, without a key.
//!
//! It is small on purpose: HTTP/1.1 only, a few connections at once (a scraper needs one),
//! every wait bounded, and nothing but `/metrics` served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::{CONTENT_TYPE, Metrics};
use crate::body::{ResponseBody, full};

/// Scrapers served at once; more wait in the listen backlog.
const MAX_SCRAPERS: usize = 8;
/// How long a scraper may take to send its request head, or stay idle between requests.
const SCRAPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds `addr` and serves `GET /metrics` from `metrics` until the returned task is aborted.
pub(crate) async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "metrics on http://{local_addr}/metrics");
    Ok((local_addr, tokio::spawn(accept_scrapers(listener, metrics))))
}

async fn accept_scrapers(listener: TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPERS));
    // Dropped with this task: aborting it closes every scraper's connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPER_TIMEOUT)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| {
                        let answer = answer(&metrics, &request);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    }),
                );
            // A scraper that keeps its connection open but never asks again is closed.
            let _ = tokio::time::timeout(SCRAPER_TIMEOUT * 4, connection).await;
            drop(permit);
        });
    }
}

/// `GET /metrics` (or `HEAD`): the text; any other path 404, any other method 405.
fn answer<B>(metrics: &Metrics, request: &Request<B>) -> Response<ResponseBody> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(full(text));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(full(metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}
