//! Request handling: authenticate, route, ask the ledger, store bytes, answer.
//!
//! Every decision (status codes, error bodies, state transitions) is the ledger's
//! ([`uploads_core::ledger`]). The [`Service`] stands on two seams and asks neither which
//! backend it has: the records ([`Records`]: a read of the ledger, or a mutation planned,
//! made durable and applied as one unit) and the bytes ([`ByteStore`]); hashing ahead is the
//! records' capability ([`HashAhead`]). A failed durable write is a 500 and the mutation is
//! not applied: the client retries, it is never told that a write worked.
//!
//! This module holds the [`Service`] and its routing; the handlers live in `uploads` and
//! `files`; `forms` feeds request bodies to the core's form readers
//! ([`uploads_core::forms`]) and `writer` writes the stored field's bytes.

mod files;
mod forms;
mod uploads;
mod writer;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use uploads_core::auth::ApiKeys;
use uploads_core::ledger::{Ledger, Owner, Planned, RandomIds};
use uploads_core::limits::Limits;
use uploads_core::rate::{RateDecision, RateLimit};
use uploads_core::rejection::Rejection;
use uploads_core::route::{Route, allowed_methods};

use crate::body::{BodyError, BodyPace, BodyReader, CountedBody, ResponseBody, full};
use crate::byte_store::ByteStore;
use crate::entropy::Entropy;
use crate::md5_ahead::HashAhead;
use crate::metrics::{Backend, CountedBytes, Metrics, ScrapedGauge, UploadEvent};
use crate::records::{Answer, Ids, MutationError, NewBytes, Records, Scope};
use crate::stats::ServerStats;

/// The settings of a [`Service`].
pub(crate) struct ServiceConfig {
    pub keys: ApiKeys,
    pub limits: Limits,
    pub max_json_bytes: usize,
    pub body_pace: BodyPace,
}

/// The Uploads + Files service over one backend's records and bytes.
pub struct Service<R> {
    config: ServiceConfig,
    records: R,
    bytes: Arc<dyn ByteStore>,
    entropy: Arc<Entropy>,
    stats: Arc<ServerStats>,
    /// The md5 of each pending Upload, hashed as its Parts arrive.
    md5_ahead: Arc<dyn HashAhead>,
    /// What an operator graphs (see [`crate::metrics`]).
    metrics: Arc<Metrics>,
}

/// What the connections of a server need of its service, whatever its backend.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers one request; never fails (a failure is an OpenAI-shaped error response).
    fn handle(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> BoxFuture<'static, Response<ResponseBody>>;

    /// A new request id, as every answer's `x-request-id` carries.
    fn request_id(&self) -> String;
}

impl<R: Records> Handler for Service<R> {
    fn handle(
        self: Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> BoxFuture<'static, Response<ResponseBody>> {
        Box::pin(async move { self.answer(request).await })
    }

    fn request_id(&self) -> String {
        self.entropy.request_id()
    }
}

impl<R: Records> Service<R> {
    /// Opens the service over `records` and `bytes`, and runs one sweep.
    pub(crate) async fn open(
        config: ServiceConfig,
        records: R,
        bytes: Arc<dyn ByteStore>,
    ) -> io::Result<Arc<Self>> {
        let entropy = Arc::new(Entropy::from_os()?);
        let stats = Arc::new(ServerStats::default());
        let metrics = Arc::new(Metrics::new(scraped_gauges(&stats, &records)));
        let bytes: Arc<dyn ByteStore> = Arc::new(CountedBytes::new(bytes, Arc::clone(&metrics)));
        let md5_ahead = records.hash_ahead(Arc::clone(&bytes), Arc::clone(&stats));
        let service = Arc::new(Self {
            config,
            records,
            bytes,
            entropy,
            stats,
            md5_ahead,
            metrics,
        });
        service
            .sweep()
            .await
            .map_err(|rejection| io::Error::other(rejection.to_string()))?;
        Ok(service)
    }

