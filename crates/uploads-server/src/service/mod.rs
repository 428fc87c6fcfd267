//! Request handling: authenticate, route, ask the ledger, store bytes, answer.
//!
//! Every decision (status codes, error bodies, state transitions) is the ledger's
//! ([`uploads_core::ledger`]); this module moves bytes between sockets and the [`Store`] and
//! keeps the ledger's persistence contract: a mutation is planned, its steps are made durable
//! in order, and only then applied and answered. A failed durable write is a 500 and the
//! mutation is not applied: the client retries, it is never told that a write worked.
//!
//! This module holds the [`Service`], its routing and the mutate/read/persist machinery;
//! the handlers live in `uploads` and `files`; `forms` feeds request bodies to the core's
//! form readers ([`uploads_core::forms`]), `writer` writes the stored field's bytes,
//! `recovery` reads the records back at startup and `shared` does the scale-out backend's
//! chores.

mod files;
mod forms;
mod recovery;
mod shared;
mod uploads;
mod writer;

pub(crate) use shared::Shared;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uploads_core::auth::ApiKeys;
use uploads_core::ledger::{Change, Ledger, Planned, RandomIds, Step};
use uploads_core::limits::Limits;
use uploads_core::rejection::Rejection;
use uploads_core::route::{Route, allowed_methods};
use uploads_core::types::UploadId;

use crate::body::{BodyError, BodyPace, BodyReader, ResponseBody, full};
use crate::clock::{Clock, WatchedClock};
use crate::entropy::Entropy;
use crate::md5_ahead::{HashAhead, InDatabase, InMemory};
use crate::readers::Readers;
use crate::records::{MutationError, Scope};
use crate::stats::ServerStats;
use crate::store::Store;
use recovery::recover_records;
use shared::{collect_objects, shared_health, sweep_shared};

/// Records swept between two yields to the runtime.
const SWEEP_YIELD_EVERY: usize = 32;
/// How long a mutation on the shared backend waits for this instance's earlier mutations
/// of the same record (each waits at most the database's lock timeout in turn).
const RECORD_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The settings of a [`Service`].
pub(crate) struct ServiceConfig {
    pub keys: ApiKeys,
    pub limits: Limits,
    pub max_json_bytes: usize,
    pub body_pace: BodyPace,
}

/// The Uploads + Files service over one store.
pub struct Service {
    config: ServiceConfig,
    /// The ledger, locked briefly: to plan a mutation, to apply it, to read. Mutations of
    /// one record are kept apart by its record lock (the ledger's contract), not by this.
    ledger: Mutex<Ledger>,
    /// Per-record locks of the mutations in flight (see [`Service::record_lock`]).
    record_locks: std::sync::Mutex<HashMap<String, Weak<Mutex<()>>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<Entropy>,
    stats: Arc<ServerStats>,
    /// The md5 of each pending Upload, hashed as its Parts arrive.
    md5_ahead: Arc<dyn HashAhead>,
    /// Downloads in flight, which Part removals wait for.
    readers: Arc<Readers>,
    /// The scale-out backend: records in PostgreSQL (the `ledger` above stays empty) and
    /// bytes in object storage (the `store`).
    shared: Option<Shared>,
}

/// A request refused on its way in, or a failure answered as 500.
type Answer<T> = Result<T, Rejection>;

/// The ids the ledger mints: random, from the server's entropy.
type Ids = RandomIds<Box<dyn FnMut(&mut [u8]) + Send>>;

