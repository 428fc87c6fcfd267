//! Bytes in object storage (S3, MinIO, R2, GCS, Azure, or `file://`), through the
//! `object_store` crate: the byte side of the [`Store`] seam for the scale-out backend,
//! whose records live in PostgreSQL (the `pg` module).
//!
//! One object per Part (`<prefix>/uploads/<upload id>/<part id>`) and per `POST /files`
//! File (`<prefix>/files/<file id>`). A Part is streamed: up to 5 MiB are
//! gathered and sent with one `put`; past that, a multipart upload sends 5 MiB
//! pieces, so memory per Part stays bounded whatever its size, and all sinks together hold
//! at most the store's memory budget ([`DEFAULT_MEMORY_BUDGET`]): past it, gathered bytes
//! wait in temp files. An object appears only when its sink commits; an abandoned sink
//! aborts its multipart upload, and [`ObjectBytes::abort_stale_multipart`] those of a
//! process that died. Reading streams the objects in order, with the GETs of the next few
//! objects started ahead.
//!
//! Every bucket call is bounded: a bucket that stops answering makes the call fail within
//! seconds ([`REQUEST_TIMEOUT`], [`CHECK_TIMEOUT`]), never hang.
//!
//! The [`Store`] methods block: the service calls them on blocking threads, and they wait
//! on the runtime's handle there.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::fmt::Display;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload,
    RetryConfig,
};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use uploads_core::types::{FileId, PartId, UploadId};

use crate::store::{ContentSource, DataSink, Store, StoredState};

/// Bytes held before a Part's sink switches from one `put` to a multipart upload (S3's
/// smallest multipart piece).
const SMALL_OBJECT: usize = 5 * 1024 * 1024;
/// Multipart pieces of one Part in flight at once.
const PIECES_IN_FLIGHT: usize = 2;
/// The default cap on the bytes object sinks hold in memory at once, server-wide: 300
/// stalled Parts hold at most this much (the rest of their bytes wait in temp files).
pub const DEFAULT_MEMORY_BUDGET: usize = 64 * 1024 * 1024;
/// The smallest memory budget: one piece gathered and one being sent.
pub const MIN_MEMORY_BUDGET: usize = 2 * SMALL_OBJECT;
/// How long one bucket request may go unanswered by default (a HEAD, a DELETE, the start of
/// a GET, a pause inside a body being read) before it fails; see
/// [`ObjectBytes::with_request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`ObjectBytes::check`] (`/healthz`, startup) waits for the bucket.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The slowest rate a request that sends bytes (a small object, a multipart piece) is given
/// time for, on top of the request timeout: a 5 MiB piece gets 20 s more.
const MIN_SEND_RATE: u64 = 256 * 1024;
/// Objects whose GET starts before the reader reaches them: a File of many small Parts is
/// read at the bucket's latency divided by this, not at one round trip per Part.
const READ_AHEAD: usize = 8;
/// Requests in flight at once in [`ObjectBytes::missing`] (HEADs) and
/// [`ObjectBytes::abort_stale_multipart`] (aborts).
const CALLS_IN_FLIGHT: usize = 16;

/// The key of a Part's object, relative to the store's prefix.
pub(crate) fn part_key(upload: &UploadId, part: &PartId) -> String {
    format!("uploads/{upload}/{part}")
}

/// The key of a `POST /files` File's object, relative to the store's prefix.
pub(crate) fn file_key(file: &FileId) -> String {
    format!("files/{file}")
}

/// Object storage holding the bytes of Parts and Files.
pub struct ObjectBytes {
    calls: Calls,
    budget: Arc<MemoryBudget>,
    live: Arc<LiveUploads>,
    /// How to list multipart uploads under way: S3 only.
    s3_uploads: Option<S3Uploads>,
    prefix: Path,
    handle: Handle,
}

impl std::fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBytes")
            .field("store", &self.calls.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The client options of a networked store. Why `object_store`'s own request timeout is off:
/// it bounds a whole response, body included, so a download to a slow reader would be cut
/// (and resumed only within the retry budget); every call is bounded here instead, the
/// reading of a body by its pauses ([`Calls`]).
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout_disabled()
}

/// A few quick retries of a refused or failing request (5xx, a reset connection), all inside
/// the caller's deadline; `object_store`'s default (10 retries over 3 minutes) held a silent
/// bucket's callers for 180 s.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        ..RetryConfig::default()
    }
}

/// A networked store's builder, configured from `options` (keys as `object_store` reads
/// them, in any case) on top of this module's timeouts and retries.
macro_rules! networked {
    ($builder:ty, $url:expr, $options:expr) => {
        $options.into_iter().fold(
            <$builder>::new()
                .with_url($url)
                .with_client_options(client_options())
                .with_retry(retry_config()),
            |builder, (key, value): (String, String)| match key.to_ascii_lowercase().parse() {
                Ok(key) => builder.with_config(key, value),
                Err(_) => builder,
            },
        )
    };
}

