//! The conformance scenario with the async client: every low-level call, then a small
//! `upload_file`, against the base URL given as the only argument (a Prism mock of OpenAI's
//! document under `cargo xtask conformance`). The key comes from `OPENAI_API_KEY`.
//!
//! ```text
//! OPENAI_API_KEY=sk-prism cargo run -p uploads-hyper --example conformance-hyper -- http://127.0.0.1:4010
//! ```

#[path = "../../../tests/support/conformance_scenario.rs"]
mod scenario;

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use tokio::runtime::Runtime;
use uploads_hyper::uploads_core::api::CreateFileForm;
use uploads_hyper::uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, FileId, FileList, FileObject,
    ListFilesQuery, Upload, UploadId, UploadPart,
};
use uploads_hyper::{Client, Error, TransportError, UploadError, UploadOptions};

/// The async client, each call run to its end on a runtime of its own.
struct Hyper {
    client: Client,
    runtime: Runtime,
}

impl scenario::Calls for Hyper {
    type Transport = TransportError;

    fn create_upload(&self, request: &CreateUploadRequest) -> Result<Upload, Error> {
        self.runtime.block_on(self.client.create_upload(request))
    }

    fn add_upload_part(&self, upload_id: &UploadId, data: &[u8]) -> Result<UploadPart, Error> {
        let data = Bytes::copy_from_slice(data);
        self.runtime
            .block_on(self.client.add_upload_part_bytes(upload_id, data))
    }

    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, Error> {
        self.runtime
            .block_on(self.client.complete_upload(upload_id, request))
    }

    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, Error> {
        self.runtime.block_on(self.client.cancel_upload(upload_id))
    }

    fn list_files(&self, query: &ListFilesQuery) -> Result<FileList, Error> {
        self.runtime.block_on(self.client.list_files(query))
    }

    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, Error> {
        self.runtime.block_on(self.client.retrieve_file(file_id))
    }

    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, Error> {
        self.runtime.block_on(async {
            let content = self.client.file_content(file_id).await?;
            Ok(content.bytes().await?.to_vec())
        })
    }

    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, Error> {
        self.runtime.block_on(self.client.delete_file(file_id))
    }

    fn create_file(&self, form: &CreateFileForm, data: &[u8]) -> Result<FileObject, Error> {
        let data = Bytes::copy_from_slice(data);
        self.runtime.block_on(self.client.create_file(form, data))
    }

    fn upload_file(&self, path: &Path, options: UploadOptions) -> Result<Upload, UploadError> {
        self.runtime
            .block_on(self.client.upload_file(path, options))
    }
}

fn main() -> ExitCode {
    let config = match scenario::config_from_args() {
        Ok(config) => config,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = match Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    scenario::run(&Hyper {
        client: Client::new(config),
        runtime,
    })
}