impl Service {
    /// Opens the service over `store`: sweeps what a crash left (temp files, Parts never
    /// recorded, an interrupted complete), rebuilds the ledger and runs one sweep.
    pub(crate) async fn recover(
        config: ServiceConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Arc<Self>> {
        let entropy = Arc::new(Entropy::from_os()?);
        let loaded = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || recover_records(&*store))
                .await
                .map_err(io::Error::other)??
        };
        let ledger = Ledger::load(config.limits.clone(), loaded.0, loaded.1);
        let clock = Arc::new(WatchedClock::new(clock));
        Self::start(config, ledger, store, clock, entropy, None).await
    }

    /// Opens the service over records and bytes that other instances share: nothing to
    /// recover (every mutation was one transaction), one sweep.
    pub(crate) async fn open_shared(
        config: ServiceConfig,
        shared: Shared,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Arc<Self>> {
        let entropy = Arc::new(Entropy::from_os()?);
        let ledger = Ledger::new(config.limits.clone());
        let store = Arc::clone(&shared.objects) as Arc<dyn Store>;
        Self::start(config, ledger, store, clock, entropy, Some(shared)).await
    }

    async fn start(
        config: ServiceConfig,
        ledger: Ledger,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<Entropy>,
        shared: Option<Shared>,
    ) -> io::Result<Arc<Self>> {
        let stats = Arc::new(ServerStats::default());
        let md5_ahead: Arc<dyn HashAhead> = match &shared {
            Some(shared) => Arc::new(InDatabase::new(
                Arc::clone(&shared.records),
                Arc::clone(&store),
                Arc::clone(&stats),
                shared.clock.clone(),
            )),
            None => Arc::new(InMemory::new(Arc::clone(&store), Arc::clone(&stats))),
        };
        let readers = Arc::new(Readers::new(Arc::clone(&store)));
        let service = Arc::new(Self {
            config,
            ledger: Mutex::new(ledger),
            record_locks: std::sync::Mutex::new(HashMap::new()),
            store,
            clock,
            entropy,
            md5_ahead,
            readers,
            stats,
            shared,
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

    /// Removes what the ledger says may go, one record at a time: the ledger is locked only
    /// to plan and to apply each, never across the disk work, so requests keep flowing; a
    /// record whose removal fails is logged and skipped (tried again at the next sweep) and
    /// never blocks the others.
    async fn sweep(&self) -> Answer<()> {
        if let Some(shared) = &self.shared {
            return sweep_shared(shared).await;
        }
        let changes = self.ledger.lock().await.sweep_each(self.clock.now());
        for (done, change) in changes.into_iter().enumerate() {
            if done > 0 && done % SWEEP_YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
            let Some((key, upload)) = swept_record(&change) else {
                continue;
            };
            let _record = self.record_lock(&key).await;
            // Planned before the lock was taken: a mutation may have changed the record
            // since (the next sweep plans it again).
            if !self.ledger.lock().await.is_current(&change) {
                continue;
            }
            if let Err(rejection) = self.persist(&change).await {
                tracing::error!(record = %key, error = %rejection, "sweeping a record failed; skipped until the next sweep");
                continue;
            }
            if let Err(rejection) = apply(&mut *self.ledger.lock().await, change) {
                tracing::error!(record = %key, error = %rejection, "a swept record changed meanwhile");
                continue;
            }
            // An Upload whose Parts go will never be completed with an md5: its
            // hashing-ahead chain goes too.
            if let Some(upload) = upload {
                self.md5_ahead.forget(&upload);
            }
        }
        Ok(())
    }

    /// A new request id, as every answer's `x-request-id` carries.
    pub(crate) fn request_id(&self) -> String {
        self.entropy.request_id()
    }

    /// Answers one request; never fails (a failure is an OpenAI-shaped error response).
    pub(crate) async fn handle<B>(self: &Arc<Self>, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let started = Instant::now();
        let request_id = self.entropy.request_id();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut response = match self.route(request).await {
            Ok(response) => response,
            Err(rejection) => rejection_response(&rejection),
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
        tracing::info!(
            %method,
            %path,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis(),
            %request_id,
            "request"
        );
        response
    }

    async fn route<B>(self: &Arc<Self>, request: Request<B>) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let route = Route::resolve(&method, &path)?;
        if route == Route::Health {
            return self.health().await;
        }
        let owner = self.config.keys.authenticate(
            request
                .headers()
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(HeaderValue::as_bytes),
        )?;
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

    /// `GET /healthz`: 200 `{"status":"ok"}` when the store takes writes (on the shared
    /// backend: when the database and the bucket answer), else 503.
    async fn health(&self) -> Answer<Response<ResponseBody>> {
        let problem = if let Some(shared) = &self.shared {
            shared_health(shared).await
        } else {
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.probe()).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => {
                    tracing::error!(%error, "health check: the store is not usable");
                    Some(String::new())
                }
                Err(error) => {
                    tracing::error!(%error, "health check: the probe failed");
                    Some(String::new())
                }
            }
        };
        match problem {
            None => json(&serde_json::json!({"status": "ok"})),
            Some(problem) => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                uploads_core::rejection::SERVER_ERROR,
                format!("The server's storage is not usable.{problem}"),
                None,
                None,
            )),
        }
    }

    fn ids(&self) -> Ids {
        let entropy = Arc::clone(&self.entropy);
        RandomIds::new(Box::new(move |buffer: &mut [u8]| entropy.fill(buffer)))
    }

    /// Plans a mutation of the record named `record` (an Upload or File id; `None` for one
    /// that creates a record), persists it and applies it, as one unit on its own task: a
    /// request dropped half-way (its client went away) cannot stop a change between being
    /// persisted and being applied, which would leave the disk and the ledger disagreeing.
    /// The ledger itself is locked only to plan and to apply, never across an fsync.
    async fn mutate<T, F>(self: &Arc<Self>, scope: Scope, plan: F) -> Result<T, MutationError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static,
    {
        let service = Arc::clone(self);
        let record = match &scope {
            Scope::Upload(id) | Scope::NewPart { upload: id, .. } => Some(id.to_string()),
            Scope::File(id) => Some(id.to_string()),
            Scope::Nothing | Scope::List { .. } => None,
        };
        tokio::spawn(async move {
            if let Some(shared) = &service.shared {
                // One request per record at a time on this instance takes a database
                // connection (the others wait here, bounded), so requests for one busy or
                // locked Upload cannot take the pool every other tenant needs.
                let record_lock = match &record {
                    Some(record) => Some(
                        service
                            .bounded_record_lock(record)
                            .await
                            .map_err(MutationError::Failed)?,
                    ),
                    None => None,
                };
                // One transaction that locks the rows it reads: the database keeps
                // mutations of one record apart, on every instance.
                let mut ids = service.ids();
                let committed = shared
                    .records
                    .mutate(&scope, shared.now(), |ledger, now| {
                        plan(ledger, now, &mut ids)
                    })
                    .await?;
                drop(record_lock);
                if !committed.doomed_now.is_empty() {
                    // The bytes this change freed go before the answer, as on the directory
                    // store (the record is no longer locked meanwhile); a failure (logged)
                    // leaves them to the sweep.
                    let _ = collect_objects(shared, Some(&committed.doomed_now)).await;
                }
                return Ok(committed.response);
            }
            let _record = match &record {
                Some(record) => Some(service.record_lock(record).await),
                None => None,
            };
            let planned = {
                let ledger = service.ledger.lock().await;
                plan(&ledger, service.clock.now(), &mut service.ids())
                    .map_err(MutationError::Refused)?
            };
            if let Some(change) = planned.change {
                service
                    .persist(&change)
                    .await
                    .map_err(MutationError::Failed)?;
                apply(&mut *service.ledger.lock().await, change).map_err(MutationError::Failed)?;
            }
            Ok(planned.response)
        })
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "a mutation's task failed");
            Err(MutationError::Failed(Rejection::server_error(
                "The server failed while applying the request. Retry it.",
            )))
        })
    }

    /// Makes a change's steps durable, in order, on a blocking thread.
    async fn persist(&self, change: &Change) -> Answer<()> {
        let steps = change.steps().to_vec();
        let (store, readers) = (Arc::clone(&self.store), Arc::clone(&self.readers));
        tokio::task::spawn_blocking(move || persist(&*store, &readers, &steps))
            .await
            .map_err(io::Error::other)
            .and_then(|result| result)
            .map_err(|error| {
                tracing::error!(%error, "a durable write failed; the request was not applied");
                Rejection::server_error(
                    "The server could not store the request durably, so it was not applied. Retry it.",
                )
            })
    }

    /// Runs a read of the ledger: the in-memory one, or one loaded with the rows of `scope`.
    async fn read<T>(
        &self,
        scope: Scope,
        read: impl FnOnce(&Ledger, u64) -> Answer<T>,
    ) -> Answer<T> {
        match &self.shared {
            Some(shared) => shared.records.read(&scope, shared.now(), read).await,
            None => read(&*self.ledger.lock().await, self.clock.now()),
        }
    }

    /// Before an object is written to shared storage: records the intent, so that the
    /// object is collected if this instance dies before recording it.
    async fn intend(&self, key: impl FnOnce() -> String) -> Answer<()> {
        match &self.shared {
            Some(shared) => shared.records.intend(&key(), shared.now()).await,
            None => Ok(()),
        }
    }

    /// [`Service::record_lock`], waited for at most [`RECORD_LOCK_WAIT`]: then 503 with
    /// `Retry-After` (the Upload is busy: a holder elsewhere froze, or many requests for it
    /// arrived at once).
    async fn bounded_record_lock(&self, key: &str) -> Answer<OwnedMutexGuard<()>> {
        tokio::time::timeout(RECORD_LOCK_WAIT, self.record_lock(key))
            .await
            .map_err(|_| {
                tracing::warn!(record = %key, "gave up waiting for a busy record");
                Rejection::unavailable(
                    "Another request for this object is still being applied. Retry the request.",
                )
            })
    }

    /// The lock of one Upload or File: held from planning a mutation of it to applying it, so
    /// mutations of one record never interleave while those of different records run (and
    /// fsync) side by side.
    async fn record_lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .record_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only records with a mutation in flight keep an entry.
            locks.retain(|_, lock| lock.strong_count() > 0);
            if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
                lock
            } else {
                let lock = Arc::new(Mutex::new(()));
                locks.insert(key.to_owned(), Arc::downgrade(&lock));
                lock
            }
        };
        lock.lock_owned().await
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

