//! Request handling: authenticate, route, ask the ledger, store bytes, answer.
//!
//! Every decision (status codes, error bodies, state transitions) is the ledger's
//! ([`uploads_core::ledger`]); this module moves bytes between sockets and the [`Store`] and
//! keeps the ledger's persistence contract: a mutation is planned, its steps are made durable
//! in order, and only then applied and answered. A failed durable write is a 500 and the
//! mutation is not applied: the client retries, it is never told that a write worked.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use uploads_core::api::parse_list_files_query;
use uploads_core::auth::ApiKeys;
use uploads_core::ledger::{
    Change, CompletePlan, FileRecord, Ledger, NewFile, Owner, PartRecord, Planned, RandomIds,
    RecordState, Step, UploadRecord,
};
use uploads_core::limits::{FieldError, Limits, MIB};
use uploads_core::multipart::{
    DecoderLimits, Event, MultipartDecoder, MultipartError, boundary_from_content_type,
};
use uploads_core::rejection::Rejection;
use uploads_core::route::{Route, allowed_methods};
use uploads_core::types::{ExpiresAfter, ExpiresAfterAnchor, PartId, UploadId};

use crate::body::{BodyError, BodyPace, BodyReader, ResponseBody, channel_body, full};
use crate::clock::Clock;
use crate::entropy::Entropy;
use crate::md5_ahead::Md5Ahead;
use crate::objects::{ObjectBytes, file_key, part_key};
use crate::pg::{MutationError, PgRecords, Scope};
use crate::readers::{ReadGuard, Readers};
use crate::store::{ContentSource, DataSink, Store};

/// The largest File `POST /files` takes in one request, as OpenAI documents.
pub const MAX_DIRECT_FILE_BYTES: u64 = 512 * MIB;
/// The largest text field of a form (`purpose`, `expires_after[...]`).
const MAX_TEXT_FIELD_BYTES: usize = 1024;
/// Chunks of File content read from disk per step of a download.
const DOWNLOAD_CHUNK: usize = 256 * 1024;
/// Records swept between two yields to the runtime.
const SWEEP_BATCH: usize = 32;
/// Bytes of a Part gathered in memory before one blocking task writes them.
const WRITE_BATCH: usize = 1 << 20;

/// The settings of a [`Service`].
pub(crate) struct ServiceConfig {
    pub keys: ApiKeys,
    pub limits: Limits,
    pub max_json_bytes: usize,
    pub body_pace: BodyPace,
}

/// Counters a test (or an operator) can read: what reached the Part handler.
#[derive(Debug, Default)]
pub struct ServerStats {
    part_requests: AtomicU64,
    parts_stored: AtomicU64,
    parts_in_flight: AtomicU64,
    peak_parts_in_flight: AtomicU64,
    parts_reread_for_md5: AtomicU64,
}

impl ServerStats {
    /// Add-part requests that reached the handler (stored or not).
    pub fn part_requests(&self) -> u64 {
        self.part_requests.load(Ordering::SeqCst)
    }

    /// Parts stored and recorded.
    pub fn parts_stored(&self) -> u64 {
        self.parts_stored.load(Ordering::SeqCst)
    }

    /// Add-part requests being handled now.
    pub fn parts_in_flight(&self) -> u64 {
        self.parts_in_flight.load(Ordering::SeqCst)
    }

    /// The most add-part requests that were being handled at the same time.
    pub fn peak_parts_in_flight(&self) -> u64 {
        self.peak_parts_in_flight.load(Ordering::SeqCst)
    }

    /// Parts that completes with an md5 had to read again, because they had not been hashed
    /// ahead in the order the complete listed (0 when Parts arrive in file order).
    pub fn parts_reread_for_md5(&self) -> u64 {
        self.parts_reread_for_md5.load(Ordering::SeqCst)
    }

    pub(crate) fn count_reread(&self, parts: usize) {
        self.parts_reread_for_md5
            .fetch_add(parts as u64, Ordering::SeqCst);
    }
}