impl ObjectBytes {
    /// Opens `url` (`s3://bucket/prefix`, `gs://...`, `az://...`, `file:///dir`), configured
    /// from `options` (the process environment's `AWS_*`, `GOOGLE_*`, `AZURE_*` names, as
    /// `object_store` reads them), on the current runtime. A networked store gets a connect
    /// timeout of 3 s and at most 3 retries; every call is bounded by [`REQUEST_TIMEOUT`].
    pub fn open<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<Self> {
        let invalid = |error: &dyn Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot configure the object store {url}: {error}"),
            )
        };
        let parsed = url::Url::parse(url).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the object store URL {url:?} is not valid: {error}"),
            )
        })?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| invalid(&e))?;
        let options: Vec<(String, String)> = options
            .into_iter()
            .map(|(key, value)| (key.as_ref().to_owned(), value.into()))
            .collect();
        let mut s3_uploads = None;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let builder = networked!(AmazonS3Builder, url, options.iter().cloned());
                let region = builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let s3 = Arc::new(builder.build().map_err(|e| invalid(&e))?);
                let http = options.iter().fold(client_options(), |http, (key, value)| {
                    match key.to_ascii_lowercase().parse() {
                        Ok(AmazonS3ConfigKey::Client(key)) => http.with_config(key, value),
                        _ => http,
                    }
                });
                s3_uploads = Some(S3Uploads {
                    s3: Arc::clone(&s3),
                    region,
                    client: ReqwestConnector::default()
                        .connect(&http)
                        .map_err(|e| invalid(&e))?,
                });
                s3
            }
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                networked!(object_store::gcp::GoogleCloudStorageBuilder, url, options)
                    .build()
                    .map_err(|e| invalid(&e))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                networked!(object_store::azure::MicrosoftAzureBuilder, url, options)
                    .build()
                    .map_err(|e| invalid(&e))?,
            ),
            _ => Arc::from(
                object_store::parse_url_opts(&parsed, options)
                    .map_err(|e| invalid(&e))?
                    .0,
            ),
        };
        Ok(Self {
            calls: Calls {
                store,
                name: Arc::from(url),
                timeout: REQUEST_TIMEOUT,
            },
            budget: MemoryBudget::new(DEFAULT_MEMORY_BUDGET),
            live: Arc::default(),
            s3_uploads,
            prefix,
            handle: Handle::try_current().map_err(io::Error::other)?,
        })
    }

    /// Sets how long one bucket request may go unanswered before it fails (default
    /// [`REQUEST_TIMEOUT`]); a request that sends bytes gets more time with its size.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.calls.timeout = timeout;
        self
    }

    /// Sets the cap on the bytes all sinks of this store hold in memory at once (default
    /// [`DEFAULT_MEMORY_BUDGET`], at least [`MIN_MEMORY_BUDGET`]). Past half of it, bytes
    /// being gathered go to unnamed temp files (in `TMPDIR`); pieces being sent take the rest,
    /// a piece waiting for room at most as long as a piece may take to send.
    #[must_use]
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.budget = MemoryBudget::new(bytes);
        self
    }

    /// The bytes the sinks of this store hold in memory now.
    pub fn memory_held(&self) -> usize {
        self.budget.held.load(Ordering::SeqCst)
    }

    /// The most bytes the sinks of this store ever held in memory at once.
    #[cfg(test)]
    fn memory_peak(&self) -> usize {
        self.budget.peak.load(Ordering::SeqCst)
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// Whether the bucket answers now (a list of at most one object under the prefix, within
    /// [`CHECK_TIMEOUT`]); the error names the store and says why not.
    pub async fn check(&self) -> io::Result<()> {
        let mut listing = self.calls.store.list(Some(&self.prefix));
        match tokio::time::timeout(CHECK_TIMEOUT, listing.next()).await {
            Ok(Some(Err(error))) => Err(io::Error::other(format!(
                "cannot reach the object store {}: {error}",
                self.calls.name
            ))),
            Ok(_) => Ok(()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "cannot reach the object store {}: no answer within {CHECK_TIMEOUT:?}",
                    self.calls.name
                ),
            )),
        }
    }

    /// Deletes the object of `key`; one that is already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        match self
            .calls
            .bounded(
                &path,
                "DELETE",
                self.calls.timeout,
                self.calls.store.delete(&path),
            )
            .await
        {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    /// Of `keys` (relative to the prefix, as `part_key` makes them), the ones whose object
    /// does not exist, in the order given; HEADs 16 at once. Any other
    /// failure (a timeout, a refused request) is an error: nothing is known missing then.
    pub async fn missing(&self, keys: &[String]) -> io::Result<Vec<String>> {
        let found: Vec<Option<&String>> = stream::iter(keys)
            .map(|key| async move {
                let path = self.path(key);
                match self
                    .calls
                    .bounded(
                        &path,
                        "HEAD",
                        self.calls.timeout,
                        self.calls.store.head(&path),
                    )
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Some(key)),
                    Err(error) => Err(error),
                }
            })
            .buffered(CALLS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().cloned().collect())
    }

    /// Aborts the multipart uploads under this store's prefix (the whole bucket when its URL
    /// has none) that began before `initiated_before` by the bucket's dates, except those
    /// this process's sinks are writing; returns how many it aborted. A Part's sink killed
    /// with its process (past one piece) leaves such an upload, whose pieces the bucket
    /// keeps (and bills) until it is aborted. `initiated_before` MUST leave time for the
    /// longest Part still being written by another instance.
    ///
    /// S3 and what speaks its API (MinIO, R2, moto) only, by `ListMultipartUploads`. Other
    /// stores answer 0 and abort nothing: `object_store` lists no multipart uploads there;
    /// Azure drops uncommitted blocks itself after 7 days; for GCS, set the bucket's
    /// `AbortIncompleteMultipartUpload` lifecycle rule; a `file://` store's staging files
    /// stay beside their objects.
    pub async fn abort_stale_multipart(&self, initiated_before: SystemTime) -> io::Result<usize> {
        let Some(s3) = &self.s3_uploads else {
            return Ok(0);
        };
        let prefix = match self.prefix.as_ref() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let uploads = s3.list(&self.calls, &prefix).await?;
        let stale: Vec<InProgress> = {
            let live = self.live.set();
            uploads
                .into_iter()
                .filter(|upload| {
                    upload.initiated.is_some_and(|time| time < initiated_before)
                        && !live.contains(&upload.key)
                })
                .collect()
        };
        stream::iter(stale)
            .map(|upload| async move {
                let path = Path::parse(&upload.key).map_err(io::Error::other)?;
                let abort = s3.s3.abort_multipart(&path, &upload.upload_id);
                match self
                    .calls
                    .bounded(&path, "multipart abort", self.calls.timeout, abort)
                    .await
                {
                    Ok(()) => Ok(1),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
                    Err(error) => Err(error),
                }
            })
            .buffer_unordered(CALLS_IN_FLIGHT)
            .try_fold(0, |aborted, one| async move { Ok(aborted + one) })
            .await
    }

    fn sink(&self, key: &str) -> Box<dyn DataSink> {
        Box::new(ObjectSink::new(
            self.calls.clone(),
            self.path(key),
            self.handle.clone(),
            Arc::clone(&self.budget),
            Arc::clone(&self.live),
        ))
    }
}