    /// The counters of this service.
    pub(crate) fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }

    /// The metrics of this service, for the metrics listener.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Removes what the ledger says may go (expired and cancelled data), every `interval`.
    pub(crate) async fn sweep_every(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(rejection) = self.sweep().await {
                tracing::error!(error = %rejection, "sweep failed; retrying at the next tick");
            }
        }
    }

    /// Removes what the ledger says may go; an Upload whose Parts went will never be
    /// completed with an md5: its hashing-ahead chain goes too.
    async fn sweep(&self) -> Answer<()> {
        let started = Instant::now();
        let swept = self.records.sweep().await;
        self.metrics.sweep(swept.is_ok(), started.elapsed());
        let swept = swept.inspect_err(|_| self.metrics.backend_error(Backend::Records))?;
        for upload in &swept.uploads {
            self.md5_ahead.forget(upload);
        }
        self.metrics
            .uploads(UploadEvent::Expired, swept.expired as u64);
        Ok(())
    }

    /// Answers one request; never fails (a failure is an OpenAI-shaped error response).
    pub(crate) async fn answer<B>(self: &Arc<Self>, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let started = Instant::now();
        let request_id = self.entropy.request_id();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (head, body) = request.into_parts();
        let (body, received) = CountedBody::new(body);
        let request = Request::from_parts(head, body);
        let mut seen = Seen::default();
        let mut error_type = None;
        let mut response = match self.route(request, &mut seen).await {
            Ok(response) => response,
            Err(rejection) => {
                if uploads_core::ledger::is_over_quota(&rejection) {
                    self.stats.count_over_quota();
                }
                error_type = Some(rejection.body.error.kind.clone());
                rejection_response(&rejection)
            }
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            let allowed = allowed_methods(&path);
            let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(http::header::ALLOW, value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        // Every answer to a limited key says where it stands, as OpenAI's do.
        for (name, value) in seen.rate.iter().flat_map(RateDecision::headers) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        let bytes_received = received.bytes();
        let bytes_sent =
            declared_length(response.headers()).or_else(|| response.body().size_hint().exact());
        let elapsed = started.elapsed();
        self.metrics.request(
            seen.route,
            response.status().as_u16(),
            elapsed,
            bytes_received,
            bytes_sent,
        );
        // One line per request, with what an operator filters on; a field not known (no
        // route matched, no key accepted, a streamed length) is left out.
        tracing::info!(
            %method,
            %path,
            route = seen.route,
            owner = seen.owner.as_ref().map(Owner::as_str),
            status = response.status().as_u16(),
            bytes_received,
            bytes_sent,
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            error_type,
            %request_id,
            "request"
        );
        response
    }

    async fn route<B>(
        self: &Arc<Self>,
        request: Request<B>,
        seen: &mut Seen,
    ) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let route = Route::resolve(&method, &path)?;
        seen.route = Some(route.name());
        if route == Route::Health {
            return self.health().await;
        }
        let caller = self.config.keys.identify(
            request
                .headers()
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(HeaderValue::as_bytes),
        )?;
        let owner = caller.owner;
        seen.owner = Some(owner.clone());
        // Before any byte of the body is read; an open server (no key) is not limited.
        if let (Some(requests), Some(key)) = (self.config.limits.requests_per_minute, caller.key) {
            let decision = self
                .records
                .take_request(&key, RateLimit::per_minute(requests))
                .await?;
            seen.rate = Some(decision);
            if let Some(rejection) = decision.rejection() {
                self.stats.count_rate_limited();
                self.discard_body(request).await;
                return Err(rejection);
            }
        }
        match route {
            Route::CreateUpload => {
                let body = self.json_body(request).await?;
                self.create_upload(owner, body).await
            }
            Route::AddUploadPart(upload_id) => self.add_part(&owner, &upload_id, request).await,
            Route::CompleteUpload(upload_id) => {
                let body = self.json_body(request).await?;
                self.complete(&owner, &upload_id, &body).await
            }
            Route::CancelUpload(upload_id) => self.cancel_upload(owner, upload_id).await,
            Route::ListFiles => {
                self.list_files(&owner, request.uri().query().unwrap_or(""))
                    .await
            }
            Route::RetrieveFile(file_id) => self.retrieve_file(&owner, &file_id).await,
            Route::DeleteFile(file_id) => self.delete_file(owner, file_id).await,
            Route::DownloadFile(file_id) => self.download_file(&owner, &file_id).await,
            Route::CreateFile => self.create_file(&owner, request).await,
            // Answered above, before the key is checked.
            Route::Health => self.health().await,
        }
    }

    /// `GET /healthz`: 200 `{"status":"ok"}` while the records and the bytes can be used,
    /// else 503 naming what cannot (the database, the bucket, a full disk).
    async fn health(&self) -> Answer<Response<ResponseBody>> {
        let bytes = Arc::clone(&self.bytes);
        let (records, bytes) = tokio::join!(
            self.records.health(),
            tokio::task::spawn_blocking(move || bytes.probe())
        );
        let mut problems: Vec<String> = records.into_iter().collect();
        match bytes {
            Ok(Ok(())) => {}
            Ok(Err(error)) => problems.push(error.to_string()),
            Err(error) => problems.push(format!("the storage probe failed: {error}")),
        }
        if problems.is_empty() {
            return json(&serde_json::json!({"status": "ok"}));
        }
        let problems = problems.join("; ");
        tracing::error!(%problems, "health check: the storage is not usable");
        Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            uploads_core::rejection::SERVER_ERROR,
            format!("The server's storage is not usable: {problems}."),
            None,
            None,
        ))
    }

    fn ids(&self) -> Ids {
        let entropy = Arc::clone(&self.entropy);
        RandomIds::new(Box::new(move |buffer: &mut [u8]| entropy.fill(buffer)))
    }

    /// Plans a mutation over the records of `scope`, makes it durable and applies it, as
    /// one unit on its own task: a request dropped half-way (its client went away) cannot
    /// stop a change between being persisted and being applied.
    async fn mutate<T, F>(self: &Arc<Self>, scope: Scope, plan: F) -> Result<T, MutationError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static,
    {
        let service = Arc::clone(self);
        let mutated =
            tokio::spawn(async move { service.records.mutate(scope, service.ids(), plan).await })
                .await
                .unwrap_or_else(|error| {
                    tracing::error!(%error, "a mutation's task failed");
                    Err(MutationError::Failed(Rejection::server_error(
                        "The server failed while applying the request. Retry it.",
                    )))
                });
        if let Err(MutationError::Failed(_)) = &mutated {
            self.metrics.backend_error(Backend::Records);
        }
        mutated
    }

    /// The scope of a create by `owner`: its usage when quotas are configured (see
    /// [`Scope::Quota`]), else nothing.
    fn create_scope(&self, owner: &Owner) -> Scope {
        let limits = &self.config.limits;
        if limits.quota_bytes.is_some() || limits.quota_files.is_some() {
            Scope::Quota(owner.clone())
        } else {
            Scope::Nothing
        }
    }

    /// Runs a read of the ledger over the records of `scope`.
    async fn read<T: Send>(
        &self,
        scope: Scope,
        read: impl FnOnce(&Ledger, u64) -> Answer<T> + Send,
    ) -> Answer<T> {
        let read = self.records.read(&scope, read).await;
        self.count_records_failure(read)
    }

    /// Before bytes are written: tells the records (see [`Records::intend`]).
    async fn intend(&self, bytes: NewBytes<'_>) -> Answer<()> {
        let intended = self.records.intend(bytes).await;
        self.count_records_failure(intended)
    }

    /// Counts an answer of the records that is a failure (5xx), not a refusal, and passes
    /// it on.
    fn count_records_failure<T>(&self, answer: Answer<T>) -> Answer<T> {
        if answer
            .as_ref()
            .is_err_and(|rejection| rejection.status.is_server_error())
        {
            self.metrics.backend_error(Backend::Records);
        }
        answer
    }

    /// After a refusal decided from the head alone (429): reads and drops the body the client
    /// is sending anyway, so the connection ends cleanly and the client reads the answer
    /// (closing a socket with unread bytes resets it, and a client still writing its body
    /// would see a broken connection instead of the 429 and its `retry-after-ms`). Chunks are
    /// dropped as they come (no memory held), at the body pace every body must keep. A body
    /// the client has not sent yet (`Expect: 100-continue`), one over the largest Part's
    /// request ([`Service::discard_limit`]), or one of unknown length is left unread.
    async fn discard_body<B>(&self, request: Request<B>)
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    {
        let waits_to_send = request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let declared = declared_length(request.headers());
        let within = declared.is_some_and(|length| length <= self.discard_limit());
        if waits_to_send || !within || request.body().is_end_stream() {
            return;
        }
        let mut body = BodyReader::new(request.into_body(), self.config.body_pace);
        while let Ok(Some(_dropped)) = body.next_chunk().await {}
    }

    /// The longest body [`Service::discard_body`] reads: the longest Part request the Part
    /// reader would read (the requests a rate refuses are mostly Parts), at least 1 MiB.
    fn discard_limit(&self) -> u64 {
        uploads_core::forms::max_form_bytes(self.config.limits.max_part_bytes).max(1024 * 1024)
    }

    async fn json_body<B>(&self, request: Request<B>) -> Answer<Bytes>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    {
        let limit = self.config.max_json_bytes;
        // Refused from its head alone: no `100 Continue` for a body that cannot be taken.
        let (_, declared) = uploads_core::forms::form_head(request.headers());
        if declared.is_some_and(|declared| declared > limit as u64) {
            return Err(body_rejection(&BodyError::TooLarge { limit }));
        }
        BodyReader::new(request.into_body(), self.config.body_pace)
            .collect(limit)
            .await
            .map_err(|error| body_rejection(&error))
    }
}

