//! The conformance scenario both client crates run against a Prism mock of OpenAI's document
//! (`cargo xtask conformance`; the harness is `tests/conformance/prism.py`): every operation
//! through the low-level calls, then a small `upload_file`.
//!
//! Each crate's `examples/conformance.rs` (the examples `conformance-hyper` and
//! `conformance-ureq`) includes this file with `#[path]` and implements [`Calls`] for its
//! client, so the two examples differ only in how a call is made.
//!
//! Prism answers with placeholders built from the document (ids like `"string"`, a
//! "completed" Upload that is still `pending` and has no File), so the scenario sends the ids
//! it gets back and judges the requests, not the answers' contents.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use uploads_core::api::{ClientConfig, CreateFileForm, ResponseError};
use uploads_core::digest::Md5Hasher;
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, ExpiresAfter, FileId, FileList,
    FileObject, ListFilesQuery, ListOrder, Purpose, Upload, UploadId, UploadPart, UploadStatus,
};
use uploads_core::upload::{AbortCause, RequestError, UploadError, UploadOptions};

/// Bytes of the part sent through the low-level call: Prism caps bodies at 10 MB, and the
/// harness asks for less than 1 MiB.
const PART_BYTES: usize = 256 * 1024;
/// Bytes of the file `upload_file` sends: three parts.
const UPLOAD_FILE_BYTES: usize = 1536 * 1024;
/// The part size of `upload_file`.
const UPLOAD_PART_BYTES: u64 = 512 * 1024;
/// The shortest File expiry the service accepts.
const EXPIRY_SECONDS: u64 = 3600;
/// The MIME type of every file the scenario sends.
const JSONL: &str = "text/jsonl";

/// One client's calls, seen as blocking calls so one scenario serves both crates.
pub trait Calls {
    /// The client's transport error.
    type Transport: std::error::Error;

