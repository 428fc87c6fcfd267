//! Async client for OpenAI's multipart Uploads API (and the Files endpoints), on hyper 1 and
//! tokio.
//!
//! It uploads large files fast, safely and resumably: [`Client::upload_file`] sends parts in
//! parallel, each streamed from disk by offset so memory does not grow with the part or the
//! file, computes the md5 on the way, retries each part on its own (honouring
//! `Retry-After`), cancels the Upload when it gives up, reports progress, and writes a
//! snapshot after each part that [`Client::resume_upload`] continues from. Every operation
//! also has a low-level call ([`Client::create_upload`], [`Client::add_upload_part`], ...).
//!
//! All protocol decisions come from [`uploads_core`]'s `Uploader` (retries, the stall rule,
//! give-up and cancel, snapshots) and its driver kit (requests and their answers); this crate
//! only does I/O: it reads the clock and random bytes, reads the file, sends requests, waits
//! for their answers, and writes snapshots. A [`StopSignal`] (the same type in both clients)
//! stops an upload and keeps the Upload for a resume, or cancels it.
//!
//! What it is not: a general OpenAI SDK (only Uploads and Files), nor a blocking client (see
//! `uploads-ureq`, which has the same names and semantics). It needs a tokio runtime; use
//! the multi-threaded one for parts to be sent and read on more than one core.
//!
//! https goes through rustls with the ring provider and Mozilla's roots (webpki-roots), and
//! beside them a team's own CA when `SSL_CERT_FILE` / `SSL_CERT_DIR` name one (as curl,
//! Python and git read them; [`ExtraRoots`]); plain http works for local servers. Each request runs in a `tracing` span named
//! `openai_request` that records the status and the service's `x-request-id`.
//!
//! # Example
//!
//! ```no_run
//! use uploads_hyper::{Client, UploadOptions};
//! use uploads_hyper::uploads_core::types::Purpose;
//!
//! # async fn run() -> Result<(), uploads_hyper::UploadError> {
//! // OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID, OPENAI_PROJECT_ID
//! let client = Client::from_env();
//! let options = UploadOptions::new(Purpose::FineTune)
//!     .part_size(16 * 1024 * 1024)
//!     .snapshot_path("train.jsonl.upload")
//!     .on_progress(|event| eprintln!("{event:?}"));
//! let upload = client.upload_file("train.jsonl", options).await?;
//! println!("file id: {}", upload.file.map(|file| file.id.to_string()).unwrap_or_default());
//! # Ok(())
//! # }
//! ```

mod body;
mod client;
mod connector;
mod error;
mod upload;

pub use client::{Client, DEFAULT_REQUEST_TIMEOUT, FileContent, HttpsConnector};
pub use connector::{TrackedConnector, TrackedStream};
pub use error::{AbortCause, Error, TransportError, UploadError};
pub use uploads_client_io::StopSignal;
pub use uploads_client_io::trust::ExtraRoots;
/// The core this client drives, under its own name (not `core`, which would shadow the
/// language's `core` crate in a glob import).
pub use uploads_core;
pub use uploads_core::types::{FileId, Purpose, Upload, UploadId};
pub use uploads_core::upload::{UploadOptions, error_chain};
pub use uploads_core::uploader::{ProgressEvent, SessionSnapshot, SnapshotSource, StopMode};
