//! Bytes in object storage (S3, MinIO, R2, GCS, Azure, or `file://`), through the
//! `object_store` crate: the bytes seam ([`ByteStore`]) for the scale-out backend,
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
//! The [`ByteStore`] methods block: the service calls them on blocking threads, and they wait
//! on the runtime's handle there.

use std::collections::HashSet;
use std::fmt::Display;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use futures_util::stream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpConnector, HttpError, HttpErrorKind, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use tokio::runtime::Handle;
use uploads_core::types::{FileId, PartId, UploadId};

use crate::byte_store::{ByteStore, ContentSource, DataSink};

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
    ///
    /// Only the server's own keys are candidates (`uploads/...` and `files/...` under the
    /// prefix), and `still_wanted` gets them (relative to the prefix, as `part_key` makes
    /// them) and answers those to keep whatever the bucket's dates say (the records know a
    /// Part still being written elsewhere; a bucket's clock or an emulator's dates may not).
    pub async fn abort_stale_multipart<F, Fut>(
        &self,
        initiated_before: SystemTime,
        still_wanted: F,
    ) -> io::Result<usize>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = io::Result<HashSet<String>>>,
    {
        let Some(s3) = &self.s3_uploads else {
            return Ok(0);
        };
        let prefix = match self.prefix.as_ref() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let ours = |key: &str| {
            key.strip_prefix(&prefix)
                .filter(|relative| {
                    relative.starts_with("uploads/") || relative.starts_with("files/")
                })
                .map(str::to_owned)
        };
        let uploads = s3.list(&self.calls, &prefix).await?;
        let candidates: Vec<(String, InProgress)> = {
            let live = self.live.set();
            uploads
                .into_iter()
                .filter(|upload| {
                    upload.initiated.is_some_and(|time| time < initiated_before)
                        && !live.contains(&upload.key)
                })
                .filter_map(|upload| Some((ours(&upload.key)?, upload)))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        let keep = still_wanted(candidates.iter().map(|(key, _)| key.clone()).collect()).await?;
        let stale: Vec<InProgress> = candidates
            .into_iter()
            .filter(|(key, _)| !keep.contains(key))
            .map(|(_, upload)| upload)
            .collect();
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

/// The `io::ErrorKind` of a bucket that could not be reached (refused the connection, cut
/// it, or let it time out), found in `error`'s chain; `None` for any other failure.
fn unreachable_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect => Some(io::ErrorKind::ConnectionRefused),
                HttpErrorKind::Timeout => Some(io::ErrorKind::TimedOut),
                HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    Some(io::ErrorKind::ConnectionReset)
                }
                _ => None,
            };
        }
        cause = error.source();
    }
    None
}

impl Calls {
    /// `call` (a `what` of `path`), failed unless it ends within `limit`. A missing object is
    /// an error of kind `NotFound`, a deadline passed one of kind `TimedOut`, a bucket that
    /// could not be reached one of [`unreachable_kind`].
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
            Ok(Err(error)) => {
                let kind = unreachable_kind(&error).unwrap_or(io::ErrorKind::Other);
                Err(io::Error::new(kind, error))
            }
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

impl ByteStore for ObjectBytes {
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&part_key(upload, part)))
    }

    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>> {
        Ok(self.sink(&file_key(file)))
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
        let reader = ObjectReader::open(self.calls.clone(), self.handle.clone(), keys)?;
        Ok(Box::new(reader))
    }

    fn missing_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<Vec<PartId>> {
        let keys: Vec<String> = parts.iter().map(|part| part_key(upload, part)).collect();
        let missing = self.handle.block_on(self.missing(&keys))?;
        Ok(parts
            .iter()
            .zip(&keys)
            .filter(|(_, key)| missing.contains(key))
            .map(|(part, _)| part.clone())
            .collect())
    }

    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()> {
        for part in parts {
            self.handle.block_on(self.delete(&part_key(upload, part)))?;
        }
        Ok(())
    }

    fn remove_file_data(&self, file: &FileId) -> io::Result<()> {
        self.handle.block_on(self.delete(&file_key(file)))
    }

    fn probe(&self) -> io::Result<()> {
        self.handle.block_on(self.check())
    }
}

mod budget;
mod reader;
mod sink;
mod stale;
#[cfg(test)]
mod tests;

use budget::MemoryBudget;
use reader::ObjectReader;
use sink::ObjectSink;
use stale::{InProgress, LiveUploads, S3Uploads};