/// Counts a Part request in flight for as long as it lives.
struct InFlight<'a>(&'a ServerStats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a ServerStats) -> Self {
        stats.part_requests.fetch_add(1, Ordering::SeqCst);
        let now = stats.parts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_parts_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.parts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
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
    md5_ahead: Arc<Md5Ahead>,
    /// Downloads in flight, which Part removals wait for.
    readers: Arc<Readers>,
    /// The scale-out backend: records in PostgreSQL (the `ledger` above stays empty) and
    /// bytes in object storage (the `store`).
    shared: Option<Shared>,
}

/// The records and bytes that several instances share.
pub(crate) struct Shared {
    /// The ledger's records.
    pub records: PgRecords,
    /// The bytes (also the service's `store`).
    pub objects: Arc<ObjectBytes>,
}

/// Object deletions one sweep tick runs at most (the rest wait for the next tick).
const COLLECT_BATCH: i64 = 500;

/// A request refused on its way in, or a failure answered as 500.
type Answer<T> = Result<T, Rejection>;

/// The ids the ledger mints: random, from the server's entropy.
type Ids = RandomIds<Box<dyn FnMut(&mut [u8]) + Send>>;

/// Why [`Service::mutate`] changed nothing.
enum Refused {
    /// The ledger refused the request: nothing was persisted.
    Planning(Rejection),
    /// Persisting or applying failed (500).
    Commit(Rejection),
}

