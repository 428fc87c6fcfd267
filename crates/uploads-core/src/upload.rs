//! What every driver's high-level upload shares, so the async and the blocking clients are
//! the same product with different transports: the options of `upload_file`, their checks
//! before any request (of a new upload and of a resume), the error of one request
//! ([`RequestError`]) and of a whole upload ([`UploadError`]), each generic over the driver's
//! transport error, and the fingerprint that ties a resume snapshot to its source. The
//! [`Uploader`](crate::uploader::Uploader) runs the upload itself; its parts phase is
//! `UploadRun` here, which turns each part attempt's result into the session's update or the
//! reason to give up.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ApiError, BuildError, ResponseError};
use crate::limits::{Limits, MIB, mime_type_for_filename};
use crate::retry::{Failure, GiveUpReason, RetryDecision, RetryPolicy};
use crate::session::{
    PartJob, PartPlan, PlanError, ProgressEvent, ResumeError, SessionSnapshot, UploadSession,
};
use crate::types::{
    CompleteUploadRequest, CreateUploadRequest, ExpiresAfter, PartId, Purpose, UploadId,
};

/// Receives progress events; called from whichever task or thread made progress.
pub type ProgressCallback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Options of a high-level upload. [`UploadOptions::new`] gives the defaults: parts sized to
/// the file ([`default_part_size`]), 4 in flight, md5 on, cancel on failure, OpenAI's limits and the SDKs' retry policy.
#[derive(Clone)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The File's purpose.
    pub purpose: Purpose,
    /// The File's name; by default the source's file name.
    pub filename: Option<String>,
    /// The MIME type; by default guessed from the filename's extension.
    pub mime_type: Option<String>,
    /// Bytes per Part (the last may be shorter); at most `limits.max_part_bytes`. `None`
    /// (the default) lets [`default_part_size`] choose from the file's size and the
    /// concurrency.
    pub part_size: Option<u64>,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// Compute the md5 while uploading and send it on complete, so the service verifies it.
    pub md5: bool,
    /// Cancel the Upload when the upload gives up; off keeps it for a resume.
    pub cancel_on_failure: bool,
    /// Expiration policy of the resulting File.
    pub expires_after: Option<ExpiresAfter>,
    /// When and how often each request is retried.
    pub retry: RetryPolicy,
    /// A bound on the whole upload, from its start.
    pub deadline: Option<Duration>,
    /// Where the session snapshot is written after each finished part, for a resume.
    pub snapshot_path: Option<std::path::PathBuf>,
    /// The service's limits, checked before any request.
    pub limits: Limits,
    /// Progress events, if anyone listens.
    pub progress: Option<ProgressCallback>,
}

impl fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadOptions")
            .field("purpose", &self.purpose)
            .field("filename", &self.filename)
            .field("mime_type", &self.mime_type)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("md5", &self.md5)
            .field("cancel_on_failure", &self.cancel_on_failure)
            .field("expires_after", &self.expires_after)
            .field("retry", &self.retry)
            .field("deadline", &self.deadline)
            .field("snapshot_path", &self.snapshot_path)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish_non_exhaustive()
    }
}

/// The smallest part [`default_part_size`] chooses: below this, the cost of a request
/// (a round trip, a multipart head, the service's bookkeeping) starts to show.
pub const MIN_DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// How many parts an Upload may have, when [`Limits`] does not say.
pub const DEFAULT_MAX_PARTS: u64 = 10_000;
/// How many parts each connection should carry in [`default_part_size`]: with four rounds,
/// the last round (where connections finish unevenly and some sit idle) is a quarter of the
/// time at most.
const ROUNDS_PER_CONNECTION: u64 = 4;

/// The part size for a file of `file_size` bytes sent `concurrency` parts at a time, when
/// the caller does not fix one.
///
/// A fixed 64 MiB (the official SDKs' size) leaves connections idle: a 256 MiB file is 4
/// parts, so an 8-way upload runs 4 connections, and the slowest part alone is the tail.
/// Instead each connection gets about four parts, so all of them stay
/// busy until the last round; the size is rounded up to whole MiB, never below
/// [`MIN_DEFAULT_PART_SIZE`] (small files are few parts, not many tiny ones), never above
/// `limits.max_part_bytes` (64 MiB), and never so small that the file needs more than
/// [`DEFAULT_MAX_PARTS`] parts.
///
/// ```
/// use uploads_core::limits::{Limits, MIB, GIB};
/// use uploads_core::upload::default_part_size;
///
/// let limits = Limits::default();
/// assert_eq!(default_part_size(256 * MIB, 4, &limits), 16 * MIB); // 16 parts, 4 rounds of 4
/// assert_eq!(default_part_size(256 * MIB, 8, &limits), 8 * MIB); // 32 parts
/// assert_eq!(default_part_size(10 * MIB, 4, &limits), 8 * MIB); // the floor: 2 parts
/// assert_eq!(default_part_size(8 * GIB, 4, &limits), 64 * MIB); // the part limit
/// ```
pub fn default_part_size(file_size: u64, concurrency: usize, limits: &Limits) -> u64 {
    let connections = u64::try_from(concurrency.max(1)).unwrap_or(u64::MAX);
    let busy = file_size.div_ceil(connections.saturating_mul(ROUNDS_PER_CONNECTION));
    let whole_mib = busy.div_ceil(MIB).saturating_mul(MIB);
    let few_enough = file_size.div_ceil(DEFAULT_MAX_PARTS);
    whole_mib
        .max(MIN_DEFAULT_PART_SIZE)
        .min(limits.max_part_bytes)
        .max(few_enough)
        .max(1)
}
/// The default number of parts in flight. Through a link that caps each connection (the
/// usual case across the internet), the rate grows with the connections in use: measured
/// through 5 MB/s per connection and 50 ms RTT, 4 in flight gave 3.5x the official SDK and 8
/// gave 6.4-6.6x (docs/BENCHMARKS.md), for under 60 MiB of client memory.
pub const DEFAULT_CONCURRENCY: usize = 8;