/// A store's calls, each bounded by a deadline whose expiry is an error naming the store.
#[derive(Clone)]
struct Calls {
    store: Arc<dyn ObjectStore>,
    /// The store's URL, for messages.
    name: Arc<str>,
    /// How long a request may go unanswered.
    timeout: Duration,
}

impl Calls {
    /// `call` (a `what` of `path`), failed unless it ends within `limit`. A missing object is
    /// an error of kind `NotFound`, a deadline passed one of kind `TimedOut`.
    async fn bounded<T>(
        &self,
        path: &Path,
        what: &str,
        limit: Duration,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> io::Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error @ object_store::Error::NotFound { .. })) => {
                Err(io::Error::new(io::ErrorKind::NotFound, error))
            }
            Ok(Err(error)) => Err(io::Error::other(error)),
            Err(_) => {
                let object = match path.as_ref() {
                    "" => String::new(),
                    path => format!(" of {path}"),
                };
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the object store {} did not answer a {what}{object} within {limit:?}",
                        self.name
                    ),
                ))
            }
        }
    }

    /// The time a request sending `bytes` is given.
    fn send_limit(&self, bytes: usize) -> Duration {
        self.timeout + Duration::from_secs(bytes as u64 / MIN_SEND_RATE)
    }
}

impl Store for ObjectBytes {
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&part_key(upload, part)))
    }

    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&file_key(file)))
    }

    fn save_upload(&self, _: &UploadId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn append_part(&self, _: &UploadId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn save_file(&self, _: &FileId, _: &[u8]) -> io::Result<()> {
        Err(records_elsewhere())
    }

    fn remove_file(&self, file: &FileId) -> io::Result<()> {
        self.handle.block_on(self.delete(&file_key(file)))
    }

    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()> {
        for part in parts {
            self.handle.block_on(self.delete(&part_key(upload, part)))?;
        }
        Ok(())
    }

    fn remove_upload(&self, _: &UploadId) -> io::Result<()> {
        // The records say which Parts an Upload had: they doom each one (see `crate::pg`).
        Err(records_elsewhere())
    }

    fn open(&self, source: &ContentSource) -> io::Result<Box<dyn Read + Send>> {
        let keys: Vec<Path> = match source {
            ContentSource::Direct(file) => vec![self.path(&file_key(file))],
            ContentSource::Parts { upload, parts } => parts
                .iter()
                .map(|part| self.path(&part_key(upload, part)))
                .collect(),
        };
        // Complete checked that every object exists (`missing`); one gone since is a read
        // error where it is reached. The first one is awaited here: a File that cannot
        // start is a 500 before the 200.
        let mut reader = ObjectReader {
            calls: self.calls.clone(),
            handle: self.handle.clone(),
            keys: keys.into_iter(),
            ahead: VecDeque::new(),
            current: None,
            pending: Bytes::new(),
        };
        reader.current = reader.next_object()?;
        Ok(Box::new(reader))
    }

    fn load(&self) -> io::Result<StoredState> {
        Err(records_elsewhere())
    }

    fn probe(&self) -> io::Result<()> {
        self.handle.block_on(self.check())
    }

    fn quarantine_upload(&self, _: &UploadId) -> io::Result<String> {
        Err(records_elsewhere())
    }

    fn quarantine_file(&self, _: &FileId) -> io::Result<String> {
        Err(records_elsewhere())
    }
}

fn records_elsewhere() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the records of the scale-out backend live in PostgreSQL, not in the object store",
    )
}

/// A server-wide cap on the bytes the object sinks hold in memory (bytes gathered toward a
/// piece, pieces being sent).
///
/// Why gathered bytes spill to a temp file rather than wait for room: a write that waited
/// would leave its sink holding what it gathered so far, and stalled clients (a flood of
/// slow bodies) would then hold the whole budget while every other Part waited on them;
/// a sink that spills never waits for a gathering, so it cannot take part in a deadlock and
/// nobody is refused. Bytes must be in memory only while they are sent (object stores take
/// a body from memory): a piece read back from a spill file waits for room, bounded, and
/// the bytes it waits for belong to requests that end within their own deadlines, because
/// gathering may take at most half the budget.
#[derive(Debug)]
struct MemoryBudget {
    /// The cap.
    bytes: usize,
    /// Room left, in bytes.
    room: Arc<Semaphore>,
    /// Bytes held now.
    held: AtomicUsize,
    /// The most ever held at once.
    peak: AtomicUsize,
}