impl From<Refused> for Rejection {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Planning(rejection) | Refused::Commit(rejection) => rejection,
        }
    }
}

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
        let md5_ahead = Arc::new(Md5Ahead::new(Arc::clone(&store), Arc::clone(&stats)));
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
            return sweep_shared(shared, self.clock.now()).await;
        }
        let changes = self.ledger.lock().await.sweep_each(self.clock.now());
        for (done, change) in changes.into_iter().enumerate() {
            if done > 0 && done % SWEEP_BATCH == 0 {
                tokio::task::yield_now().await;
            }
            let Some((key, upload)) = swept_record(&change) else {
                continue;
            };
            let _record = self.record_lock(&key).await;
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
                json(
                    &self
                        .mutate(Scope::Nothing, move |ledger, now, ids| {
                            ledger.create_upload(&owner, &body, now, ids)
                        })
                        .await?,
                )
            }
            Route::AddUploadPart(upload_id) => self.add_part(&owner, &upload_id, request).await,
            Route::CompleteUpload(upload_id) => {
                let body = self.json_body(request).await?;
                self.complete(&owner, &upload_id, &body).await
            }
            Route::CancelUpload(upload_id) => {
                let id = upload_id.clone();
                let cancelled = self
                    .mutate(Scope::Upload(upload_id.clone()), move |ledger, now, _| {
                        ledger.cancel_upload(&owner, &id, now)
                    })
                    .await?;
                self.md5_ahead.forget(&upload_id);
                json(&cancelled)
            }
            Route::ListFiles => {
                let query = parse_list_files_query(request.uri().query().unwrap_or(""))?;
                let scope = Scope::List {
                    owner: owner.as_str().to_owned(),
                    query: query.clone(),
                };
                json(
                    &self
                        .read(scope, |ledger, now| ledger.list_files(&owner, &query, now))
                        .await?,
                )
            }
            Route::RetrieveFile(file_id) => json(
                &self
                    .read(Scope::File(file_id.clone()), |ledger, now| {
                        ledger.retrieve_file(&owner, &file_id, now)
                    })
                    .await?,
            ),
            Route::DeleteFile(file_id) => json(
                &self
                    .mutate(Scope::File(file_id.clone()), move |ledger, now, _| {
                        ledger.delete_file(&owner, &file_id, now)
                    })
                    .await?,
            ),
            Route::DownloadFile(file_id) => {
                // The read is registered while the ledger is held: a delete planned after
                // this leaves the Parts in place until the download ends.
                let (record, guard) = self
                    .read(Scope::File(file_id.clone()), |ledger, now| {
                        let record = ledger.file_manifest(&owner, &file_id, now)?.clone();
                        let guard = record
                            .upload_id
                            .as_ref()
                            .map(|upload| self.readers.enter(upload));
                        Ok((record, guard))
                    })
                    .await?;
                self.download(&record, guard).await
            }
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
    async fn mutate<T, F>(self: &Arc<Self>, scope: Scope, plan: F) -> Result<T, Refused>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static,
    {
        let service = Arc::clone(self);
        let record = match &scope {
            Scope::Upload(id) => Some(id.to_string()),
            Scope::File(id) => Some(id.to_string()),
            Scope::Nothing | Scope::List { .. } => None,
        };
        tokio::spawn(async move {
            if let Some(shared) = &service.shared {
                // One transaction that locks the rows it reads: the database keeps
                // mutations of one record apart, on every instance.
                let now = service.clock.now();
                let mut ids = service.ids();
                let committed = shared
                    .records
                    .mutate(&scope, now, |ledger| plan(ledger, now, &mut ids))
                    .await
                    .map_err(|error| match error {
                        MutationError::Refused(rejection) => Refused::Planning(rejection),
                        MutationError::Failed(rejection) => Refused::Commit(rejection),
                    })?;
                if committed.doomed {
                    // The bytes no record needs go before the answer, as on the directory
                    // store; a failure (logged) leaves them to the sweep.
                    let _ = collect_objects(shared, now, false).await;
                }
                return Ok(committed.response);
            }
            let _record = match &record {
                Some(record) => Some(service.record_lock(record).await),
                None => None,
            };
            let planned = {
                let ledger = service.ledger.lock().await;
                plan(&ledger, service.clock.now(), &mut service.ids()).map_err(Refused::Planning)?
            };
            if let Some(change) = planned.change {
                service.persist(&change).await.map_err(Refused::Commit)?;
                apply(&mut *service.ledger.lock().await, change).map_err(Refused::Commit)?;
            }
            Ok(planned.response)
        })
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "a mutation's task failed");
            Err(Refused::Commit(Rejection::server_error(
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
        let now = self.clock.now();
        match &self.shared {
            Some(shared) => {
                shared
                    .records
                    .read(&scope, now, |ledger| read(ledger, now))
                    .await
            }
            None => read(&*self.ledger.lock().await, now),
        }
    }

    /// Before an object is written to shared storage: records the intent, so that the
    /// object is collected if this instance dies before recording it.
    async fn intend(&self, key: impl FnOnce() -> String) -> Answer<()> {
        match &self.shared {
            Some(shared) => shared.records.intend(&key(), self.clock.now()).await,
            None => Ok(()),
        }
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
        BodyReader::new(request.into_body(), self.config.body_pace)
            .collect(limit)
            .await
            .map_err(|error| body_rejection(&error))
    }

    async fn add_part<B>(
        self: &Arc<Self>,
        owner: &Owner,
        upload_id: &UploadId,
        request: Request<B>,
    ) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let _in_flight = InFlight::enter(&self.stats);
        let slot = self
            .read(Scope::Upload(upload_id.clone()), |ledger, now| {
                ledger.check_add_part(owner, upload_id, now, &mut self.ids())
            })
            .await?;
        let max_part_bytes = self.config.limits.max_part_bytes;
        let store = Arc::clone(&self.store);
        let (upload, part) = (slot.upload_id().clone(), slot.part_id().clone());
        // Failed unless committed below: then the md5 chain skips this Part. Shared storage
        // hashes on complete: the Parts of one Upload arrive on many instances.
        let hash_slot = self
            .shared
            .is_none()
            .then(|| self.md5_ahead.started(&upload, &part));
        self.intend(|| part_key(&upload, &part)).await?;
        let mut form = Self::form(&request, "data", max_part_bytes)?;
        let mut reader = BodyReader::new(request.into_body(), self.config.body_pace);
        let mut data: Option<PartWriter> = None;
        while let Some(event) = form.next(&mut reader).await? {
            match event {
                FormEvent::Start(name) if name == "data" && data.is_none() => {
                    let (upload, part) = (upload.clone(), part.clone());
                    let store = Arc::clone(&store);
                    data = Some(PartWriter::start(move || store.begin_part(&upload, &part)).await?);
                }
                FormEvent::Start(name) => {
                    return Err(Rejection::from(FieldError::unexpected(&name)));
                }
                FormEvent::Data(bytes) => match &mut data {
                    Some(writer) => writer.write(bytes).await?,
                    None => return Err(Rejection::from(FieldError::unexpected(""))),
                },
            }
        }
        let Some(writer) = data else {
            return Err(Rejection::invalid(
                Some("data"),
                "'data' is a required property",
            ));
        };
        let part_bytes = writer.commit().await?;
        let owner = owner.clone();
        let planned = self
            .mutate(Scope::Upload(upload.clone()), move |ledger, now, _| {
                ledger.add_part(&owner, &slot, part_bytes, now)
            })
            .await;
        let part = match planned {
            Ok(part) => part,
            Err(Refused::Planning(rejection)) => {
                // The Upload moved on while the bytes streamed: they are nobody's.
                let store = Arc::clone(&self.store);
                let _ =
                    tokio::task::spawn_blocking(move || store.remove_parts(&upload, &[part])).await;
                return Err(rejection);
            }
            Err(Refused::Commit(rejection)) => return Err(rejection),
        };
        self.stats.parts_stored.fetch_add(1, Ordering::SeqCst);
        if let Some(hash_slot) = hash_slot {
            hash_slot.committed();
        }
        json(&part)
    }

    async fn complete(
        self: &Arc<Self>,
        owner: &Owner,
        upload_id: &UploadId,
        body: &[u8],
    ) -> Answer<Response<ResponseBody>> {
        let plan = self
            .read(Scope::Upload(upload_id.clone()), |ledger, now| {
                ledger.plan_complete(owner, upload_id, body, now)
            })
            .await?;
        let verification = match plan {
            CompletePlan::Replay(upload) => return json(&upload),
            CompletePlan::Verify(verification) => verification,
        };
        // The md5 is computed outside the lock: it reads every listed byte, and
        // `finish_complete` checks everything again.
        let md5 = if verification.expected_md5().is_some() {
            let listed = verification
                .parts()
                .iter()
                .map(|part| part.id.clone())
                .collect();
            match self.md5_ahead.digest(upload_id, listed).await {
                Ok(digest) => Some(digest),
                Err(error) => {
                    // A cancel or another complete that won the race removed the Parts: the
                    // loser gets the answer it would get had it arrived second. The winner
                    // holds the Upload's lock until its change is applied: wait for it.
                    let _applied = self.record_lock(upload_id.as_str()).await;
                    let plan = self
                        .read(Scope::Upload(upload_id.clone()), |ledger, now| {
                            ledger.plan_complete(owner, upload_id, body, now)
                        })
                        .await?;
                    if let CompletePlan::Replay(upload) = plan {
                        return json(&upload);
                    }
                    tracing::error!(%error, "reading parts for the md5 failed");
                    return Err(Rejection::server_error(
                        "The server could not read the Upload's parts.",
                    ));
                }
            }
        } else {
            None
        };
        let owner = owner.clone();
        let completed = self
            .mutate(Scope::Upload(upload_id.clone()), move |ledger, now, ids| {
                ledger.finish_complete(&owner, &verification, md5, now, ids)
            })
            .await?;
        self.md5_ahead.forget(upload_id);
        json(&completed)
    }

    /// Streams a File's bytes. The content is opened before answering, so bytes that cannot
    /// be read are a 500, not a 200 cut short.
    async fn download(
        &self,
        record: &FileRecord,
        guard: Option<ReadGuard>,
    ) -> Answer<Response<ResponseBody>> {
        let source = match &record.upload_id {
            Some(upload) => ContentSource::Parts {
                upload: upload.clone(),
                parts: record.part_ids.clone(),
            },
            None => ContentSource::Direct(record.file.id.clone()),
        };
        let store = Arc::clone(&self.store);
        let reader = tokio::task::spawn_blocking(move || store.open(&source))
            .await
            .map_err(io::Error::other)
            .and_then(|reader| reader)
            .map_err(|error| {
                tracing::error!(%error, file = %record.file.id, "a File's bytes cannot be read");
                Rejection::server_error("The server could not read the File's content.")
            })?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            stream_content(reader, sender).await;
            drop(guard);
        });
        let mut response = Response::new(channel_body(receiver));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(record.file.bytes));
        Ok(response)
    }

    async fn create_file<B>(
        self: &Arc<Self>,
        owner: &Owner,
        request: Request<B>,
    ) -> Answer<Response<ResponseBody>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let file_id = self
            .read(Scope::Nothing, |ledger, _| {
                ledger.new_file_id(&mut self.ids())
            })
            .await?;
        self.intend(|| file_key(&file_id)).await?;
        let mut form = Self::form(&request, "file", MAX_DIRECT_FILE_BYTES)?;
        let mut reader = BodyReader::new(request.into_body(), self.config.body_pace);
        let mut fields = TextFields::default();
        let mut data: Option<(String, PartWriter)> = None;
        let mut current = String::new();
        while let Some(event) = form.next(&mut reader).await? {
            match event {
                FormEvent::Start(name) if name == "file" && data.is_none() => {
                    let filename = form.filename.take().unwrap_or_default();
                    let (store, file_id) = (Arc::clone(&self.store), file_id.clone());
                    data = Some((
                        filename,
                        PartWriter::start(move || store.begin_file_data(&file_id)).await?,
                    ));
                    current = name;
                }
                FormEvent::Start(name) if TextFields::accepts(&name) => current = name,
                FormEvent::Start(name) => {
                    return Err(Rejection::from(FieldError::unexpected(&name)));
                }
                FormEvent::Data(bytes) if current == "file" => {
                    if let Some((_, writer)) = &mut data {
                        writer.write(bytes).await?;
                    }
                }
                FormEvent::Data(bytes) => fields.push(&current, &bytes)?,
            }
        }
        let Some((filename, writer)) = data else {
            return Err(Rejection::invalid(
                Some("file"),
                "'file' is a required property",
            ));
        };
        let bytes = writer.commit().await?;
        let (owner, id) = (owner.clone(), file_id.clone());
        let planned = self
            .mutate(Scope::Nothing, move |ledger, now, _| {
                let new = fields.into_new_file(filename, bytes)?;
                ledger.create_file(&owner, &id, new, now)
            })
            .await;
        match planned {
            Ok(file) => json(&file),
            Err(Refused::Planning(rejection)) => {
                // Refused after the bytes were stored: they are nobody's.
                let store = Arc::clone(&self.store);
                let _ = tokio::task::spawn_blocking(move || store.remove_file(&file_id)).await;
                Err(rejection)
            }
            Err(Refused::Commit(rejection)) => Err(rejection),
        }
    }

    /// A multipart decoder for the request, or 400 when it is not `multipart/form-data`; 413
    /// on `field` when the declared `Content-Length` is more than such a form can be, before
    /// the body is read (so `Expect: 100-continue` gets its answer, not `100 Continue`).
    fn form<B>(request: &Request<B>, field: &str, max_field_bytes: u64) -> Answer<Form> {
        let limits = DecoderLimits::default().with_max_field_bytes(max_field_bytes);
        let ceiling = limits.max_body_bytes(max_field_bytes);
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&declared| declared > ceiling) {
            return Err(Rejection::too_large(
                Some(field),
                format!(
                    "The request body is {declared} bytes; a form whose '{field}' holds at \
                     most {max_field_bytes} bytes is at most {ceiling} bytes."
                ),
            ));
        }
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let boundary = boundary_from_content_type(content_type)
            .map_err(|error| multipart_rejection(&error))?;
        let decoder = MultipartDecoder::new(&boundary, limits)
            .map_err(|error| multipart_rejection(&error))?;
        Ok(Form {
            decoder,
            filename: None,
            finished: false,
        })
    }
}