impl UploadOptions {
    /// The defaults for a File of `purpose`.
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            filename: None,
            mime_type: None,
            part_size: None,
            concurrency: DEFAULT_CONCURRENCY,
            md5: true,
            cancel_on_failure: true,
            expires_after: None,
            retry: RetryPolicy::default(),
            deadline: None,
            snapshot_path: None,
            limits: Limits::default(),
            progress: None,
        }
    }

    /// Sets the File's name.
    #[must_use]
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = Some(filename.into());
        self
    }

    /// Sets the MIME type.
    #[must_use]
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// Sets the part size (instead of [`default_part_size`]).
    #[must_use]
    pub fn part_size(mut self, part_size: u64) -> Self {
        self.part_size = Some(part_size);
        self
    }

    /// Sets how many parts are in flight at once.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Turns the md5 on or off.
    #[must_use]
    pub fn md5(mut self, md5: bool) -> Self {
        self.md5 = md5;
        self
    }

    /// Cancel the Upload on failure (the default), or keep it for a resume.
    #[must_use]
    pub fn cancel_on_failure(mut self, cancel: bool) -> Self {
        self.cancel_on_failure = cancel;
        self
    }

    /// Sets the resulting File's expiry.
    #[must_use]
    pub fn expires_after(mut self, expires_after: ExpiresAfter) -> Self {
        self.expires_after = Some(expires_after);
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds the whole upload.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Writes the session snapshot to `path` after each finished part.
    #[must_use]
    pub fn snapshot_path(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot_path = Some(path.into());
        self
    }

    /// Sets the limits checked before any request.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Calls `callback` with every progress event.
    #[must_use]
    pub fn on_progress(
        mut self,
        callback: impl Fn(&ProgressEvent) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// Checks the options against a source of `size` bytes whose own name is `source_name`
    /// (used when no filename is set), before any request: returns the create request and the
    /// part plan, or every reason the upload cannot start.
    pub fn prepare(
        &self,
        source_name: &str,
        size: u64,
    ) -> Result<(CreateUploadRequest, PartPlan), OptionsError> {
        if self.concurrency == 0 {
            return Err(OptionsError::ZeroConcurrency);
        }
        let part_size = self
            .part_size
            .unwrap_or_else(|| default_part_size(size, self.concurrency, &self.limits));
        let plan = PartPlan::new(size, part_size, &self.limits).map_err(OptionsError::Plan)?;
        let filename = self
            .filename
            .clone()
            .unwrap_or_else(|| source_name.to_owned());
        if filename.is_empty() {
            return Err(OptionsError::NoFilename);
        }
        let mime_type = match &self.mime_type {
            Some(mime_type) => mime_type.clone(),
            None => mime_type_for_filename(&filename)
                .ok_or_else(|| OptionsError::UnknownMimeType {
                    filename: filename.clone(),
                })?
                .to_owned(),
        };
        self.limits
            .check_mime_type(&self.purpose, &mime_type)
            .map_err(OptionsError::refused)?;
        if let Some(expires_after) = &self.expires_after {
            self.limits
                .check_expires_after(expires_after)
                .map_err(OptionsError::refused)?;
        }
        let request = CreateUploadRequest {
            filename,
            purpose: self.purpose.clone(),
            bytes: size,
            mime_type,
            expires_after: self.expires_after.clone(),
        };
        Ok((request, plan))
    }

    /// Checks a resume of `snapshot` before any request, as [`prepare`](Self::prepare)
    /// checks a new upload: the options, that the source (`source_len` bytes, fingerprinted
    /// `source_fingerprint` by [`source_fingerprint`]) is the one the snapshot was taken of,
    /// and that the snapshot can be resumed at `now_unix_ms`. Returns the session to drive,
    /// bounded by this options' deadline counted from `now_unix_ms`.
    ///
    /// A snapshot without a fingerprint (of an upload from a reader) can only be checked by
    /// length.
    pub fn prepare_resume<E>(
        &self,
        snapshot: SessionSnapshot,
        source_len: u64,
        source_fingerprint: &str,
        now_unix_ms: u64,
    ) -> Result<UploadSession, UploadError<E>> {
        if self.concurrency == 0 {
            return Err(OptionsError::ZeroConcurrency.into());
        }
        let changed = match &snapshot.source {
            Some(expected) => expected != source_fingerprint,
            None => source_len != snapshot.file_size,
        };
        if changed {
            return Err(UploadError::SourceChanged {
                expected: snapshot
                    .source
                    .unwrap_or_else(|| format!("{} bytes", snapshot.file_size)),
                found: source_fingerprint.to_owned(),
            });
        }
        let deadline = self.deadline_unix_ms(now_unix_ms);
        let session =
            UploadSession::resume(snapshot, &self.limits, self.retry, now_unix_ms, deadline)?;
        Ok(session.with_source(source_fingerprint))
    }

    /// The deadline as a point in time: [`deadline`](Self::deadline) counted from
    /// `now_unix_ms` (saturating), `None` without one.
    pub fn deadline_unix_ms(&self, now_unix_ms: u64) -> Option<u64> {
        let deadline = self.deadline?;
        let millis = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        Some(now_unix_ms.saturating_add(millis))
    }

    /// Sends a progress event to the callback, if there is one.
    pub fn report(&self, event: &ProgressEvent) {
        if let Some(callback) = &self.progress {
            callback(event);
        }
    }
}

/// Where an adapter's `resume_upload` finds the session to resume.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SnapshotSource {
    /// A snapshot file written by an earlier upload (see
    /// [`UploadOptions::snapshot_path`]); the resumed upload keeps writing it unless the
    /// options name another path.
    Path(PathBuf),
    /// A snapshot already read.
    Snapshot(Box<SessionSnapshot>),
}

impl From<PathBuf> for SnapshotSource {
    fn from(path: PathBuf) -> Self {
        Self::Path(path)
    }
}

impl From<&Path> for SnapshotSource {
    fn from(path: &Path) -> Self {
        Self::Path(path.to_owned())
    }
}

impl From<SessionSnapshot> for SnapshotSource {
    fn from(snapshot: SessionSnapshot) -> Self {
        Self::Snapshot(Box::new(snapshot))
    }
}

