//! Why an upload was refused or gave up.

use super::RequestError;
use crate::retry::GiveUpReason;
use crate::types::UploadId;
use crate::uploader::{PlanError, ResumeError};

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
    /// `stall_timeout` is 0.
    #[error("the stall timeout must be longer than 0")]
    ZeroStallTimeout,
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

impl OptionsError {
    pub(crate) fn refused(problem: crate::limits::FieldError) -> Self {
        Self::Refused {
            param: problem.param,
            message: problem.message,
        }
    }
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
    /// [`UploadOptions::cancel_on_failure`](super::UploadOptions::cancel_on_failure) says.
    #[error("interrupted")]
    Interrupted,
}
