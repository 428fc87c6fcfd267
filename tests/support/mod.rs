//! What the client tests share: a server on a runtime of the test's own, the fault proxy,
//! and [`Adapter`], through which every scenario runs with both clients, so their parity is
//! checked rather than hoped for.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod held_proxy;
pub mod proxy;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tokio::runtime::Runtime;
use uploads_core::api::{ClientConfig, CreateFileForm};
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, FileId, FileList, FileObject,
    ListFilesQuery, Upload, UploadId, UploadPart,
};
use uploads_core::upload::{RequestError, UploadError, UploadOptions};
use uploads_core::uploader::{ProgressEvent, SnapshotSource};
use uploads_server::RunningServer;

use self::proxy::{Fault, Proxy};

/// The API key the test server accepts.
pub const API_KEY: &str = "sk-test";

/// A server on 127.0.0.1:0 with its data in a temporary directory, on a runtime of its own;
/// the hyper client runs on that runtime too, the ureq client on the test's thread.
pub struct Harness {
    runtime: Runtime,
    server: Option<RunningServer>,
    dir: TempDir,
}

impl Harness {
    pub fn start() -> Self {
        Self::start_with(|builder| builder)
    }

    /// [`Harness::start`], the server configured by `configure` too.
    pub fn start_with(
        configure: impl FnOnce(uploads_server::ServerBuilder) -> uploads_server::ServerBuilder,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("server");
        let server = runtime.block_on(async {
            configure(
                uploads_server::Server::builder()
                    .data_dir(data_dir)
                    .api_key(API_KEY, "owner-a"),
            )
            .start()
            .await
            .unwrap()
        });
        Self {
            runtime,
            server: Some(server),
            dir,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn base_url(&self) -> String {
        self.server().base_url()
    }

    /// A client configuration for `base_url` with the test key.
    pub fn config(base_url: &str) -> ClientConfig {
        ClientConfig::new(base_url).with_api_key(API_KEY)
    }

    /// An adapter's client talking to the server directly.
    pub fn client<A: Adapter>(&self) -> A {
        A::connect(self, &self.base_url(), None)
    }

    /// A proxy in front of the server that applies `faults` to the first part requests.
    pub fn proxy(&self, faults: Vec<Fault>) -> Proxy {
        let upstream = self.server().local_addr();
        self.runtime.block_on(Proxy::start(upstream, faults))
    }

    /// A proxy in front of the server that passes request bodies at `bytes_per_second` per
    /// connection.
    pub fn slow_proxy(&self, bytes_per_second: u64) -> Proxy {
        let upstream = self.server().local_addr();
        self.runtime.block_on(Proxy::start_with_rate(
            upstream,
            Vec::new(),
            Some(bytes_per_second),
        ))
    }

    /// A file of `len` bytes that no two offsets confuse, in the test's directory.
    pub fn write_file(&self, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ len as u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let path = self.dir.path().join(name);
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// What a high-level upload reads: a file, a reader promising `len` bytes, or a snapshot to
/// resume the file from.
pub enum Source<'a> {
    File(&'a Path),
    Reader {
        data: Vec<u8>,
        len: u64,
        name: &'a str,
    },
    Resume(SnapshotSource, &'a Path),
}

/// What one Part carries: bytes in memory or a range of a file.
pub enum PartData<'a> {
    Bytes(&'a [u8]),
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// One client adapter, seen through blocking calls so one scenario serves both. It holds
/// only what differs between the clients: how a call is made (async on the harness's
/// runtime, or blocking) and how an upload is stopped; the requests and answers themselves
/// are the core's.
pub trait Adapter: Sized {
    /// The adapter's transport error.
    type Transport: std::error::Error + Send + Sync + 'static;

    /// A client of `base_url` whose every request gives up after `timeout` (or the
    /// client's default).
    fn connect(harness: &Harness, base_url: &str, timeout: Option<std::time::Duration>) -> Self;

    /// `upload_file`, `upload_reader` or `resume_upload`, as `source` says.
    fn upload(
        &self,
        source: Source<'_>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError<Self::Transport>>;

    /// This client with its uploads stopped by `signal`.
    #[must_use]
    fn with_stop_signal(&self, signal: uploads_hyper::StopSignal) -> Self;

    /// Uploads `path` and, once `parts` parts are done, stops it with a stop signal as
    /// `mode` says; returns how the upload ended.
    fn upload_stopped_after(
        &self,
        path: &Path,
        options: UploadOptions,
        parts: u32,
        mode: uploads_core::uploader::StopMode,
    ) -> Result<Upload, UploadError<Self::Transport>>
    where
        Self: Sized,
    {
        let signal = uploads_hyper::StopSignal::new();
        let stop = signal.clone();
        let options = when_parts_done(options, parts, move || match mode {
            uploads_core::uploader::StopMode::Keep => stop.stop(),
            uploads_core::uploader::StopMode::Cancel => stop.cancel(),
        });
        self.with_stop_signal(signal)
            .upload(Source::File(path), options)
    }

    /// Starts uploading `path` and stops once `parts` parts are done, keeping the Upload.
    fn upload_until_parts_done(&self, path: &Path, options: UploadOptions, parts: u32)
    where
        Self: Sized,
    {
        let stopped =
            self.upload_stopped_after(path, options, parts, uploads_core::uploader::StopMode::Keep);
        match stopped {
            Err(UploadError::Aborted {
                cancelled: false,
                cause,
                ..
            }) if matches!(*cause, uploads_core::upload::AbortCause::Interrupted) => {}
            other => panic!("expected an interrupted upload, got {other:?}"),
        }
    }

    fn create_upload(
        &self,
        request: &CreateUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>>;
    /// `add_upload_part_bytes` or `add_upload_part` (a file range), as `data` says.
    fn add_part(
        &self,
        upload_id: &UploadId,
        data: PartData<'_>,
    ) -> Result<UploadPart, RequestError<Self::Transport>>;
    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>>;
    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, RequestError<Self::Transport>>;
    fn list_files(&self, query: &ListFilesQuery)
    -> Result<FileList, RequestError<Self::Transport>>;
    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, RequestError<Self::Transport>>;
    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, RequestError<Self::Transport>>;
    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, RequestError<Self::Transport>>;
    fn create_file(
        &self,
        form: &CreateFileForm,
        data: &[u8],
    ) -> Result<FileObject, RequestError<Self::Transport>>;
}

/// `options` with a progress callback that calls `then` once `parts` parts are done.
fn when_parts_done(
    options: UploadOptions,
    parts: u32,
    then: impl Fn() + Send + Sync + 'static,
) -> UploadOptions {
    options.on_progress(move |event| {
        if let ProgressEvent::PartDone { parts_done, .. } = event
            && *parts_done >= parts
        {
            then();
        }
    })
}

/// The async client, driven on the harness's runtime.
pub struct Hyper {
    client: uploads_hyper::Client,
    runtime: tokio::runtime::Handle,
}

impl Adapter for Hyper {
    type Transport = uploads_hyper::TransportError;

    fn connect(harness: &Harness, base_url: &str, timeout: Option<std::time::Duration>) -> Self {
        let client = uploads_hyper::Client::new(Harness::config(base_url));
        Self {
            client: timeout.map_or(client.clone(), |timeout| client.request_timeout(timeout)),
            runtime: harness.runtime.handle().clone(),
        }
    }

    fn upload(
        &self,
        source: Source<'_>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError<Self::Transport>> {
        self.runtime.block_on(async {
            match source {
                Source::File(path) => self.client.upload_file(path, options).await,
                Source::Reader { data, len, name } => {
                    let reader = std::io::Cursor::new(data);
                    self.client.upload_reader(reader, len, name, options).await
                }
                Source::Resume(snapshot, path) => {
                    self.client.resume_upload(snapshot, path, options).await
                }
            }
        })
    }

    fn with_stop_signal(&self, signal: uploads_hyper::StopSignal) -> Self {
        Self {
            client: self.client.clone().stop_signal(signal),
            runtime: self.runtime.clone(),
        }
    }

    fn create_upload(
        &self,
        request: &CreateUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>> {
        self.runtime.block_on(self.client.create_upload(request))
    }

    fn add_part(
        &self,
        upload_id: &UploadId,
        data: PartData<'_>,
    ) -> Result<UploadPart, RequestError<Self::Transport>> {
        self.runtime.block_on(async {
            match data {
                PartData::Bytes(data) => {
                    let data = bytes::Bytes::copy_from_slice(data);
                    self.client.add_upload_part_bytes(upload_id, data).await
                }
                PartData::File { path, offset, len } => {
                    self.client
                        .add_upload_part(upload_id, path, offset, len)
                        .await
                }
            }
        })
    }

    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>> {
        self.runtime
            .block_on(self.client.complete_upload(upload_id, request))
    }

    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, RequestError<Self::Transport>> {
        self.runtime.block_on(self.client.cancel_upload(upload_id))
    }

    fn list_files(
        &self,
        query: &ListFilesQuery,
    ) -> Result<FileList, RequestError<Self::Transport>> {
        self.runtime.block_on(self.client.list_files(query))
    }

    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, RequestError<Self::Transport>> {
        self.runtime.block_on(self.client.retrieve_file(file_id))
    }

    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, RequestError<Self::Transport>> {
        self.runtime.block_on(async {
            let mut content = self.client.file_content(file_id).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = content.next_chunk().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok(bytes)
        })
    }

    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, RequestError<Self::Transport>> {
        self.runtime.block_on(self.client.delete_file(file_id))
    }

    fn create_file(
        &self,
        form: &CreateFileForm,
        data: &[u8],
    ) -> Result<FileObject, RequestError<Self::Transport>> {
        self.runtime.block_on(
            self.client
                .create_file(form, bytes::Bytes::copy_from_slice(data)),
        )
    }
}

/// The blocking client, on the test's thread (and the threads it starts).
pub struct Ureq {
    client: uploads_ureq::Client,
}

impl Adapter for Ureq {
    type Transport = uploads_ureq::TransportError;

    fn connect(_harness: &Harness, base_url: &str, timeout: Option<std::time::Duration>) -> Self {
        let client = uploads_ureq::Client::new(Harness::config(base_url));
        Self {
            client: timeout.map_or(client.clone(), |timeout| client.request_timeout(timeout)),
        }
    }

    fn upload(
        &self,
        source: Source<'_>,
        options: UploadOptions,
    ) -> Result<Upload, UploadError<Self::Transport>> {
        match source {
            Source::File(path) => self.client.upload_file(path, options),
            Source::Reader { data, len, name } => {
                let reader = std::io::Cursor::new(data);
                self.client.upload_reader(reader, len, name, options)
            }
            Source::Resume(snapshot, path) => self.client.resume_upload(snapshot, path, options),
        }
    }

    fn with_stop_signal(&self, signal: uploads_hyper::StopSignal) -> Self {
        Self {
            client: self.client.clone().stop_signal(signal),
        }
    }

    fn create_upload(
        &self,
        request: &CreateUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>> {
        self.client.create_upload(request)
    }

    fn add_part(
        &self,
        upload_id: &UploadId,
        data: PartData<'_>,
    ) -> Result<UploadPart, RequestError<Self::Transport>> {
        match data {
            PartData::Bytes(data) => self.client.add_upload_part_bytes(upload_id, data),
            PartData::File { path, offset, len } => {
                self.client.add_upload_part(upload_id, path, offset, len)
            }
        }
    }

    fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, RequestError<Self::Transport>> {
        self.client.complete_upload(upload_id, request)
    }

    fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, RequestError<Self::Transport>> {
        self.client.cancel_upload(upload_id)
    }

    fn list_files(
        &self,
        query: &ListFilesQuery,
    ) -> Result<FileList, RequestError<Self::Transport>> {
        self.client.list_files(query)
    }

    fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, RequestError<Self::Transport>> {
        self.client.retrieve_file(file_id)
    }

    fn file_content(&self, file_id: &FileId) -> Result<Vec<u8>, RequestError<Self::Transport>> {
        use std::io::Read as _;
        let mut content = self.client.file_content(file_id)?;
        let mut bytes = Vec::new();
        content.read_to_end(&mut bytes).map_err(|error| {
            RequestError::Transport(uploads_ureq::TransportError::Http(error.into()))
        })?;
        Ok(bytes)
    }

    fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, RequestError<Self::Transport>> {
        self.client.delete_file(file_id)
    }

    fn create_file(
        &self,
        form: &CreateFileForm,
        data: &[u8],
    ) -> Result<FileObject, RequestError<Self::Transport>> {
        self.client.create_file(form, data)
    }
}

/// Runs each scenario (a function generic over [`Adapter`]) as one test per adapter.
#[macro_export]
macro_rules! with_both_adapters {
    ($($scenario:ident),* $(,)?) => {
        mod hyper {
            $(#[test]
            fn $scenario() {
                super::$scenario::<$crate::support::Hyper>();
            })*
        }
        mod ureq {
            $(#[test]
            fn $scenario() {
                super::$scenario::<$crate::support::Ureq>();
            })*
        }
    };
}