impl MemoryBudget {
    fn new(bytes: usize) -> Arc<Self> {
        let bytes = bytes.clamp(MIN_MEMORY_BUDGET, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            bytes,
            room: Arc::new(Semaphore::new(bytes)),
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    fn reserved(self: &Arc<Self>, permit: SemaphorePermit<'_>, bytes: usize) -> Reservation {
        permit.forget();
        let held = self.held.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(held, Ordering::SeqCst);
        Reservation {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// Room for `bytes` more gathered bytes, now or never: gathering leaves half the budget
    /// to pieces being sent.
    fn try_gather(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        if self.room.available_permits() < bytes.saturating_add(self.bytes / 2) {
            return None;
        }
        let permit = self
            .room
            .try_acquire_many(u32::try_from(bytes).ok()?)
            .ok()?;
        Some(self.reserved(permit, bytes))
    }

    /// Room for `bytes` about to be sent, waited for at most `limit`.
    async fn send(self: &Arc<Self>, bytes: usize, limit: Duration) -> io::Result<Reservation> {
        let busy = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no room for {bytes} bytes within {limit:?} in the object store's memory budget of {} bytes",
                    self.bytes
                ),
            )
        };
        let wanted = u32::try_from(bytes).map_err(|_| busy())?;
        match tokio::time::timeout(limit, self.room.acquire_many(wanted)).await {
            Ok(Ok(permit)) => Ok(self.reserved(permit, bytes)),
            Ok(Err(closed)) => Err(io::Error::other(closed)),
            Err(_) => Err(busy()),
        }
    }
}

/// Bytes of the [`MemoryBudget`] held until this is dropped.
#[derive(Debug)]
struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    fn empty(budget: &Arc<MemoryBudget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    fn merge(&mut self, mut other: Self) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
            self.budget.room.add_permits(self.bytes);
        }
    }
}

/// The bytes of the piece (or small object) being gathered.
enum Gathered {
    /// In memory, under their reservation: chunks of exactly their size (a growing
    /// buffer would hold up to twice what the budget counts).
    Memory(Vec<Bytes>, Reservation),
    /// In an unnamed temp file (the budget had no room), and how many.
    Disk(std::fs::File, usize),
}

impl Gathered {
    fn len(&self) -> usize {
        match self {
            Self::Memory(_, reservation) => reservation.bytes,
            Self::Disk(_, len) => *len,
        }
    }
}

/// A Part's bytes on their way to the bucket: gathered up to a small object (one `put`),
/// past that sent as multipart pieces of exactly [`SMALL_OBJECT`] bytes (the last one may
/// be shorter), [`PIECES_IN_FLIGHT`] at once.
struct ObjectSink {
    calls: Calls,
    path: Path,
    handle: Handle,
    budget: Arc<MemoryBudget>,
    /// Where this sink's multipart upload is listed while it is under way.
    live: Arc<LiveUploads>,
    gathered: Gathered,
    /// The multipart upload, from the first piece on.
    upload: Option<Box<dyn MultipartUpload>>,
    /// The pieces being sent, oldest first; each holds its bytes' reservation.
    in_flight: VecDeque<JoinHandle<io::Result<()>>>,
    written: u64,
    /// Committed or failed: nothing more may be written.
    done: bool,
}

impl ObjectSink {
    fn new(
        calls: Calls,
        path: Path,
        handle: Handle,
        budget: Arc<MemoryBudget>,
        live: Arc<LiveUploads>,
    ) -> Self {
        Self {
            live,
            gathered: Gathered::Memory(Vec::new(), Reservation::empty(&budget)),
            calls,
            path,
            handle,
            budget,
            upload: None,
            in_flight: VecDeque::new(),
            written: 0,
            done: false,
        }
    }

    /// Appends to the gathered bytes (at most up to a piece), in memory while the budget
    /// has room, on disk from then on.
    fn gather(&mut self, data: &[u8]) -> io::Result<()> {
        if let Gathered::Memory(held, reservation) = &mut self.gathered {
            if let Some(more) = self.budget.try_gather(data.len()) {
                reservation.merge(more);
                held.push(Bytes::copy_from_slice(data));
                return Ok(());
            }
            let mut file = tempfile::tempfile()?;
            for chunk in held.iter() {
                file.write_all(chunk)?;
            }
            self.gathered = Gathered::Disk(file, reservation.bytes);
        }
        if let Gathered::Disk(file, len) = &mut self.gathered {
            file.write_all(data)?;
            *len += data.len();
        }
        Ok(())
    }

    /// The gathered bytes in memory under their reservation (read back from disk once the
    /// budget has room), and a fresh, empty gathering.
    fn take_gathered(&mut self) -> io::Result<(PutPayload, Reservation)> {
        let empty = Gathered::Memory(Vec::new(), Reservation::empty(&self.budget));
        match std::mem::replace(&mut self.gathered, empty) {
            Gathered::Memory(held, reservation) => Ok((held.into_iter().collect(), reservation)),
            Gathered::Disk(mut file, len) => {
                let limit = self.calls.send_limit(SMALL_OBJECT);
                let reservation = self.handle.block_on(self.budget.send(len, limit))?;
                let mut held = vec![0; len];
                file.seek(SeekFrom::Start(0))?;
                file.read_exact(&mut held)?;
                Ok((PutPayload::from(held), reservation))
            }
        }
    }

