//! What every adapter's high-level upload shares, so the async and the blocking clients are
//! the same product with different transports: the options of `upload_file`, their checks
//! before any request, the error of one request ([`RequestError`]) and of a whole upload
//! ([`UploadError`]), each generic over the adapter's transport error, and the fingerprint that
//! ties a resume snapshot to its source.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ApiError, BuildError, ResponseError};
use crate::limits::{Limits, MIB, mime_type_for_filename};
use crate::retry::{Failure, GiveUpReason, RetryPolicy};
use crate::session::{PartPlan, PlanError, ProgressEvent, ResumeError};
use crate::types::{CreateUploadRequest, ExpiresAfter, Purpose, UploadId};

/// Receives progress events; called from whichever task or thread made progress.
pub type ProgressCallback = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Options of a high-level upload. [`UploadOptions::new`] gives the defaults: 64 MiB parts,
/// 4 in flight, md5 on, cancel on failure, OpenAI's limits and the SDKs' retry policy.
#[derive(Clone)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The File's purpose.
    pub purpose: Purpose,
    /// The File's name; by default the source's file name.
    pub filename: Option<String>,
    /// The MIME type; by default guessed from the filename's extension.
    pub mime_type: Option<String>,
    /// Bytes per Part (the last may be shorter); at most `limits.max_part_bytes`.
    pub part_size: u64,
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

/// The default part size: 64 MiB, what the official SDKs send.
pub const DEFAULT_PART_SIZE: u64 = 64 * MIB;
/// The default number of parts in flight.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl UploadOptions {
    /// The defaults for a File of `purpose`.
    pub fn new(purpose: Purpose) -> Self {
        Self {
            purpose,
            filename: None,
            mime_type: None,
            part_size: DEFAULT_PART_SIZE,
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

    /// Sets the part size.
    #[must_use]
    pub fn part_size(mut self, part_size: u64) -> Self {
        self.part_size = part_size;
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
        let plan = PartPlan::new(size, self.part_size, &self.limits).map_err(OptionsError::Plan)?;
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
            .map_err(|problem| OptionsError::Refused(problem.message))?;
        if let Some(expires_after) = &self.expires_after {
            self.limits
                .check_expires_after(expires_after)
                .map_err(|problem| OptionsError::Refused(problem.message))?;
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

    /// Sends a progress event to the callback, if there is one.
    pub fn report(&self, event: &ProgressEvent) {
        if let Some(callback) = &self.progress {
            callback(event);
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
    /// The service would refuse the request; the message is the service's.
    #[error("{0}")]
    Refused(String),
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
    /// The request or its response failed on the way.
    #[error("transport error: {0}")]
    Transport(#[source] E),
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

    /// How the retry policy sees this error; `None` for an error no retry can fix.
    pub fn as_failure(&self, now_unix_ms: u64) -> Option<Failure> {
        match self {
            Self::Build(_) => None,
            Self::Response(ResponseError::Api(api)) => Some(Failure::from_response(
                api.status,
                &api.headers,
                now_unix_ms,
            )),
            // A 2xx whose body does not parse is most often a response cut short.
            Self::Response(_) | Self::Transport(_) => Some(Failure::Connection),
            Self::Timeout(_) => Some(Failure::Timeout),
        }
    }
}

/// Why a high-level upload failed. `E` is the adapter's transport error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError<E> {
    /// The options were refused before any request.
    #[error("invalid upload options: {0}")]
    Options(#[from] OptionsError),
    /// The source could not be read (before the Upload was created).
    #[error("cannot read the source: {0}")]
    Source(#[source] std::io::Error),
    /// The snapshot cannot be resumed.
    #[error("cannot resume: {0}")]
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
    #[error("creating the Upload failed: {0}")]
    Create(#[source] RequestError<E>),
    /// The Upload was created but the upload gave up; `cancelled` says whether the Upload was
    /// cancelled (otherwise it can be resumed from the snapshot until it expires).
    #[error("upload {upload_id} failed ({}): {cause}", if *.cancelled { "cancelled" } else { "kept for resume" })]
    Aborted {
        /// The Upload that was created.
        upload_id: UploadId,
        /// Whether the Upload was cancelled.
        cancelled: bool,
        /// What went wrong.
        #[source]
        cause: AbortCause<E>,
    },
}

/// What made an upload give up after its Upload was created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AbortCause<E> {
    /// A part failed for good.
    #[error("part {part} gave up ({reason}): {error}")]
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
    #[error("complete failed: {0}")]
    Complete(#[source] RequestError<E>),
    /// The source could not be read.
    #[error("reading the source failed: {0}")]
    Source(#[source] std::io::Error),
    /// The snapshot could not be written.
    #[error("writing the snapshot failed: {0}")]
    Snapshot(#[source] std::io::Error),
    /// The deadline passed.
    #[error("the deadline passed")]
    Deadline,
    /// The caller stopped the upload.
    #[error("interrupted")]
    Interrupted,
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
    use crate::limits::GIB;

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
            matches!(&refused, OptionsError::Refused(message) if message.starts_with("Invalid MIME type 'application/pdf'")),
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
            OptionsError::Refused(
                "10 is less than the minimum of 3600 - 'expires_after.seconds'".into()
            )
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