/// The record a sweep change removes: its lock's key, and the Upload whose Parts go.
fn swept_record(change: &Change) -> Option<(String, Option<UploadId>)> {
    match change.steps().first()? {
        Step::RemoveFile(id) => Some((id.to_string(), None)),
        // An expired Upload marked before its Parts go.
        Step::SaveUpload(record) => Some((record.id.to_string(), Some(record.id.clone()))),
        Step::RemoveParts { upload_id, .. } | Step::RemoveUpload(upload_id) => {
            Some((upload_id.to_string(), Some(upload_id.clone())))
        }
        _ => None,
    }
}

/// Applies a persisted change; a refusal means the disk and the ledger may disagree (a
/// 500: restarting reloads the disk's truth).
fn apply(ledger: &mut Ledger, change: Change) -> Answer<()> {
    ledger.apply(change).map_err(|error| {
        tracing::error!(%error, "the ledger refused a persisted change");
        Rejection::server_error("The server's state changed during the request. Retry it.")
    })
}

/// Makes a change's steps durable, in order.
fn persist(store: &dyn Store, readers: &Readers, steps: &[Step]) -> io::Result<()> {
    for step in steps {
        match step {
            Step::SaveUpload(record) => store.save_upload(&record.id, &to_json(record)?)?,
            Step::AddPart { upload_id, part } => store.append_part(upload_id, &to_json(part)?)?,
            Step::SaveFile(record) => store.save_file(record.id(), &to_json(record)?)?,
            Step::RemoveFile(id) => store.remove_file(id)?,
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => {
                // Bytes no record needs any more (the record saved or removed before says
                // so): the change is committed, and a failure here only leaves garbage that
                // recovery or a later sweep removes. Failing the request would answer "not
                // applied" for a change a restart sees as applied.
                if let Err(error) = readers.remove_parts(upload_id, part_ids) {
                    tracing::warn!(%error, %upload_id, "could not remove Parts no record needs; left for recovery");
                }
            }
            Step::RemoveUpload(id) => store.remove_upload(id)?,
        }
    }
    Ok(())
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

fn to_json(value: &impl Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn json(value: &impl Serialize) -> Answer<Response<ResponseBody>> {
    let body =
        to_json(value).map_err(|_| Rejection::server_error("could not encode the response"))?;
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