/// What [`Service::route`] learnt of a request, for its log line.
#[derive(Default)]
struct Seen {
    /// The route's name, once one matched.
    route: Option<&'static str>,
    /// Whose key it carried, once the key was accepted.
    owner: Option<Owner>,
    /// Where its key stands against the request rate, when one is configured.
    rate: Option<RateDecision>,
}

/// The `Content-Length` a message declares, if any.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    uploads_core::forms::form_head(headers).1
}

/// The answer to a storage failure: 503 with `Retry-After` when the store could not be
/// reached or did not answer in time (a silent or refusing bucket: retrying may work), else
/// 500; `message` says what was not done.
fn storage_rejection(error: &io::Error, message: &str) -> Rejection {
    if matches!(
        error.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    ) {
        Rejection::unavailable(format!(
            "{message} The storage could not be reached, or did not answer in time."
        ))
    } else {
        Rejection::server_error(message)
    }
}

fn json(value: &impl Serialize) -> Answer<Response<ResponseBody>> {
    let body = serde_json::to_vec(value)
        .map_err(|_| Rejection::server_error("could not encode the response"))?;
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// An OpenAI-shaped error response (with `Retry-After` when the rejection has one).
pub(crate) fn rejection_response(rejection: &Rejection) -> Response<ResponseBody> {
    let mut response = Response::new(full(rejection.body_json()));
    *response.status_mut() = rejection.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in rejection.retry_after_headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn body_rejection(error: &BodyError) -> Rejection {
    match error {
        BodyError::TooLarge { limit } => Rejection::too_large(
            None,
            format!("The request body is larger than the maximum of {limit} bytes."),
        ),
        BodyError::Idle(_) | BodyError::TooSlow(_) => Rejection::new(
            StatusCode::REQUEST_TIMEOUT,
            uploads_core::rejection::INVALID_REQUEST_ERROR,
            error.to_string(),
            None,
            None,
        ),
        BodyError::Transport(_) => Rejection::invalid(None, "The request body could not be read."),
    }
}

/// The gauges read at each scrape: this service's requests in flight, and the records' own.
fn scraped_gauges(stats: &Arc<ServerStats>, records: &impl Records) -> Vec<ScrapedGauge> {
    let parts = Arc::clone(stats);
    let downloads = Arc::clone(stats);
    let mut gauges = vec![
        ScrapedGauge::new(
            "parts_in_flight",
            "Add-part requests being handled",
            move || i64::try_from(parts.parts_in_flight()).ok(),
        ),
        ScrapedGauge::new(
            "downloads_in_flight",
            "File contents being sent",
            move || i64::try_from(downloads.downloads_in_flight()).ok(),
        ),
    ];
    gauges.extend(records.gauges());
    gauges
}