    /// Waits for the oldest piece in flight; its failure is this sink's.
    fn wait_oldest(&mut self) -> io::Result<()> {
        match self.in_flight.pop_front() {
            Some(piece) => self.handle.block_on(piece).map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Sends the gathered bytes as the next piece (starting the multipart upload first).
    fn send_piece(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= PIECES_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let (piece, reservation) = self.take_gathered()?;
        let calls = self.calls.clone();
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self.upload.insert({
                // Listed before it exists: a sweep never sees it unlisted.
                self.live.set().insert(self.path.to_string());
                self.handle.block_on(calls.bounded(
                    &self.path,
                    "multipart create",
                    calls.timeout,
                    calls.store.put_multipart(&self.path),
                ))?
            }),
        };
        let limit = calls.send_limit(piece.content_length());
        let sending = upload.put_part(piece);
        let path = self.path.clone();
        self.in_flight.push_back(self.handle.spawn(async move {
            let _held = reservation;
            calls
                .bounded(&path, "multipart piece", limit, sending)
                .await
        }));
        Ok(())
    }

    fn write_piecewise(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.gathered.len() == SMALL_OBJECT {
                // More bytes follow a full piece: it is not the last one, send it.
                self.send_piece()?;
            }
            let (now, later) = data.split_at(data.len().min(SMALL_OBJECT - self.gathered.len()));
            self.gather(now)?;
            data = later;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let (object, _held) = self.take_gathered()?;
            let limit = self.calls.send_limit(object.content_length());
            let calls = &self.calls;
            return self
                .handle
                .block_on(calls.bounded(
                    &self.path,
                    "PUT",
                    limit,
                    calls.store.put(&self.path, object),
                ))
                .map(drop);
        }
        if self.gathered.len() > 0 {
            self.send_piece()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let calls = self.calls.clone();
        if let Some(upload) = &mut self.upload {
            self.handle.block_on(calls.bounded(
                &self.path,
                "multipart completion",
                calls.timeout,
                upload.complete(),
            ))?;
        }
        self.upload = None;
        Ok(())
    }
}

impl DataSink for ObjectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.done {
            return Err(io::Error::other("sink already committed or failed"));
        }
        self.written += data.len() as u64;
        let written = self.write_piecewise(data);
        self.done = written.is_err();
        written
    }

    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        if self.done {
            return Err(io::Error::other("sink already committed or failed"));
        }
        self.done = true;
        self.finish()?;
        Ok(self.written)
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        self.live.set().remove(self.path.as_ref());
        // Not committed: the pieces in flight stop and the multipart upload's pieces go
        // (without blocking: a sink may be dropped on the runtime).
        for piece in &self.in_flight {
            piece.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let (calls, path) = (self.calls.clone(), self.path.clone());
            self.handle.spawn(async move {
                let limit = calls.timeout;
                let _ = calls
                    .bounded(&path, "multipart abort", limit, upload.abort())
                    .await;
            });
        }
    }
}

/// Multipart uploads under way that this process's sinks are writing (their objects'
/// paths): a sweep never aborts one of them, whatever the bucket says of its age.
#[derive(Debug, Default)]
struct LiveUploads(Mutex<HashSet<String>>);

impl LiveUploads {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What listing S3's multipart uploads takes (`object_store` has no call for it): the
/// store's credentials and endpoint, and an HTTP client with the store's options.
struct S3Uploads {
    s3: Arc<AmazonS3>,
    region: String,
    client: HttpClient,
}

/// One multipart upload under way, as `ListMultipartUploads` tells it.
#[derive(Debug, PartialEq, Eq)]
struct InProgress {
    key: String,
    upload_id: String,
    /// `None` when the bucket's date could not be read (such an upload is kept).
    initiated: Option<SystemTime>,
}

/// Pages of `ListMultipartUploads` read at most by one sweep (1,000 uploads each).
const MULTIPART_PAGES: usize = 100;

impl S3Uploads {
    /// The multipart uploads under way whose key starts with `prefix`, every page.
    async fn list(&self, calls: &Calls, prefix: &str) -> io::Result<Vec<InProgress>> {
        let credential = calls
            .bounded(
                &Path::default(),
                "credentials request",
                calls.timeout,
                self.s3.credentials().get_credential(),
            )
            .await?;
        // The bucket's own URL, as object_store addresses it (path or virtual-hosted style).
        let mut bucket = calls
            .bounded(
                &Path::default(),
                "URL signing",
                calls.timeout,
                self.s3
                    .signed_url(http::Method::GET, &Path::default(), Duration::from_mins(1)),
            )
            .await?;
        bucket.set_query(None);
        let mut uploads = Vec::new();
        let mut marker: Option<(String, String)> = None;
        for _ in 0..MULTIPART_PAGES {
            let mut url = bucket.clone();
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_key_only("uploads")
                    .append_pair("prefix", prefix);
                if let Some((key, upload_id)) = &marker {
                    query
                        .append_pair("key-marker", key)
                        .append_pair("upload-id-marker", upload_id);
                }
            }
            let mut request = http::Request::get(url.as_str())
                .body(HttpRequestBody::empty())
                .map_err(io::Error::other)?;
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
            let listing = async {
                let response = self.client.execute(request).await?;
                let status = response.status();
                let body = response.into_body().bytes().await?;
                Ok::<_, object_store::client::HttpError>((status, body))
            };
            let (status, body) = match tokio::time::timeout(calls.timeout, listing).await {
                Ok(answer) => answer.map_err(io::Error::other)?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the object store {} did not list its multipart uploads within {:?}",
                            calls.name, calls.timeout
                        ),
                    ));
                }
            };
            let body = String::from_utf8_lossy(&body);
            if !status.is_success() {
                return Err(io::Error::other(format!(
                    "the object store {} refused to list its multipart uploads ({status}): {body}",
                    calls.name
                )));
            }
            let (page, next) = parse_multipart_uploads(&body);
            uploads.extend(page);
            marker = next;
            if marker.is_none() {
                break;
            }
        }
        Ok(uploads)
    }
}

/// The uploads of a `ListMultipartUploads` answer, and the markers of the next page when it
/// is truncated.
fn parse_multipart_uploads(xml: &str) -> (Vec<InProgress>, Option<(String, String)>) {
    let uploads = xml
        .split("<Upload>")
        .skip(1)
        .filter_map(|upload| {
            Some(InProgress {
                key: xml_text(upload, "Key")?,
                upload_id: xml_text(upload, "UploadId")?,
                initiated: xml_text(upload, "Initiated").and_then(|time| parse_time(&time)),
            })
        })
        .collect();
    let truncated = xml_text(xml, "IsTruncated").is_some_and(|value| value == "true");
    let next = match (
        xml_text(xml, "NextKeyMarker"),
        xml_text(xml, "NextUploadIdMarker"),
    ) {
        (Some(key), Some(upload_id)) if truncated && !key.is_empty() => Some((key, upload_id)),
        _ => None,
    };
    (uploads, next)
}