/// A multipart body being read: the decoder plus the socket it is fed from.
struct Form {
    decoder: MultipartDecoder,
    /// The `filename` of the field that started last.
    filename: Option<String>,
    finished: bool,
}

/// What a form yields to a handler.
enum FormEvent {
    /// A field starts (its name).
    Start(String),
    /// Bytes of the current field.
    Data(Bytes),
}

impl Form {
    /// The next event, reading the body as needed; `None` once the closing boundary was seen
    /// and the body ended.
    async fn next<B>(&mut self, reader: &mut BodyReader<B>) -> Answer<Option<FormEvent>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    {
        loop {
            match self
                .decoder
                .poll_event()
                .map_err(|error| multipart_rejection(&error))?
            {
                Some(Event::FieldStart(headers)) => {
                    self.filename = headers.filename;
                    return Ok(Some(FormEvent::Start(headers.name)));
                }
                Some(Event::Data(bytes)) => return Ok(Some(FormEvent::Data(bytes))),
                Some(Event::End) => self.finished = true,
                Some(Event::FieldEnd) => {}
                None => {
                    let chunk = reader
                        .next_chunk()
                        .await
                        .map_err(|error| body_rejection(&error))?;
                    let Some(chunk) = chunk else {
                        self.decoder
                            .finish()
                            .map_err(|error| multipart_rejection(&error))?;
                        return Ok(None);
                    };
                    self.decoder.feed(chunk);
                }
            }
            if self.finished {
                // The epilogue after the closing boundary is read and ignored.
                while reader
                    .next_chunk()
                    .await
                    .map_err(|error| body_rejection(&error))?
                    .is_some()
                {}
                return Ok(None);
            }
        }
    }
}