impl SnapshotSource {
    /// The snapshot, and the path of the file it was read from, if it was (the resumed
    /// upload keeps writing it unless its options name another). `read` reads a file's text:
    /// the adapter's I/O. A file that cannot be read is [`ResumeError::Malformed`], naming it.
    pub fn load(
        self,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<(SessionSnapshot, Option<PathBuf>), ResumeError> {
        match self {
            Self::Snapshot(snapshot) => Ok((*snapshot, None)),
            Self::Path(path) => {
                let text = read(&path).map_err(|error| ResumeError::Malformed {
                    message: format!("cannot read {}: {error}", path.display()),
                })?;
                Ok((SessionSnapshot::from_json(&text)?, Some(path)))
            }
        }
    }
}

/// Why options were refused before any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The part size or the file size is outside the limits.
    #[error(transparent)]
    Plan(PlanError),
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    /// Neither a filename nor a source name.
    #[error("the upload needs a filename")]
    NoFilename,
    /// No MIME type was given and the filename's extension does not suggest one.
    #[error("no MIME type given, and none is known for {filename:?}: set one")]
    UnknownMimeType {
        /// The filename whose extension was looked up.
        filename: String,
    },
    /// The service would refuse the request: the field at fault (`param`, as the service
    /// would name it) and the service's message.
    #[error("{message}")]
    Refused {
        /// The field, e.g. `mime_type` or `expires_after.seconds`.
        param: Option<String>,
        /// The message, in OpenAI's style.
        message: String,
    },
}

/// How connecting to the service failed, as a driver tells it from its transport's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens at the address.
    #[error("connection refused")]
    Refused,
    /// No answer to the connection attempt in time.
    #[error("timed out")]
    TimedOut,
    /// The TLS handshake failed (an unknown certificate, a protocol mismatch...).
    #[error("TLS handshake failed")]
    Tls,
    /// Anything else (the name does not resolve, the network is unreachable...).
    #[error("connection failed")]
    Other,
}

/// Whether `address` (`host:port`, the host maybe a bracketed IPv6 address) is this
/// machine's own: `localhost` or a loopback IP address.
pub fn is_loopback_address(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OptionsError {
    fn refused(problem: crate::limits::FieldError) -> Self {
        Self::Refused {
            param: problem.param,
            message: problem.message,
        }
    }
}

/// The error of one request: what the low-level calls of every adapter return. `E` is the
/// adapter's transport error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError<E> {
    /// The request could not be built (bad base URL, key with invalid characters, ...).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The service answered with an error (or a body that is not what it should be).
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// Connecting to the service failed: the address (`host:port`) and how are kept so a
    /// program can say `cannot connect to 127.0.0.1:8000 (connection refused)`.
    #[error("cannot connect to {address} ({kind})")]
    Connect {
        /// The `host:port` the request went to.
        address: String,
        /// How connecting failed.
        kind: ConnectFailure,
        /// The transport's own error.
        #[source]
        source: E,
    },
    /// The request or its response failed on the way.
    #[error("transport error")]
    Transport(#[source] E),
    /// Reading the data to send failed: the file could not be read, or is shorter than it
    /// was. The request was cut short; no retry can fix it.
    #[error("reading the data to send failed")]
    Source(#[source] std::io::Error),
    /// No answer in time.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
}

impl<E> RequestError<E> {
    /// The service's error, when it answered with a non-2xx status.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Response(response) => response.api_error(),
            _ => None,
        }
    }

    /// Whether sending the request again may succeed, by the retry policy's rule (408, 409,
    /// 429, 5xx, a broken connection or a timeout; never a request that cannot be built or
    /// read). The clock only dates a `Retry-After`, which does not change that answer.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.as_failure(0)
            .is_some_and(|failure| failure.is_retryable())
    }

    /// How the retry policy sees this error; `None` for an error no retry can fix (the
    /// request cannot be built, or its data cannot be read).
    pub fn as_failure(&self, now_unix_ms: u64) -> Option<Failure> {
        match self {
            Self::Build(_) | Self::Source(_) => None,
            Self::Response(ResponseError::Api(api)) => Some(Failure::from_response(
                api.status,
                &api.headers,
                now_unix_ms,
            )),
            Self::Connect {
                address,
                kind: ConnectFailure::Refused,
                ..
            } => Some(Failure::Refused {
                loopback: is_loopback_address(address),
            }),
            Self::Connect {
                kind: ConnectFailure::TimedOut,
                ..
            }
            | Self::Timeout(_) => Some(Failure::Timeout),
            // A 2xx whose body does not parse is most often a response cut short.
            Self::Response(_) | Self::Transport(_) | Self::Connect { .. } => {
                Some(Failure::Connection)
            }
        }
    }
}

/// The text of `error` and of every cause under it, joined by `: ` as one line, e.g.
/// `creating the Upload failed: cannot connect to 127.0.0.1:8000 (connection refused)`.
/// This crate's errors never repeat their cause in their own message (the cause is their
/// `source`), so a program that shows errors prints this, not just the outer message. A
/// cause whose text is already in the line (an error from elsewhere that does repeat its
/// cause) is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = error.source();
    }
    line
}