/// The text of the first `<name>` element in `xml`, entities decoded.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `2026-12-07T09:44:59.000Z` (S3's dates; the fraction is ignored).
fn parse_time(text: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// An object's bytes as they arrive.
type ObjectStream = BoxStream<'static, object_store::Result<Bytes>>;

/// Objects read in order, the GETs of the next [`READ_AHEAD`] started before they are
/// reached. Memory stays bounded: a GET started ahead holds its response's first bytes
/// only (the rest waits in the connection, under its flow control).
struct ObjectReader {
    calls: Calls,
    handle: Handle,
    /// The objects whose GET has not started.
    keys: std::vec::IntoIter<Path>,
    /// The GETs started, in order.
    ahead: VecDeque<JoinHandle<io::Result<ObjectStream>>>,
    current: Option<ObjectStream>,
    pending: Bytes,
}

impl ObjectReader {
    /// The next object's bytes (`None` after the last); an object that is gone is an error
    /// of kind `NotFound`.
    fn next_object(&mut self) -> io::Result<Option<ObjectStream>> {
        while self.ahead.len() <= READ_AHEAD {
            let Some(path) = self.keys.next() else { break };
            let calls = self.calls.clone();
            self.ahead.push_back(self.handle.spawn(async move {
                let limit = calls.timeout;
                let object = calls
                    .bounded(&path, "GET", limit, calls.store.get(&path))
                    .await?;
                Ok(object.into_stream())
            }));
        }
        let Some(get) = self.ahead.pop_front() else {
            return Ok(None);
        };
        self.handle
            .block_on(get)
            .map_err(io::Error::other)?
            .map(Some)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() || buf.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending.split_to(n));
                return Ok(n);
            }
            if let Some(stream) = &mut self.current {
                let limit = self.calls.timeout;
                match self
                    .handle
                    .block_on(tokio::time::timeout(limit, stream.next()))
                {
                    Ok(Some(chunk)) => {
                        self.pending = chunk.map_err(io::Error::other)?;
                        continue;
                    }
                    Ok(None) => self.current = None,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the object store {} sent no bytes within {limit:?}",
                                self.calls.name
                            ),
                        ));
                    }
                }
            }
            match self.next_object()? {
                Some(stream) => self.current = Some(stream),
                None => return Ok(0),
            }
        }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        for get in &self.ahead {
            get.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_services as services;

    /// The emulator's bucket of a fresh namespace, opened as `uploads serve` opens it.
    fn bucket() -> (services::Namespace, ObjectBytes) {
        let namespace = services::Services::get().fresh();
        let bytes = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
        (namespace, bytes)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_small_and_multipart_read_back_in_listed_order_and_only_once_committed() {
        let (namespace, bytes) = bucket();
        bytes.check().await.unwrap();
        let bytes = Arc::new(bytes);
        let upload = UploadId::new("upload_1");
        let small = pattern(1000, 1);
        // Past one put: a multipart upload of three pieces, written in uneven chunks.
        let large = pattern(2 * SMALL_OBJECT + 12_345, 2);
        let (store, upload_id, expected) = (
            Arc::clone(&bytes),
            upload.clone(),
            (small.clone(), large.clone()),
        );
        let content = tokio::task::spawn_blocking(move || {
            for (part, data) in [("part_s", &expected.0), ("part_l", &expected.1)] {
                let mut sink = store.begin_part(&upload_id, &PartId::new(part)).unwrap();
                for chunk in data.chunks(700_001) {
                    sink.write(chunk).unwrap();
                }
                assert_eq!(sink.commit().unwrap(), data.len() as u64);
            }
            let mut abandoned = store
                .begin_part(&upload_id, &PartId::new("part_x"))
                .unwrap();
            abandoned.write(&pattern(SMALL_OBJECT + 1, 3)).unwrap();
            drop(abandoned);
            let mut content = Vec::new();
            store
                .open(&ContentSource::Parts {
                    upload: upload_id.clone(),
                    parts: vec![PartId::new("part_l"), PartId::new("part_s")],
                })
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            let missing = store.open(&ContentSource::Parts {
                upload: upload_id,
                parts: vec![PartId::new("part_x")],
            });
            assert!(missing.is_err(), "an abandoned Part has no object");
            content
        })
        .await
        .unwrap();
        assert_eq!(content.len(), large.len() + small.len());
        assert!(content[..large.len()] == large[..] && content[large.len()..] == small[..]);
        let mut keys = services::Services::get().list_objects(&namespace.bucket);
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "objects/uploads/upload_1/part_l",
                "objects/uploads/upload_1/part_s"
            ]
        );
        bytes.delete("uploads/upload_1/part_s").await.unwrap();
        bytes.delete("uploads/upload_1/part_s").await.unwrap();
        assert_eq!(
            services::Services::get().list_objects(&namespace.bucket),
            vec!["objects/uploads/upload_1/part_l"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_bucket_is_named() {
        let namespace = services::Services::get().fresh();
        let url = namespace
            .object_store
            .replace(&namespace.bucket, "no-such-bucket");
        let bytes = ObjectBytes::open(&url, namespace.s3_env()).unwrap();
        let message = bytes.check().await.unwrap_err().to_string();
        assert!(
            message.contains("cannot reach the object store"),
            "{message}"
        );
    }

    /// A bucket endpoint that accepts connections and never answers (a silent bucket).
    fn black_hole() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_bucket_fails_the_check_naming_it_instead_of_hanging() {
        let env = vec![
            ("AWS_ENDPOINT_URL", black_hole()),
            ("AWS_ACCESS_KEY_ID", services::S3_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", services::S3_SECRET.to_owned()),
            ("AWS_REGION", services::S3_REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ];
        let bytes = ObjectBytes::open("s3://silent-bucket/objects", env).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(20), bytes.check())
            .await
            .expect("the check answers")
            .unwrap_err()
            .to_string();
        assert!(message.contains("silent-bucket"), "{message}");

        // Every other call fails within its request timeout too (the service answers 500).
        let bytes = Arc::new(bytes.with_request_timeout(Duration::from_millis(500)));
        let keys = vec!["uploads/upload_1/part_1".to_owned()];
        let error = tokio::time::timeout(Duration::from_secs(20), bytes.missing(&keys))
            .await
            .expect("missing answers")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("silent-bucket"), "{error}");
        let deleted = tokio::time::timeout(Duration::from_secs(20), bytes.delete(&keys[0]));
        assert!(deleted.await.expect("delete answers").is_err());
        let store = Arc::clone(&bytes);
        let blocking = tokio::task::spawn_blocking(move || {
            let upload = UploadId::new("upload_1");
            let mut small = store.begin_part(&upload, &PartId::new("part_s")).unwrap();
            small.write(b"hello").unwrap();
            assert!(small.commit().is_err(), "a small put fails");
            let mut large = store.begin_part(&upload, &PartId::new("part_l")).unwrap();
            assert!(
                large.write(&pattern(SMALL_OBJECT + 1, 1)).is_err(),
                "a multipart upload fails"
            );
            let opened = store.open(&ContentSource::Direct(FileId::new("file_1")));
            assert!(opened.is_err(), "a download fails before its 200");
        });
        tokio::time::timeout(Duration::from_secs(30), blocking)
            .await
            .expect("the blocking calls answer")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_names_the_absent_keys_in_order() {
        let (_namespace, bytes) = bucket();
        let bytes = Arc::new(bytes);
        let store = Arc::clone(&bytes);
        let keys: Vec<String> = (0..40)
            .map(|n| format!("uploads/upload_1/part_{n}"))
            .collect();
        let written = keys.clone();
        tokio::task::spawn_blocking(move || {
            for (n, key) in written.iter().enumerate() {
                if n % 7 != 3 {
                    let part = key.rsplit('/').next().unwrap();
                    let mut sink = store
                        .begin_part(&UploadId::new("upload_1"), &PartId::new(part))
                        .unwrap();
                    sink.write(&pattern(10, 0)).unwrap();
                    sink.commit().unwrap();
                }
            }
        })
        .await
        .unwrap();
        let expected: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 7 == 3)
            .map(|(_, key)| key.clone())
            .collect();
        assert_eq!(bytes.missing(&keys).await.unwrap(), expected);
        assert!(bytes.missing(&[]).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_parts_read_in_order_and_a_missing_one_cuts_the_read() {
        let (_namespace, bytes) = bucket();
        let store = Arc::new(bytes);
        tokio::task::spawn_blocking(move || {
            let upload = UploadId::new("upload_1");
            let parts: Vec<PartId> = (0..30).map(|n| PartId::new(format!("part_{n}"))).collect();
            let mut expected = Vec::new();
            for (n, part) in parts.iter().enumerate() {
                let data = pattern(1000 + n * 37, u8::try_from(n).unwrap());
                let mut sink = store.begin_part(&upload, part).unwrap();
                sink.write(&data).unwrap();
                sink.commit().unwrap();
                expected.extend_from_slice(&data);
            }
            let source = ContentSource::Parts {
                upload: upload.clone(),
                parts: parts.clone(),
            };
            let mut content = Vec::new();
            store
                .open(&source)
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            assert!(content == expected, "the bytes of every Part, in order");

            // Part 20 deleted behind the server: the read fails where it is reached.
            store.remove_parts(&upload, &parts[20..21]).unwrap();
            let mut reader = store.open(&source).unwrap();
            let mut content = Vec::new();
            let error = reader.read_to_end(&mut content).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
            assert!(content.len() < expected.len(), "never silently short");
            // The first one gone: an error from `open`, before any byte.
            store.remove_parts(&upload, &parts[..1]).unwrap();
            assert!(store.open(&source).is_err());
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_sinks_stay_within_the_memory_budget_and_all_complete_byte_exact() {
        let (_namespace, bytes) = bucket();
        let bytes = Arc::new(bytes.with_memory_budget(MIN_MEMORY_BUDGET));
        let store = Arc::clone(&bytes);
        let upload = UploadId::new("upload_1");
        // Four Parts of three pieces, four small ones: all stall with 3 MiB gathered
        // (24 MiB, more than the budget), then go on at once.
        let sizes: Vec<usize> = (0..8)
            .map(|n| {
                if n % 2 == 0 {
                    2 * SMALL_OBJECT + 4321
                } else {
                    3 << 20
                }
            })
            .collect();
        let expected = sizes.clone();
        let upload_id = upload.clone();
        tokio::task::spawn_blocking(move || {
            let stalled = std::sync::Barrier::new(expected.len());
            std::thread::scope(|scope| {
                for (n, size) in expected.iter().enumerate() {
                    let (store, stalled, upload) = (&store, &stalled, &upload_id);
                    scope.spawn(move || {
                        let data = pattern(*size, u8::try_from(n).unwrap());
                        let part = PartId::new(format!("part_{n}"));
                        let mut sink = store.begin_part(upload, &part).unwrap();
                        let (first, rest) = data.split_at(3 << 20);
                        for chunk in first.chunks(1 << 20) {
                            sink.write(chunk).unwrap();
                        }
                        stalled.wait();
                        for chunk in rest.chunks(1 << 20) {
                            sink.write(chunk).unwrap();
                        }
                        assert_eq!(sink.commit().unwrap(), *size as u64);
                    });
                }
            });
        })
        .await
        .unwrap();
        assert!(
            bytes.memory_peak() <= MIN_MEMORY_BUDGET,
            "held {} bytes at once",
            bytes.memory_peak()
        );
        assert_eq!(bytes.memory_held(), 0, "every reservation returned");
        let store = Arc::clone(&bytes);
        tokio::task::spawn_blocking(move || {
            for (n, size) in sizes.iter().enumerate() {
                let mut content = Vec::new();
                store
                    .open(&ContentSource::Parts {
                        upload: upload.clone(),
                        parts: vec![PartId::new(format!("part_{n}"))],
                    })
                    .unwrap()
                    .read_to_end(&mut content)
                    .unwrap();
                assert!(
                    content == pattern(*size, u8::try_from(n).unwrap()),
                    "part {n}"
                );
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_multipart_uploads_are_aborted_and_those_being_written_kept() {
        let (namespace, sweeper) = bucket();
        // Another instance, killed while its Part was past one piece: its sink never
        // commits nor drops.
        let crashed = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
        let sweeper = Arc::new(sweeper);
        let writer = Arc::clone(&sweeper);
        let upload = UploadId::new("upload_1");
        let upload_id = upload.clone();
        let live = tokio::task::spawn_blocking(move || {
            let mut lost = crashed
                .begin_part(&upload_id, &PartId::new("part_lost"))
                .unwrap();
            lost.write(&pattern(SMALL_OBJECT + 1, 1)).unwrap();
            std::mem::forget(lost);
            let mut live = writer
                .begin_part(&upload_id, &PartId::new("part_live"))
                .unwrap();
            live.write(&pattern(SMALL_OBJECT + 1, 2)).unwrap();
            live
        })
        .await
        .unwrap();
        let services = services::Services::get();
        let mut under_way = services.list_multipart_uploads(&namespace.bucket);
        under_way.sort();
        assert_eq!(
            under_way,
            [
                "objects/uploads/upload_1/part_live",
                "objects/uploads/upload_1/part_lost"
            ]
        );
        // Nothing began before 1970; moto dates every upload 2010-11-10, so "now" is past
        // both, and only the one no sink of this process writes goes.
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(sweeper.abort_stale_multipart(epoch).await.unwrap(), 0);
        let now = SystemTime::now();
        assert_eq!(sweeper.abort_stale_multipart(now).await.unwrap(), 1);
        assert_eq!(
            services.list_multipart_uploads(&namespace.bucket),
            ["objects/uploads/upload_1/part_live"]
        );
        let committed = tokio::task::spawn_blocking(move || live.commit().unwrap());
        assert_eq!(committed.await.unwrap(), SMALL_OBJECT as u64 + 1);
        assert!(
            services
                .list_multipart_uploads(&namespace.bucket)
                .is_empty()
        );
        assert_eq!(
            services.list_objects(&namespace.bucket),
            ["objects/uploads/upload_1/part_live"]
        );
    }

    #[test]
    fn a_list_of_multipart_uploads_is_read_with_its_dates_and_next_page() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><IsTruncated>true</IsTruncated>
  <NextKeyMarker>objects/uploads/u/p&amp;2</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker>
  <Upload><Key>objects/uploads/u/p1</Key><UploadId>id-1</UploadId>
    <Initiated>2026-12-07T09:44:59.000Z</Initiated></Upload>
  <Upload><Key>objects/uploads/u/p&amp;2</Key><UploadId>id-2</UploadId>
    <Initiated>2000-02-29T23:59:59Z</Initiated></Upload>
  <Upload><Key>objects/uploads/u/p3</Key><UploadId>id-3</UploadId>
    <Initiated>yesterday</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let at = |seconds| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        let (uploads, next) = parse_multipart_uploads(xml);
        assert_eq!(
            uploads,
            [
                InProgress {
                    key: "objects/uploads/u/p1".to_owned(),
                    upload_id: "id-1".to_owned(),
                    initiated: at(1_796_636_699),
                },
                InProgress {
                    key: "objects/uploads/u/p&2".to_owned(),
                    upload_id: "id-2".to_owned(),
                    initiated: at(951_868_799),
                },
                InProgress {
                    key: "objects/uploads/u/p3".to_owned(),
                    upload_id: "id-3".to_owned(),
                    initiated: None,
                },
            ]
        );
        assert_eq!(
            next,
            Some(("objects/uploads/u/p&2".to_owned(), "id-2".to_owned()))
        );
        let last = xml.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_multipart_uploads(&last).1, None);
        assert_eq!(parse_time("1970-01-02T00:00:01.000Z"), at(86_401));
    }

    #[tokio::test]
    async fn waiting_for_memory_is_bounded_and_room_comes_back_when_released() {
        let budget = MemoryBudget::new(0);
        assert_eq!(
            budget.bytes, MIN_MEMORY_BUDGET,
            "raised to the smallest budget"
        );
        let wait = Duration::from_millis(100);
        let all = budget.send(MIN_MEMORY_BUDGET, wait).await.unwrap();
        assert!(budget.try_gather(1).is_none(), "a gathering never waits");
        let guard = Duration::from_secs(20);
        let error = tokio::time::timeout(guard, budget.send(1, wait))
            .await
            .expect("the wait is bounded")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        drop(all);
        assert_eq!(budget.held.load(Ordering::SeqCst), 0);
        let piece = budget.send(SMALL_OBJECT, wait).await.unwrap();
        // Gathering leaves half the budget to pieces being sent.
        assert!(budget.try_gather(1).is_none());
        drop(piece);
        let gathered = budget.try_gather(MIN_MEMORY_BUDGET / 2).unwrap();
        assert!(budget.try_gather(1).is_none());
        drop(gathered);
        assert_eq!(budget.peak.load(Ordering::SeqCst), MIN_MEMORY_BUDGET);
    }
}