/// The text fields of `POST /files`.
#[derive(Default)]
struct TextFields {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

impl TextFields {
    const NAMES: [&'static str; 3] = ["purpose", "expires_after[anchor]", "expires_after[seconds]"];

    fn accepts(name: &str) -> bool {
        Self::NAMES.contains(&name)
    }

    fn push(&mut self, name: &str, bytes: &[u8]) -> Answer<()> {
        let field = match name {
            "purpose" => &mut self.purpose,
            "expires_after[anchor]" => &mut self.anchor,
            _ => &mut self.seconds,
        };
        let value = field.get_or_insert_with(String::new);
        if value.len() + bytes.len() > MAX_TEXT_FIELD_BYTES {
            return Err(Rejection::invalid(
                Some(name),
                format!("'{name}' is too long"),
            ));
        }
        value.push_str(&String::from_utf8_lossy(bytes));
        Ok(())
    }

    /// The File the form describes, once its data is stored.
    fn into_new_file(self, filename: String, bytes: u64) -> Answer<NewFile> {
        let expires_after = self.expires_after()?;
        let purpose = self.purpose.ok_or_else(|| {
            Rejection::invalid(Some("purpose"), "'purpose' is a required property")
        })?;
        Ok(NewFile {
            purpose,
            filename,
            bytes,
            expires_after,
        })
    }

    fn expires_after(&self) -> Answer<Option<ExpiresAfter>> {
        match (&self.anchor, &self.seconds) {
            (None, None) => Ok(None),
            (Some(anchor), Some(seconds)) => {
                let seconds = seconds.trim().parse::<u64>().map_err(|_| {
                    Rejection::invalid(
                        Some("expires_after.seconds"),
                        format!("'{seconds}' is not of type 'integer' - 'expires_after.seconds'"),
                    )
                })?;
                Ok(Some(ExpiresAfter {
                    anchor: ExpiresAfterAnchor::from_wire(anchor.trim()),
                    seconds,
                }))
            }
            (None, Some(_)) => Err(Rejection::invalid(
                Some("expires_after.anchor"),
                "'anchor' is a required property - 'expires_after'",
            )),
            (Some(_), None) => Err(Rejection::invalid(
                Some("expires_after.seconds"),
                "'seconds' is a required property - 'expires_after'",
            )),
        }
    }
}

/// Bytes of one Part (or `POST /files` File) on their way to disk. Arriving chunks gather in
/// memory (at most [`WRITE_BATCH`] bytes) and each batch is written by one short blocking
/// task: a request holds a blocking thread only while its bytes are being written, never
/// while its client is slow, so slow bodies cannot exhaust the pool other requests need.
struct PartWriter {
    /// `None` once a write failed or the sink was handed to a blocking task that never
    /// returned it.
    sink: Option<Box<dyn DataSink>>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

impl PartWriter {
    async fn start(
        open: impl FnOnce() -> io::Result<Box<dyn DataSink>> + Send + 'static,
    ) -> Answer<Self> {
        let sink = blocking(open).await?;
        Ok(Self {
            sink: Some(sink),
            pending: Vec::new(),
            pending_bytes: 0,
        })
    }