    /// `POST /uploads`.
    fn create_upload(
        &self,
        request: &CreateUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>>;
    /// `POST /uploads/{id}/parts` with `data` from memory.
    fn add_upload_part(
        &self,
        upload_id: &UploadId,
        data: &[u8],
    ) -> Result<UploadPart, RequestError<Self::Transport>>;
    /// `POST /uploads/{id}/complete`.
    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>>;
    /// `POST /uploads/{id}/cancel`.
    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, RequestError<Self::Transport>>;
    /// `GET /files`.
    fn list_files(&self, query: &ListFilesQuery)
    -> Result<FileList, RequestError<Self::Transport>>;
    /// `GET /files/{id}`.
    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, RequestError<Self::Transport>>;
    /// `GET /files/{id}/content`, read to its end.
    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, RequestError<Self::Transport>>;
    /// `DELETE /files/{id}`.
    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, RequestError<Self::Transport>>;
    /// `POST /files`.
    fn create_file(
        &self,
        form: &CreateFileForm,
        data: &[u8],
    ) -> Result<FileObject, RequestError<Self::Transport>>;
    /// The high-level upload of the file at `path`.
    fn upload_file(
        &self,
        path: &Path,
        options: UploadOptions,
    ) -> Result<Upload, UploadError<Self::Transport>>;
}

/// The client configuration: the base URL is the only argument (it stands for
/// `https://api.openai.com/v1`), the key and the rest come from the environment.
pub fn config_from_args() -> Result<ClientConfig, String> {
    let mut args = std::env::args().skip(1);
    let (Some(base_url), None) = (args.next(), args.next()) else {
        return Err(
            "usage: conformance-<client> <base url, e.g. http://127.0.0.1:4010>".to_owned(),
        );
    };
    let config = ClientConfig::from_env(|name| match name {
        "OPENAI_BASE_URL" => Some(base_url.clone()),
        _ => std::env::var(name).ok(),
    });
    if config.api_key.is_none() {
        return Err("OPENAI_API_KEY is not set".to_owned());
    }
    Ok(config)
}

/// Runs the scenario with `client`, one line per call on stdout; fails on any error.
pub fn run(client: &impl Calls) -> ExitCode {
    let mut report = Report::default();

    let data = jsonl(PART_BYTES);
    let mut md5 = Md5Hasher::new();
    md5.update(&data);
    let completed = create_request(data.len(), None);
    if let Some(upload) = report.check("create_upload", client.create_upload(&completed))
        && let Some(part) =
            report.check("add_upload_part", client.add_upload_part(&upload.id, &data))
    {
        let complete = CompleteUploadRequest {
            part_ids: vec![part.id],
            md5: Some(md5.finish_hex()),
        };
        report.check(
            "complete_upload",
            client.complete_upload(&upload.id, &complete),
        );
    }
    let expiring = create_request(
        data.len(),
        Some(ExpiresAfter::after_creation(EXPIRY_SECONDS)),
    );
    if let Some(upload) = report.check("create_upload", client.create_upload(&expiring)) {
        report.check("cancel_upload", client.cancel_upload(&upload.id));
    }

    let form = CreateFileForm {
        purpose: Purpose::Batch,
        filename: "conformance.jsonl".to_owned(),
        content_type: JSONL.to_owned(),
        expires_after: Some(ExpiresAfter::after_creation(EXPIRY_SECONDS)),
    };
    if let Some(file) = report.check("create_file", client.create_file(&form, &jsonl(1024))) {
        let query = ListFilesQuery {
            purpose: Some(Purpose::Batch),
            limit: Some(2),
            order: Some(ListOrder::Asc),
            after: Some(file.id.clone()),
        };
        report.check("list_files", client.list_files(&query));
        report.check("retrieve_file", client.retrieve_file(&file.id));
        report.check("file_content", client.file_content(&file.id));
        report.check("delete_file", client.delete_file(&file.id));
    }

    report.upload_file(client);
    report.exit_code()
}

/// The create request of a batch file of `bytes` bytes.
fn create_request(bytes: usize, expires_after: Option<ExpiresAfter>) -> CreateUploadRequest {
    CreateUploadRequest {
        filename: "conformance.jsonl".to_owned(),
        purpose: Purpose::Batch,
        bytes: bytes as u64,
        mime_type: JSONL.to_owned(),
        expires_after,
    }
}

/// `len` bytes of batch requests, one JSON object per line (the last line cut short).
fn jsonl(len: usize) -> Vec<u8> {
    (0..)
        .flat_map(|line| {
            format!(
                "{{\"custom_id\":\"request-{line}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{}}}}\n"
            )
            .into_bytes()
        })
        .take(len)
        .collect()
}

/// The lines printed so far, and whether any was an error.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    /// Prints `ok <operation>` or `error <operation>: <error>`; the value when it succeeded.
    fn check<T, E: Display>(&mut self, operation: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                println!("ok {operation}");
                Some(value)
            }
            Err(error) => {
                println!("error {operation}: {error}");
                self.failed = true;
                None
            }
        }
    }

    /// Uploads a temporary file of three parts, two in flight, md5 on. A failure that comes
    /// only from the mock's placeholder answers is a note, not an error.
    fn upload_file(&mut self, client: &impl Calls) {
        let file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &jsonl(UPLOAD_FILE_BYTES))?;
                Ok(file)
            });
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                println!("error upload_file: cannot write the file to upload: {error}");
                self.failed = true;
                return;
            }
        };
        let options = UploadOptions::new(Purpose::Batch)
            .part_size(UPLOAD_PART_BYTES)
            .concurrency(2)
            .md5(true);
        match client.upload_file(file.path(), options) {
            Ok(upload) if upload.status == UploadStatus::Completed && upload.file.is_some() => {
                println!("ok upload_file");
            }
            Ok(upload) => println!(
                "note upload_file: the mock completed it as a {} Upload without a File \
                 (placeholder content)",
                upload.status
            ),
            Err(error) if only_placeholder_content(&error) => {
                println!("note upload_file: {error}");
            }
            Err(error) => {
                println!("error upload_file: {error}");
                self.failed = true;
            }
        }
    }

    fn exit_code(&self) -> ExitCode {
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Whether `error` says only that a 2xx answer's body was not what OpenAI would send: every
/// request was accepted, and the mock's placeholder content is the problem.
fn only_placeholder_content<E>(error: &UploadError<E>) -> bool {
    let request = match error {
        UploadError::Create(request) => request,
        UploadError::Aborted { cause, .. } => match &**cause {
            AbortCause::Part { error, .. } | AbortCause::Complete(error) => error,
            _ => return false,
        },
        _ => return false,
    };
    matches!(
        request,
        RequestError::Response(ResponseError::Decode { .. })
    )
}
