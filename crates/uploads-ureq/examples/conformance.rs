//! The conformance scenario with the blocking client: every low-level call, then a small
//! `upload_file`, against the base URL given as the only argument (a Prism mock of OpenAI's
//! document under `cargo xtask conformance`). The key comes from `OPENAI_API_KEY`.
//!
//! ```text
//! OPENAI_API_KEY=sk-prism cargo run -p uploads-ureq --example conformance-ureq -- http://127.0.0.1:4010
//! ```

#[path = "../../../tests/support/conformance_scenario.rs"]
mod scenario;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use uploads_ureq::uploads_core::api::CreateFileForm;
use uploads_ureq::uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, FileId, FileList, FileObject,
    ListFilesQuery, Upload, UploadId, UploadPart,
};
use uploads_ureq::{Client, Error, TransportError, UploadError, UploadOptions};

impl scenario::Calls for Client {
    type Transport = TransportError;

    fn create_upload(&self, request: &CreateUploadRequest) -> Result<Upload, Error> {
        Client::create_upload(self, request)
    }

    fn add_upload_part(&self, upload_id: &UploadId, data: &[u8]) -> Result<UploadPart, Error> {
        self.add_upload_part_bytes(upload_id, data)
    }

    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, Error> {
        Client::complete_upload(self, upload_id, request)
    }

    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, Error> {
        Client::cancel_upload(self, upload_id)
    }

    fn list_files(&self, query: &ListFilesQuery) -> Result<FileList, Error> {
        Client::list_files(self, query)
    }

    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, Error> {
        Client::retrieve_file(self, file_id)
    }

    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, Error> {
        let mut content = Vec::new();
        Client::file_content(self, file_id)?
            .read_to_end(&mut content)
            .map_err(|error| Error::Transport(TransportError::Http(error.into())))?;
        Ok(content)
    }

    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, Error> {
        Client::delete_file(self, file_id)
    }

    fn create_file(&self, form: &CreateFileForm, data: &[u8]) -> Result<FileObject, Error> {
        Client::create_file(self, form, data)
    }

    fn upload_file(&self, path: &Path, options: UploadOptions) -> Result<Upload, UploadError> {
        Client::upload_file(self, path, options)
    }
}

fn main() -> ExitCode {
    match scenario::config_from_args() {
        Ok(config) => scenario::run(&Client::new(config)),
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