    async fn write(&mut self, bytes: Bytes) -> Answer<()> {
        self.pending_bytes += bytes.len();
        self.pending.push(bytes);
        if self.pending_bytes >= WRITE_BATCH {
            let sink = self.take_sink()?;
            let pending = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.sink = Some(
                blocking(move || {
                    let mut sink = sink;
                    write_batch(&mut *sink, &pending)?;
                    Ok(sink)
                })
                .await?,
            );
        }
        Ok(())
    }

    async fn commit(mut self) -> Answer<u64> {
        let mut sink = self.take_sink()?;
        let pending = std::mem::take(&mut self.pending);
        blocking(move || {
            write_batch(&mut *sink, &pending)?;
            sink.commit()
        })
        .await
    }

    fn take_sink(&mut self) -> Answer<Box<dyn DataSink>> {
        self.sink
            .take()
            .ok_or_else(|| storage_failure(&io::Error::other("the writer failed earlier")))
    }
}

/// Writes gathered chunks in one system call when there are several.
fn write_batch(sink: &mut dyn DataSink, chunks: &[Bytes]) -> io::Result<()> {
    match chunks {
        [] => Ok(()),
        [one] => sink.write(one),
        many => sink.write(&many.concat()),
    }
}

/// Runs one bounded piece of disk work on a blocking thread; a failure is a 500 that says
/// nothing was stored. If the request is dropped meanwhile, the task finishes on its own and
/// drops what it holds (an uncommitted sink removes its bytes).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Answer<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(storage_failure(&error)),
        Err(error) => Err(storage_failure(&io::Error::other(error))),
    }
}

fn storage_failure(error: &io::Error) -> Rejection {
    tracing::error!(%error, "storing bytes failed");
    Rejection::server_error("The server could not store the data durably. Retry the request.")
}

/// The record a sweep change removes: its lock's key, and the Upload whose Parts go.
fn swept_record(change: &Change) -> Option<(String, Option<UploadId>)> {
    match change.steps().first()? {
        Step::RemoveFile(id) => Some((id.to_string(), None)),
        Step::RemoveParts { upload_id, .. } | Step::RemoveUpload(upload_id) => {
            Some((upload_id.to_string(), Some(upload_id.clone())))
        }
        _ => None,
    }
}

/// What makes the scale-out backend unusable now, as the end of a sentence (`" The
/// database is unreachable."`), or `None` while both the database and the bucket answer.
async fn shared_health(shared: &Shared) -> Option<String> {
    let (database, bucket) = tokio::join!(shared.records.ping(), shared.objects.check());
    let mut problems = Vec::new();
    if !database {
        problems.push("the database is unreachable".to_owned());
    }
    if let Err(error) = bucket {
        problems.push(error.to_string());
    }
    if problems.is_empty() {
        return None;
    }
    let problems = problems.join("; ");
    tracing::error!(%problems, "health check: the shared backend is not usable");
    Some(format!(" {problems}."))
}

/// One sweep of shared records: claims batches (another instance skips what this one holds)
/// until nothing is due, then deletes the objects no record needs any more.
async fn sweep_shared(shared: &Shared, now: u64) -> Answer<()> {
    while shared.records.sweep(now).await? > 0 {}
    collect_objects(shared, now, true).await
}

/// Deletes the objects due for deletion in batches claimed with `SKIP LOCKED` (one batch
/// unless `all`).
async fn collect_objects(shared: &Shared, now: u64, all: bool) -> Answer<()> {
    loop {
        let deleted = shared
            .records
            .collect_objects(now, COLLECT_BATCH, |key| {
                let objects = Arc::clone(&shared.objects);
                async move { objects.delete(&key).await }
            })
            .await?;
        if !all || deleted < usize::try_from(COLLECT_BATCH).unwrap_or(usize::MAX) {
            return Ok(());
        }
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

fn to_json(value: &impl Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// Reads every record back at startup and removes Part bytes that no record needs: Parts
/// stored by a request that died before its record was saved, and Parts a crash kept from
/// being removed after a complete or cancel.
fn recover_records(store: &dyn Store) -> io::Result<(Vec<UploadRecord>, Vec<FileRecord>)> {
    let state = store.load()?;
    let mut uploads = Vec::with_capacity(state.uploads.len());
    for stored in state.uploads {
        let mut record: UploadRecord = match serde_json::from_slice(&stored.state) {
            Ok(record) => record,
            Err(error) => {
                // One unreadable record must not keep everything else from being served.
                let moved_to = store.quarantine_upload(&stored.id)?;
                tracing::error!(upload = %stored.id, %error, %moved_to, "an unreadable Upload state was quarantined");
                continue;
            }
        };
        // The Parts added since the state file was saved.
        for line in stored
            .part_log
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
        {
            match serde_json::from_slice::<PartRecord>(line) {
                Ok(part) if record.part(&part.id).is_none() => record.parts.push(part),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, upload = %record.id, "skipping an unreadable Part record");
                }
            }
        }
        let needed: Vec<&PartId> = match &record.state {
            RecordState::Pending => record.parts.iter().map(|part| &part.id).collect(),
            RecordState::Completed(completion) => completion.part_ids.iter().collect(),
            RecordState::Cancelled { .. } => Vec::new(),
        };
        let garbage: Vec<PartId> = stored
            .parts
            .into_iter()
            .map(|part| part.id)
            .filter(|id| !needed.contains(&id))
            .collect();
        if !garbage.is_empty()
            && let Err(error) = store.remove_parts(&record.id, &garbage)
        {
            tracing::warn!(%error, upload = %record.id, "could not remove Parts no record needs");
        }
        uploads.push(record);
    }
    let mut files = Vec::with_capacity(state.files.len());
    for stored in state.files {
        match serde_json::from_slice::<FileRecord>(&stored.record) {
            Ok(record) => files.push(record),
            Err(error) => {
                let moved_to = store.quarantine_file(&stored.id)?;
                tracing::error!(file = %stored.id, %error, %moved_to, "an unreadable File record was quarantined");
            }
        }
    }
    Ok((uploads, files))
}

/// Reads a File's bytes into the response channel, one chunk per blocking task: a download
/// whose client reads slowly waits here, on the runtime, not on a blocking thread.
async fn stream_content(reader: Box<dyn Read + Send>, sender: mpsc::Sender<io::Result<Bytes>>) {
    let mut reader = reader;
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0; DOWNLOAD_CHUNK];
            let read = reader.read(&mut buffer).map(|n| {
                buffer.truncate(n);
                Bytes::from(buffer)
            });
            (reader, read)
        })
        .await;
        match read {
            Ok((back, Ok(bytes))) if !bytes.is_empty() => {
                reader = back;
                if sender.send(Ok(bytes)).await.is_err() {
                    return; // the client went away
                }
            }
            Ok((_, Ok(_))) => return, // the end
            Ok((_, Err(error))) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
            Err(error) => {
                let _ = sender.send(Err(io::Error::other(error))).await;
                return;
            }
        }
    }
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