/// Why a high-level upload failed. `E` is the adapter's transport error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError<E> {
    /// The options were refused before any request.
    #[error("invalid upload options")]
    Options(#[from] OptionsError),
    /// The source could not be read (before the Upload was created).
    #[error("cannot read the source")]
    Source(#[source] std::io::Error),
    /// The snapshot cannot be resumed.
    #[error("cannot resume")]
    Resume(#[from] ResumeError),
    /// The source is not the one the snapshot was taken of.
    #[error("cannot resume: the source changed since the snapshot (was {expected}, now {found})")]
    SourceChanged {
        /// The fingerprint in the snapshot.
        expected: String,
        /// The source's fingerprint now.
        found: String,
    },
    /// Creating the Upload failed; nothing was left behind.
    #[error("creating the Upload failed")]
    Create(#[source] RequestError<E>),
    /// The caller stopped the upload before the Upload was created (if a create request was
    /// in flight, the Upload it made expires unused).
    #[error("interrupted before the Upload was created")]
    Interrupted,
    /// The Upload was created but the upload gave up; `cancelled` says whether the Upload was
    /// cancelled (otherwise it can be resumed from the snapshot until it expires).
    #[error("upload {upload_id} failed ({})", if *.cancelled { "cancelled" } else { "kept for resume" })]
    Aborted {
        /// The Upload that was created.
        upload_id: UploadId,
        /// Whether the Upload was cancelled.
        cancelled: bool,
        /// What went wrong; boxed, since it is large (the last request's error) and every
        /// `Result` of an upload would carry its size.
        #[source]
        cause: Box<AbortCause<E>>,
    },
}

/// What made an upload give up after its Upload was created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AbortCause<E> {
    /// A part failed for good.
    #[error("part {part} gave up ({reason})")]
    Part {
        /// The part's index in the file.
        part: u32,
        /// Why the retry policy gave up.
        reason: GiveUpReason,
        /// The last error of that part.
        #[source]
        error: RequestError<E>,
    },
    /// The complete request failed for good.
    #[error("complete failed")]
    Complete(#[source] RequestError<E>),
    /// The source could not be read.
    #[error("reading the source failed")]
    Source(#[source] std::io::Error),
    /// The snapshot could not be written.
    #[error("writing the snapshot failed")]
    Snapshot(#[source] std::io::Error),
    /// The deadline passed.
    #[error("the deadline passed")]
    Deadline,
    /// The caller stopped the upload. Whether the Upload is cancelled is the caller's choice
    /// ([`StopMode`](crate::uploader::StopMode)), whatever
    /// [`UploadOptions::cancel_on_failure`] says.
    #[error("interrupted")]
    Interrupted,
    /// The workers stopped with parts missing and no other cause: an adapter bug, reported
    /// rather than completing an Upload without all of its parts.
    #[error("the upload stopped with {missing} parts never stored")]
    Unfinished {
        /// How many parts were not stored.
        missing: u32,
    },
}

/// What a worker of a high-level upload does next (see [`UploadRun::next_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum NextStep {
    /// Send this part, then report with [`UploadRun::handle_part_result`].
    Send(PartJob),
    /// Nothing to send now: wait until another worker reports, or until the given time
    /// (unix milliseconds), when a retry is due.
    Wait(Option<u64>),
    /// The parts are over (all stored, or the upload gives up): the worker stops.
    Stop,
}

/// The parts phase of one high-level upload as all of the adapter's workers share it
/// (behind the adapter's lock): the [`UploadSession`] and the first reason to give up. It
/// turns each part attempt's result into the session's update or the abort cause, so both
/// adapters decide alike; they only send, sleep, and read the clock.
///
/// ```text
///   next_step(now) ─┬─ Send(job) ─▶ (adapter sends) ─▶ handle_part_result(job, result, now, jitter)
///                   │                                     ├─ stored ─────────────▶ the part is done
///                   │                                     ├─ retryable ──────────▶ a retry is scheduled
///                   │                                     └─ failed for good ────▶ the abort cause
///                   ├─ Wait(until) ─▶ sleep until then, or until another worker reports
///                   └─ Stop ─▶ (every worker stopped) ─▶ complete_request(md5) ─▶ Ok(request) | Err(cause)
/// ```
///
/// Causes only the adapter sees (the caller's stop, a source that cannot be hashed, a
/// snapshot that cannot be written) go in through [`abort`](Self::abort); the first cause
/// wins.
#[derive(Debug)]
pub(crate) struct UploadRun<E> {
    session: UploadSession,
    abort: Option<AbortCause<E>>,
}

impl<E> UploadRun<E> {
    /// The parts phase of `session`; its deadline bounds the run.
    pub fn new(session: UploadSession) -> Self {
        Self {
            session,
            abort: None,
        }
    }

    /// The session, for its snapshot, progress and missing parts.
    pub fn session(&self) -> &UploadSession {
        &self.session
    }

    /// Gives up for `cause`, unless the run gave up already (the first cause wins): no part
    /// is handed out any more.
    pub fn abort(&mut self, cause: AbortCause<E>) {
        self.abort.get_or_insert(cause);
    }

    /// Whether the run gives up.
    pub fn is_aborted(&self) -> bool {
        self.abort.is_some()
    }

    /// What a worker does next at `now_unix_ms`. Once the deadline has come the run gives
    /// up with [`AbortCause::Deadline`].
    pub fn next_step(&mut self, now_unix_ms: u64) -> NextStep {
        if self.abort.is_some() || self.session.is_done() {
            return NextStep::Stop;
        }
        if self
            .session
            .deadline_unix_ms()
            .is_some_and(|deadline| now_unix_ms >= deadline)
        {
            self.abort(AbortCause::Deadline);
            return NextStep::Stop;
        }
        match self.session.next_job(now_unix_ms) {
            Some(job) => NextStep::Send(job),
            None => NextStep::Wait(self.session.next_wakeup()),
        }
    }

    /// Reports that `bytes` more bytes of part `index` went out.
    pub fn handle_bytes_sent(&mut self, index: u32, bytes: u64) {
        self.session.handle_bytes_sent(index, bytes);
    }

    /// Reports how sending `job` ended at `now_unix_ms`; returns whether the part is stored.
    ///
    /// A stored part is recorded even after the run gave up (a snapshot keeps it). A failure
    /// after the run gave up changes nothing. Otherwise a failure becomes, in this order:
    /// * [`AbortCause::Source`] when the data could not be read;
    /// * [`AbortCause::Deadline`] when the deadline has come (the attempt was likely cut
    ///   short by it);
    /// * [`AbortCause::Part`] with [`GiveUpReason::CannotSend`] when the request cannot be
    ///   built, which no retry fixes;
    /// * else the session's decision with the caller's `jitter` in `[0, 1)`: a retry
    ///   scheduled, or [`AbortCause::Part`] with the policy's reason.
    pub fn handle_part_result(
        &mut self,
        job: PartJob,
        result: Result<PartId, RequestError<E>>,
        now_unix_ms: u64,
        jitter: f64,
    ) -> bool {
        let error = match result {
            Ok(part_id) => {
                self.session.handle_part_done(job.index, part_id);
                return true;
            }
            Err(error) => error,
        };
        if self.abort.is_some() {
            return false;
        }
        let deadline_passed = self
            .session
            .deadline_unix_ms()
            .is_some_and(|deadline| now_unix_ms >= deadline);
        let cause = match error {
            RequestError::Source(error) => Some(AbortCause::Source(error)),
            _ if deadline_passed => Some(AbortCause::Deadline),
            error => {
                let reason = match error.as_failure(now_unix_ms) {
                    None => Some(GiveUpReason::CannotSend),
                    Some(failure) => match self.session.handle_part_failed(
                        job.index,
                        failure,
                        now_unix_ms,
                        jitter,
                    ) {
                        Some(RetryDecision::GiveUp(reason)) => Some(reason),
                        Some(RetryDecision::RetryAt { .. }) | None => None,
                    },
                };
                reason.map(|reason| AbortCause::Part {
                    part: job.index,
                    reason,
                    error,
                })
            }
        };
        if let Some(cause) = cause {
            self.abort(cause);
        }
        false
    }

    /// The next progress event, oldest first; the adapter MUST drain them.
    pub fn poll_event(&mut self) -> Option<ProgressEvent> {
        self.session.poll_event()
    }

    /// Once every worker stopped: the complete request (part ids in file order, and the md5
    /// if given), or why the upload gives up. The abort cause is taken out.
    pub fn complete_request(
        &mut self,
        md5_hex: Option<String>,
    ) -> Result<CompleteUploadRequest, AbortCause<E>> {
        if let Some(cause) = self.abort.take() {
            return Err(cause);
        }
        self.session
            .complete_request(md5_hex)
            .ok_or_else(|| AbortCause::Unfinished {
                missing: u32::try_from(self.session.missing_parts().count()).unwrap_or(u32::MAX),
            })
    }
}

/// The fingerprint of a source file that a snapshot records, so a resume refuses a file that
/// changed: its path, its length and its modification time (nanoseconds since the epoch, if
/// the platform has one). Both adapters compute it this way, so either can resume the other's
/// snapshot.
pub fn source_fingerprint(path: &str, len: u64, modified_unix_nanos: Option<u128>) -> String {
    match modified_unix_nanos {
        Some(modified) => format!("{len}:{modified}:{path}"),
        None => format!("{len}:-:{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::check_response_head;
    use crate::limits::GIB;
    use crate::types::{Upload, UploadStatus};
    use http::{HeaderMap, StatusCode};
    use proptest::prelude::*;

    const NOW: u64 = 1_719_184_912_000;
    const EXPIRES_AT: u64 = 1_719_188_511;

    type Error = RequestError<std::io::Error>;

    /// A pending Upload of `bytes` bytes, as create returns it.
    fn upload(bytes: u64) -> Upload {
        Upload {
            id: UploadId::new("upload_abc123"),
            object: "upload".to_owned(),
            bytes,
            created_at: EXPIRES_AT - 3600,
            filename: "train.jsonl".to_owned(),
            purpose: Purpose::FineTune,
            status: UploadStatus::Pending,
            expires_at: EXPIRES_AT,
            file: None,
        }
    }

    /// A run of `parts` parts of 4 bytes, retried twice at most, 1 ms apart.
    fn started(parts: u64, deadline: Option<u64>) -> UploadRun<std::io::Error> {
        let plan = PartPlan::new(parts * 4, 4, &Limits::default()).unwrap();
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 1,
            max_backoff_ms: 1,
            max_retry_after_ms: 1,
        };
        UploadRun::new(UploadSession::new(
            upload(parts * 4),
            plan,
            policy,
            deadline,
        ))
    }

    fn send(run: &mut UploadRun<std::io::Error>, now: u64) -> PartJob {
        match run.next_step(now) {
            NextStep::Send(job) => job,
            other => panic!("expected a part to send, got {other:?}"),
        }
    }

    fn status(status: StatusCode) -> Error {
        let head = check_response_head(status, &HeaderMap::new()).unwrap_err();
        RequestError::Response(head.with_body(b"{}").into())
    }

    fn id(index: u32) -> PartId {
        PartId::new(format!("part_{index}"))
    }

    #[test]
    fn a_run_retries_a_part_then_completes_with_the_ids_in_file_order() {
        let mut run = started(2, None);
        let first = send(&mut run, NOW);
        let second = send(&mut run, NOW);
        assert_eq!(run.next_step(NOW), NextStep::Wait(None));
        assert!(run.handle_part_result(second, Ok(id(1)), NOW, 0.0));
        let reset = RequestError::Transport(std::io::Error::other("reset"));
        assert!(!run.handle_part_result(first, Err(reset), NOW, 0.0));
        assert_eq!(run.next_step(NOW), NextStep::Wait(Some(NOW + 1)));
        let retry = send(&mut run, NOW + 1);
        assert_eq!((retry.index, retry.attempt), (0, 2));
        assert!(run.handle_part_result(retry, Ok(id(0)), NOW + 2, 0.0));
        assert_eq!(run.next_step(NOW + 2), NextStep::Stop);
        let complete = run.complete_request(Some("md5".into())).unwrap();
        assert_eq!(complete.part_ids, [id(0), id(1)]);
        assert_eq!(complete.md5.as_deref(), Some("md5"));
    }

    #[test]
    fn a_part_that_fails_for_good_is_the_abort_cause() {
        let mut run = started(2, None);
        let job = send(&mut run, NOW);
        assert!(!run.handle_part_result(job, Err(status(StatusCode::BAD_REQUEST)), NOW, 0.0));
        assert_eq!(run.next_step(NOW), NextStep::Stop);
        let cause = run.complete_request(None).unwrap_err();
        assert!(
            matches!(
                &cause,
                AbortCause::Part { part: 0, reason: GiveUpReason::NotRetryable { status: 400 }, error }
                    if error.api_error().is_some()
            ),
            "{cause:?}"
        );

        let mut run = started(1, None);
        let job = send(&mut run, NOW);
        run.handle_part_result(
            job,
            Err(RequestError::Timeout(Duration::from_secs(1))),
            NOW,
            0.0,
        );
        let retry = send(&mut run, NOW + 1);
        run.handle_part_result(
            retry,
            Err(RequestError::Timeout(Duration::from_secs(1))),
            NOW + 1,
            0.0,
        );
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Part {
                reason: GiveUpReason::AttemptsExhausted { attempts: 2 },
                ..
            })
        ));
    }

    #[test]
    fn a_request_that_cannot_be_built_says_so_and_is_not_retried() {
        let mut run = started(1, None);
        let job = send(&mut run, NOW);
        let unbuildable = RequestError::Build(BuildError::EmptyId { param: "upload_id" });
        run.handle_part_result(job, Err(unbuildable), NOW, 0.0);
        assert_eq!(run.session().progress().retries, 0);
        let cause = run.complete_request(None).unwrap_err();
        assert!(
            matches!(
                cause,
                AbortCause::Part {
                    part: 0,
                    reason: GiveUpReason::CannotSend,
                    error: RequestError::Build(_)
                }
            ),
            "{cause:?}"
        );
    }

    #[test]
    fn an_unreadable_source_and_the_deadline_are_their_own_causes() {
        let mut run = started(2, None);
        let job = send(&mut run, NOW);
        let short = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        run.handle_part_result(job, Err(RequestError::Source(short)), NOW, 0.0);
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Source(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof
        ));

        // A failure once the deadline has come: the attempt was cut short by it.
        let mut run = started(2, Some(NOW + 10));
        let job = send(&mut run, NOW);
        run.handle_part_result(
            job,
            Err(RequestError::Timeout(Duration::from_millis(10))),
            NOW + 10,
            0.0,
        );
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Deadline)
        ));

        // No worker starts a part once it has come.
        let mut run = started(2, Some(NOW + 10));
        assert_eq!(run.next_step(NOW + 10), NextStep::Stop);
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Deadline)
        ));
    }

    #[test]
    fn the_first_cause_wins_and_parts_stored_after_it_still_count() {
        let mut run = started(2, None);
        let first = send(&mut run, NOW);
        let second = send(&mut run, NOW);
        run.abort(AbortCause::Interrupted);
        run.abort(AbortCause::Deadline);
        assert!(run.is_aborted());
        assert_eq!(run.next_step(NOW), NextStep::Stop);
        assert!(!run.handle_part_result(first, Err(status(StatusCode::BAD_REQUEST)), NOW, 0.0));
        assert!(run.handle_part_result(second, Ok(id(1)), NOW, 0.0));
        assert_eq!(run.session().snapshot().part_ids, [None, Some(id(1))]);
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Interrupted)
        ));
    }

    #[test]
    fn workers_stopped_short_without_a_cause_are_reported_not_completed() {
        let mut run = started(3, None);
        let job = send(&mut run, NOW);
        run.handle_part_result(job, Ok(id(0)), NOW, 0.0);
        assert!(matches!(
            run.complete_request(None),
            Err(AbortCause::Unfinished { missing: 2 })
        ));
    }

    #[test]
    fn the_deadline_counts_from_now_and_saturates() {
        let options = UploadOptions::new(Purpose::Batch);
        assert_eq!(options.deadline_unix_ms(NOW), None);
        let options = options.deadline(Duration::from_secs(2));
        assert_eq!(options.deadline_unix_ms(NOW), Some(NOW + 2_000));
        assert_eq!(options.deadline_unix_ms(u64::MAX - 1), Some(u64::MAX));
    }

    #[test]
    fn a_resume_checks_the_source_and_the_options_before_any_request() {
        let plan = PartPlan::new(8, 4, &Limits::default()).unwrap();
        let session = UploadSession::new(upload(8), plan, RetryPolicy::default(), None)
            .with_source("8:5:/data/a.jsonl");
        let snapshot = session.snapshot();
        let options = UploadOptions::new(Purpose::FineTune).deadline(Duration::from_secs(1));

        let resumed = options
            .prepare_resume::<std::io::Error>(snapshot.clone(), 8, "8:5:/data/a.jsonl", NOW)
            .unwrap();
        assert_eq!(resumed.missing_parts().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(resumed.deadline_unix_ms(), Some(NOW + 1_000));
        assert_eq!(resumed.source(), Some("8:5:/data/a.jsonl"));

        let touched = options
            .prepare_resume::<std::io::Error>(snapshot.clone(), 8, "8:6:/data/a.jsonl", NOW)
            .unwrap_err();
        assert!(
            matches!(&touched, UploadError::SourceChanged { expected, found }
                if expected == "8:5:/data/a.jsonl" && found == "8:6:/data/a.jsonl"),
            "{touched:?}"
        );

        // A snapshot of an upload from a reader has no fingerprint: only the length counts.
        let unfingerprinted = SessionSnapshot {
            source: None,
            ..snapshot.clone()
        };
        assert!(
            options
                .prepare_resume::<std::io::Error>(unfingerprinted.clone(), 8, "any", NOW)
                .is_ok()
        );
        let shorter = options
            .prepare_resume::<std::io::Error>(unfingerprinted, 7, "7:1:/b", NOW)
            .unwrap_err();
        assert!(
            matches!(&shorter, UploadError::SourceChanged { expected, .. } if expected == "8 bytes"),
            "{shorter:?}"
        );

        let expired = options
            .prepare_resume::<std::io::Error>(
                snapshot.clone(),
                8,
                "8:5:/data/a.jsonl",
                EXPIRES_AT * 1000,
            )
            .unwrap_err();
        assert!(matches!(
            expired,
            UploadError::Resume(ResumeError::Expired { .. })
        ));
        let idle = options.concurrency(0);
        assert!(matches!(
            idle.prepare_resume::<std::io::Error>(snapshot, 8, "8:5:/data/a.jsonl", NOW),
            Err(UploadError::Options(OptionsError::ZeroConcurrency))
        ));
    }

    #[test]
    fn a_snapshot_source_loads_through_the_callers_reader() {
        let plan = PartPlan::new(8, 4, &Limits::default()).unwrap();
        let snapshot = UploadSession::new(upload(8), plan, RetryPolicy::default(), None).snapshot();

        let (read, path) = SnapshotSource::from(snapshot.clone())
            .load(|_| panic!("nothing to read"))
            .unwrap();
        assert_eq!((read, path), (snapshot.clone(), None));

        let json = snapshot.to_json();
        let (read, path) = SnapshotSource::from(Path::new("/tmp/a.upload"))
            .load(|path| {
                assert_eq!(path, Path::new("/tmp/a.upload"));
                Ok(json.clone())
            })
            .unwrap();
        assert_eq!(
            (read, path),
            (snapshot, Some(PathBuf::from("/tmp/a.upload")))
        );

        let missing = SnapshotSource::from(PathBuf::from("/tmp/gone.upload"))
            .load(|_| Err(std::io::ErrorKind::NotFound.into()))
            .unwrap_err();
        assert!(
            matches!(&missing, ResumeError::Malformed { message } if message.starts_with("cannot read /tmp/gone.upload: ")),
            "{missing:?}"
        );
    }

    /// What one worker's attempt ends with in the property test.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Stored,
        Retryable,
        Refused,
        Unbuildable,
        Unreadable,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            4 => Just(Outcome::Stored),
            3 => Just(Outcome::Retryable),
            1 => Just(Outcome::Refused),
            1 => Just(Outcome::Unbuildable),
            1 => Just(Outcome::Unreadable),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_run_completes_exactly_when_every_part_was_stored_and_nothing_gave_up(
            parts in 1_u64..6,
            outcomes in proptest::collection::vec(outcome(), 1..40),
        ) {
            let mut run = started(parts, None);
            let mut now = NOW;
            let mut first_cause = None;
            for outcome in outcomes {
                now += 1;
                let NextStep::Send(job) = run.next_step(now) else { break };
                let result = match outcome {
                    Outcome::Stored => Ok(id(job.index)),
                    Outcome::Retryable => Err(RequestError::Timeout(Duration::from_secs(1))),
                    Outcome::Refused => Err(status(StatusCode::BAD_REQUEST)),
                    Outcome::Unbuildable => Err(RequestError::Build(BuildError::EmptyId { param: "upload_id" })),
                    Outcome::Unreadable => Err(RequestError::Source(std::io::ErrorKind::UnexpectedEof.into())),
                };
                let stored = run.handle_part_result(job, result, now, 0.5);
                prop_assert_eq!(stored, matches!(outcome, Outcome::Stored));
                if first_cause.is_none() && run.is_aborted() {
                    first_cause = Some(outcome);
                }
            }
            let all_stored = run.session().missing_parts().next().is_none();
            match run.complete_request(None) {
                Ok(complete) => {
                    prop_assert!(first_cause.is_none());
                    prop_assert!(all_stored);
                    let expected: Vec<PartId> = (0..).map(id).take(parts as usize).collect();
                    prop_assert_eq!(complete.part_ids, expected);
                }
                Err(AbortCause::Unfinished { missing }) => {
                    prop_assert!(first_cause.is_none());
                    prop_assert!(missing > 0);
                }
                Err(cause) => {
                    let matches_first = matches!(
                        (&cause, first_cause),
                        (AbortCause::Part { reason: GiveUpReason::AttemptsExhausted { .. }, .. }, Some(Outcome::Retryable))
                            | (AbortCause::Part { reason: GiveUpReason::NotRetryable { status: 400 }, .. }, Some(Outcome::Refused))
                            | (AbortCause::Part { reason: GiveUpReason::CannotSend, .. }, Some(Outcome::Unbuildable))
                            | (AbortCause::Source(_), Some(Outcome::Unreadable))
                    );
                    prop_assert!(matches_first, "{:?} after {:?}", cause, first_cause);
                }
            }
        }
    }

    #[test]
    fn prepare_guesses_the_mime_type_and_checks_everything_before_any_request() {
        let options = UploadOptions::new(Purpose::FineTune).part_size(4);
        let (request, plan) = options.prepare("train.jsonl", 10).unwrap();
        assert_eq!(request.mime_type, "text/jsonl");
        assert_eq!(request.filename, "train.jsonl");
        assert_eq!(request.bytes, 10);
        assert_eq!(plan.count(), 3);

        let named = UploadOptions::new(Purpose::Assistants).filename("notes.md");
        assert_eq!(
            named.prepare("ignored.bin", 1).unwrap().0.mime_type,
            "text/markdown"
        );

        let cases: Vec<(UploadOptions, OptionsError)> = vec![
            (
                UploadOptions::new(Purpose::FineTune).concurrency(0),
                OptionsError::ZeroConcurrency,
            ),
            (
                UploadOptions::new(Purpose::FineTune),
                OptionsError::UnknownMimeType {
                    filename: "data.bin".into(),
                },
            ),
            (
                UploadOptions::new(Purpose::FineTune)
                    .part_size(65 * MIB)
                    .mime_type("text/jsonl"),
                OptionsError::Plan(PlanError::PartTooLarge {
                    part_size: 65 * MIB,
                    max: 64 * MIB,
                }),
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(options.prepare("data.bin", 10).unwrap_err(), expected);
        }
        let refused = UploadOptions::new(Purpose::Vision)
            .prepare("doc.pdf", 1)
            .unwrap_err();
        assert!(
            matches!(&refused, OptionsError::Refused { param: Some(param), message }
                if param == "mime_type" && message.starts_with("Invalid MIME type 'application/pdf'")),
            "{refused:?}"
        );
        let too_big = UploadOptions::new(Purpose::Batch)
            .prepare("a.jsonl", 9 * GIB)
            .unwrap_err();
        assert!(matches!(
            too_big,
            OptionsError::Plan(PlanError::FileTooLarge { .. })
        ));
        let expiry = UploadOptions::new(Purpose::Batch)
            .expires_after(ExpiresAfter::after_creation(10))
            .prepare("a.jsonl", 1)
            .unwrap_err();
        assert_eq!(
            expiry,
            OptionsError::Refused {
                param: Some("expires_after.seconds".into()),
                message: "10 is less than the minimum of 3600 - 'expires_after.seconds'".into()
            }
        );
    }

    #[test]
    fn the_default_part_size_keeps_every_connection_busy_within_the_limits() {
        let limits = Limits::default();
        // Four rounds per connection, in whole MiB.
        assert_eq!(default_part_size(512 * MIB, 4, &limits), 32 * MIB);
        assert_eq!(default_part_size(512 * MIB + 1, 4, &limits), 33 * MIB);
        assert_eq!(default_part_size(1024 * MIB, 16, &limits), 16 * MIB);
        // The floor for small files, and an empty one.
        assert_eq!(default_part_size(1, 4, &limits), MIN_DEFAULT_PART_SIZE);
        assert_eq!(default_part_size(0, 4, &limits), MIN_DEFAULT_PART_SIZE);
        // The ceiling is the service's part limit.
        let small_parts = Limits {
            max_part_bytes: 4 * MIB,
            ..Limits::default()
        };
        assert_eq!(default_part_size(GIB, 1, &small_parts), 4 * MIB);
        // Never more than 10,000 parts, even past the part limit's ceiling.
        let huge = Limits {
            max_part_bytes: MIB,
            max_upload_bytes: 100 * GIB,
            ..Limits::default()
        };
        let size = default_part_size(20 * GIB, 64, &huge);
        assert!(20 * GIB / size <= DEFAULT_MAX_PARTS, "{size}");
        // A concurrency of 0 is refused by prepare; here it counts as 1.
        assert_eq!(default_part_size(128 * MIB, 0, &limits), 32 * MIB);
    }

    proptest! {
        #[test]
        fn the_default_part_size_always_makes_a_valid_plan(
            file_size in 0_u64..=8 * GIB,
            concurrency in 1_usize..64,
        ) {
            let limits = Limits::default();
            let size = default_part_size(file_size, concurrency, &limits);
            let plan = PartPlan::new(file_size, size, &limits).unwrap();
            prop_assert!(u64::from(plan.count()) <= DEFAULT_MAX_PARTS);
            prop_assert!((MIN_DEFAULT_PART_SIZE..=limits.max_part_bytes).contains(&size));
        }
    }

    #[test]
    fn explicit_part_sizes_win_over_the_default() {
        let (_, plan) = UploadOptions::new(Purpose::Batch)
            .prepare("a.jsonl", 256 * MIB)
            .unwrap();
        assert_eq!(plan.part_size(), 8 * MIB, "8 in flight: 32 parts");
        let (_, plan) = UploadOptions::new(Purpose::Batch)
            .concurrency(4)
            .prepare("a.jsonl", 256 * MIB)
            .unwrap();
        assert_eq!(plan.part_size(), 16 * MIB);
        let (_, plan) = UploadOptions::new(Purpose::Batch)
            .part_size(64 * MIB)
            .prepare("a.jsonl", 256 * MIB)
            .unwrap();
        assert_eq!(plan.count(), 4);
    }

    #[test]
    fn a_refused_connection_keeps_its_address_and_is_final_on_this_machine() {
        let refused = |address: &str| -> RequestError<std::io::Error> {
            RequestError::Connect {
                address: address.to_owned(),
                kind: ConnectFailure::Refused,
                source: std::io::ErrorKind::ConnectionRefused.into(),
            }
        };
        assert_eq!(
            refused("127.0.0.1:18099").to_string(),
            "cannot connect to 127.0.0.1:18099 (connection refused)"
        );
        for local in [
            "127.0.0.1:18099",
            "127.1.2.3:80",
            "[::1]:8000",
            "localhost:8000",
            "LOCALHOST",
        ] {
            assert_eq!(
                refused(local).as_failure(0),
                Some(Failure::Refused { loopback: true }),
                "{local}"
            );
        }
        for remote in ["api.openai.com:443", "10.0.0.1:80", "[2001:db8::1]:443"] {
            assert_eq!(
                refused(remote).as_failure(0),
                Some(Failure::Refused { loopback: false }),
                "{remote}"
            );
        }
        let timed_out: RequestError<std::io::Error> = RequestError::Connect {
            address: "10.0.0.1:443".into(),
            kind: ConnectFailure::TimedOut,
            source: std::io::ErrorKind::TimedOut.into(),
        };
        assert_eq!(timed_out.as_failure(0), Some(Failure::Timeout));
    }

    #[test]
    fn messages_leave_their_cause_to_the_chain() {
        let error: UploadError<std::io::Error> = UploadError::Aborted {
            upload_id: UploadId::new("upload_1"),
            cancelled: true,
            cause: Box::new(AbortCause::Part {
                part: 3,
                reason: GiveUpReason::AttemptsExhausted { attempts: 5 },
                error: RequestError::Transport(std::io::Error::other("reset by peer")),
            }),
        };
        assert_eq!(error.to_string(), "upload upload_1 failed (cancelled)");
        assert_eq!(
            error_chain(&error),
            "upload upload_1 failed (cancelled): part 3 gave up (attempts exhausted after 5): transport error: reset by peer"
        );
    }

    #[test]
    fn request_errors_map_to_retry_failures() {
        let timeout: RequestError<std::io::Error> = RequestError::Timeout(Duration::from_secs(1));
        assert_eq!(timeout.as_failure(0), Some(Failure::Timeout));
        let transport: RequestError<std::io::Error> =
            RequestError::Transport(std::io::Error::other("reset"));
        assert_eq!(transport.as_failure(0), Some(Failure::Connection));
        let build: RequestError<std::io::Error> =
            RequestError::Build(BuildError::EmptyId { param: "upload_id" });
        assert_eq!(build.as_failure(0), None);
    }

    #[test]
    fn fingerprints_name_length_time_and_path() {
        assert_eq!(
            source_fingerprint("/data/a.jsonl", 10, Some(5)),
            "10:5:/data/a.jsonl"
        );
        assert_eq!(source_fingerprint("a", 0, None), "0:-:a");
    }
}
