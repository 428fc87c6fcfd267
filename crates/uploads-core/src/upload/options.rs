//! The options of a high-level upload and their checks before any request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::OptionsError;
use crate::limits::{Limits, MIB, mime_type_for_filename};
use crate::retry::RetryPolicy;
use crate::types::{CreateUploadRequest, ExpiresAfter, Purpose};
use crate::uploader::{PartPlan, ProgressEvent};

/// Receives progress events; called from whichever task or thread made progress.
pub type ProgressCallback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Options of a high-level upload. [`UploadOptions::new`] gives the defaults: parts sized to
/// the file ([`default_part_size`]), [`DEFAULT_CONCURRENCY`] (8) in flight, md5 on, cancel on
/// failure, a stall timeout of [`DEFAULT_STALL_TIMEOUT`], OpenAI's limits and the SDKs' retry
/// policy.
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
    /// (the default) cuts parts as the upload goes when `adaptive` is on (see
    /// [`PartPlan`]), and lets [`default_part_size`] choose from the file's size and the
    /// concurrency when it is off.
    pub part_size: Option<u64>,
    /// Parts in flight at once: exactly this many when `adaptive` is off, at most this many
    /// when it is on.
    pub concurrency: usize,
    /// Let the uploader choose the parts in flight, up to `concurrency`, from the goodput it
    /// measures and the service's throttling answers (see
    /// [the uploader's concurrency](crate::uploader#parts-in-flight)). On by default;
    /// [`concurrency`](Self::concurrency) turns it off.
    pub adaptive: bool,
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
    /// How long a request may move no bytes and get no answer before it has stalled: it
    /// then fails like a timeout and is retried (see the
    /// [uploader's stall rule](crate::uploader#the-driver-contract)).
    pub stall_timeout: Duration,
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
            .field("adaptive", &self.adaptive)
            .field("md5", &self.md5)
            .field("cancel_on_failure", &self.cancel_on_failure)
            .field("expires_after", &self.expires_after)
            .field("retry", &self.retry)
            .field("deadline", &self.deadline)
            .field("stall_timeout", &self.stall_timeout)
            .field("snapshot_path", &self.snapshot_path)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish_non_exhaustive()
    }
}

/// The smallest part [`default_part_size`] chooses: below this, the cost of a request
/// (a round trip, a multipart head, the service's bookkeeping) starts to show.
pub const MIN_DEFAULT_PART_SIZE: u64 = 8 * MIB;
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
/// `limits.max_parts_per_upload` parts.
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
    let few_enough = file_size.div_ceil(limits.max_parts_per_upload.max(1));
    whole_mib
        .max(MIN_DEFAULT_PART_SIZE)
        .min(limits.max_part_bytes)
        .max(few_enough)
        .max(1)
}
/// The parts in flight an adaptive upload starts with (and the fixed default of earlier
/// versions). Through a link that caps each connection (the usual case across the
/// internet), the rate grows with the connections in use: measured through 5 MB/s per
/// connection and 50 ms RTT, 4 in flight gave 3.5x the official SDK and 8 gave 6.4-6.6x
/// (docs/BENCHMARKS.md).
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The most parts in flight an adaptive upload goes to by default: the memory bound. The
/// drivers stream each part from the file a buffer at a time, so a part in flight costs a
/// few MiB at most; the bench measures the clients' peak RSS at this many
/// (docs/BENCHMARKS.md).
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
/// How long a request may stay silent (no byte moved, no answer) by default before it has
/// stalled: a minute, as long as a 64 MiB part takes at 1 MB/s, and far longer than any
/// service takes to answer a part it has received.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_mins(1);

impl UploadOptions {
    /// The defaults for a File of `purpose`.
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            filename: None,
            mime_type: None,
            part_size: None,
            concurrency: DEFAULT_MAX_CONCURRENCY,
            adaptive: true,
            md5: true,
            cancel_on_failure: true,
            expires_after: None,
            retry: RetryPolicy::default(),
            deadline: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
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

    /// Fixes how many parts are in flight at once (the uploader no longer adapts it).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self.adaptive = false;
        self
    }

    /// Lets the uploader adapt the parts in flight (as by default), up to `max`.
    #[must_use]
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.concurrency = max;
        self.adaptive = true;
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

    /// Sets how long a request may move no bytes and get no answer before it has stalled.
    #[must_use]
    pub fn stall_timeout(mut self, stall_timeout: Duration) -> Self {
        self.stall_timeout = stall_timeout;
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
        self.check()?;
        let plan = match self.part_size {
            Some(part_size) => PartPlan::new(size, part_size, &self.limits),
            // Parts cut as the upload goes follow the parts in flight as they change.
            None if self.adaptive => PartPlan::adaptive(size, &self.limits),
            None => PartPlan::new(
                size,
                default_part_size(size, self.concurrency, &self.limits),
                &self.limits,
            ),
        }
        .map_err(OptionsError::Plan)?;
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

    /// Checks the options that do not depend on the source, before any request.
    pub fn check(&self) -> Result<(), OptionsError> {
        if self.concurrency == 0 {
            return Err(OptionsError::ZeroConcurrency);
        }
        if self.stall_timeout.is_zero() {
            return Err(OptionsError::ZeroStallTimeout);
        }
        Ok(())
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