fn rejection_response(rejection: &Rejection) -> Response<ResponseBody> {
    let mut response = Response::new(full(rejection.body_json()));
    *response.status_mut() = rejection.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

fn multipart_rejection(error: &MultipartError) -> Rejection {
    match error {
        MultipartError::FieldTooLarge { name, limit } => Rejection::too_large(
            Some(name),
            format!("'{name}' is larger than the maximum of {limit} bytes."),
        ),
        other => Rejection::invalid(None, format!("Invalid multipart/form-data body: {other}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_build_the_expiry_or_name_what_is_missing() {
        let mut fields = TextFields::default();
        assert_eq!(fields.expires_after(), Ok(None));
        fields.push("expires_after[seconds]", b"3600").unwrap();
        assert_eq!(
            fields.expires_after().unwrap_err().param(),
            Some("expires_after.anchor")
        );
        fields.push("expires_after[anchor]", b"created_at").unwrap();
        assert_eq!(
            fields.expires_after(),
            Ok(Some(ExpiresAfter::after_creation(3600)))
        );
        let mut bad = TextFields::default();
        bad.push("expires_after[anchor]", b"created_at").unwrap();
        bad.push("expires_after[seconds]", b"soon").unwrap();
        assert_eq!(
            bad.expires_after().unwrap_err().param(),
            Some("expires_after.seconds")
        );
        let long = vec![b'x'; MAX_TEXT_FIELD_BYTES + 1];
        assert!(TextFields::default().push("purpose", &long).is_err());
    }
}
