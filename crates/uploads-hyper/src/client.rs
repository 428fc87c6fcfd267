//! The [`Client`] and its low-level calls: one async method per operation, each building its
//! request with the core, sending it over a pooled hyper client, and parsing the answer with
//! the core.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument;
use uploads_core::api::{self, ClientConfig, CreateFileForm, ErrorHead, ResponseError};
use uploads_core::multipart::MultipartBody;
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, FileId, FileList, FileObject,
    ListFilesQuery, Upload, UploadId, UploadPart,
};
use uploads_core::uploader::{OutgoingBody, Report};

use crate::body::{ChunkSource, OnSent, RequestBody, SourceBody, SourceErrorSlot, full};
use crate::connector::TrackedConnector;
use crate::error::{Error, TransportError};
use uploads_client_io::trust::{self, ExtraRoots};
use uploads_client_io::unacked::Sockets;
use uploads_client_io::{Source, StopSignal, boundary};
use uploads_core::upload::{connect_address, connect_failure};

/// The connector [`Client::new`] uses: https through rustls (ring provider; webpki roots and
/// those `SSL_CERT_FILE` / `SSL_CERT_DIR` name) and plain http, HTTP/1.1 and HTTP/2, over
/// TCP sockets the client watches ([`TrackedConnector`]) so that upload progress counts what
/// has left the machine.
pub type HttpsConnector = hyper_rustls::HttpsConnector<TrackedConnector>;

/// How long one request may take by default, body included: generous, since a 64 MiB part
/// on a slow link takes minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_mins(10);

/// An async client for the Uploads and Files endpoints.
///
/// Cheap to clone: clones share one connection pool. `C` is the connector, so tests and
/// special networks can bring their own (anything hyper-util's legacy client accepts); the
/// client cannot see the sockets of a connector of theirs, so upload progress then counts
/// the bytes handed to the connection rather than those that have left the machine.
#[derive(Clone)]
pub struct Client<C = HttpsConnector> {
    http: HyperClient<C, RequestBody>,
    config: Arc<ClientConfig>,
    timeout: Duration,
    stop: Option<StopSignal>,
    /// The live sockets of the connector, when it is this crate's own.
    sockets: Option<Sockets>,
}

impl<C> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config` over https (rustls with the ring provider, trusting Mozilla's
    /// roots from webpki-roots and, beside them, the certificates in `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` when set, as curl, Python and git do) and plain http. The ring
    /// provider is this client's own: nothing process-wide is installed, so the program may
    /// use another provider elsewhere.
    pub fn new(config: ClientConfig) -> Self {
        Self::trusting(config, &ExtraRoots::from_env())
    }

    /// [`Client::new`] trusting the certificates `extra` names beside Mozilla's roots,
    /// whatever the environment says.
    pub fn trusting(config: ClientConfig, extra: &ExtraRoots) -> Self {
        let tls = trust::client_config(extra.root_store());
        let mut http = HttpConnector::new();
        // As hyper-rustls' own builder does: the https layer above enforces the scheme.
        http.enforce_http(false);
        let sockets = Sockets::new();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(TrackedConnector::new(http, sockets.clone()));
        Self {
            sockets: Some(sockets),
            ..Self::with_connector(config, connector)
        }
    }

    /// A client configured from `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default
    /// `https://api.openai.com/v1`), `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID`.
    pub fn from_env() -> Self {
        Self::new(ClientConfig::from_env(|name| std::env::var(name).ok()))
    }
}

impl<C> Client<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A client for `config` over `connector`, e.g. a plain [`HttpConnector`].
    pub fn with_connector(config: ClientConfig, connector: C) -> Self {
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            http,
            config: Arc::new(config),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            stop: None,
            sockets: None,
        }
    }

    /// This client with its uploads stopped by `signal` (see [`StopSignal`]): the same
    /// signal stops uploads of this client and of `uploads-ureq`'s alike.
    #[must_use]
    pub fn stop_signal(mut self, signal: StopSignal) -> Self {
        self.stop = Some(signal);
        self
    }

    /// The stop signal this client carries, if any.
    pub(crate) fn stop(&self) -> Option<&StopSignal> {
        self.stop.as_ref()
    }

    /// The live sockets of this client's connector, when it is this crate's own.
    pub(crate) fn sockets(&self) -> Option<&Sockets> {
        self.sockets.as_ref()
    }

    /// This client with every request bounded by `timeout` (body included); a request that
    /// takes longer fails with [`RequestError::Timeout`](uploads_core::upload::RequestError::Timeout).
    /// The default is [`DEFAULT_REQUEST_TIMEOUT`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where requests go and the credentials they carry.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Creates an Upload.
    pub async fn create_upload(&self, request: &CreateUploadRequest) -> Result<Upload, Error> {
        let request = self.config.create_upload(request)?;
        self.call(request.map(full), api::parse_create_upload).await
    }

    /// Adds a Part of `len` bytes read from the file at `path` from `offset`, streamed a
    /// chunk at a time.
    pub async fn add_upload_part(
        &self,
        upload_id: &UploadId,
        path: impl AsRef<Path>,
        offset: u64,
        len: u64,
    ) -> Result<UploadPart, Error> {
        let path = path.as_ref().to_owned();
        let opened = tokio::task::spawn_blocking(move || Source::open_file(&path))
            .await
            .map_err(std::io::Error::other)
            .and_then(|opened| opened)
            .map_err(Error::Source)?;
        let multipart = MultipartBody::upload_part(&boundary(), len);
        let head = self
            .config
            .add_upload_part_at(upload_id, None, &multipart)?;
        let source = ChunkSource::new(opened.source);
        let answer = self
            .send_streamed(head, &multipart, (source, offset, len), None)
            .await?;
        Ok(api::parse_add_upload_part(&answer)?)
    }

    /// Adds a Part whose data is in memory.
    pub async fn add_upload_part_bytes(
        &self,
        upload_id: &UploadId,
        data: impl Into<Bytes>,
    ) -> Result<UploadPart, Error> {
        let request = self
            .config
            .add_upload_part_bytes(upload_id, &boundary(), &data.into())?;
        self.call(request.map(full), api::parse_add_upload_part)
            .await
    }

    /// Completes an Upload with its Part ids in file order (and the md5, if given).
    pub async fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, Error> {
        let request = self.config.complete_upload(upload_id, request)?;
        self.call(request.map(full), api::parse_complete_upload)
            .await
    }

    /// Cancels an Upload.
    pub async fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, Error> {
        let request = self.config.cancel_upload(upload_id)?;
        self.call(request.map(full), api::parse_cancel_upload).await
    }

    /// Lists Files.
    pub async fn list_files(&self, query: &ListFilesQuery) -> Result<FileList, Error> {
        let request = self.config.list_files(query)?;
        self.call(request.map(full), api::parse_list_files).await
    }

    /// Retrieves a File.
    pub async fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, Error> {
        let request = self.config.retrieve_file(file_id)?;
        self.call(request.map(full), api::parse_retrieve_file).await
    }

    /// Deletes a File.
    pub async fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, Error> {
        let request = self.config.delete_file(file_id)?;
        self.call(request.map(full), api::parse_delete_file).await
    }

    /// Creates a File from data in memory with one `POST /files`.
    pub async fn create_file(
        &self,
        form: &CreateFileForm,
        data: impl Into<Bytes>,
    ) -> Result<FileObject, Error> {
        let request = self
            .config
            .create_file_bytes(form, &boundary(), &data.into())?;
        self.call(request.map(full), api::parse_create_file).await
    }

    /// A File's content as a stream of chunks. The request timeout bounds the wait for the
    /// response head only; reading the stream is up to the caller.
    pub async fn file_content(&self, file_id: &FileId) -> Result<FileContent, Error> {
        let request = self.config.download_file(file_id)?;
        let span = request_span(&request);
        let timeout = self.timeout;
        let exchange = async {
            let response = self.send_head(request.map(full)).await?;
            let (parts, body) = response.into_parts();
            match api::check_response_head(parts.status, &parts.headers) {
                Ok(()) => Ok(FileContent { body }),
                Err(head) => Err(error_from_head(head, body).await),
            }
        };
        with_timeout(timeout, exchange).instrument(span).await
    }

    /// Sends a request the [`Uploader`](uploads_core::uploader::Uploader) asked for and
    /// reads its answer within the request timeout: a part's body streams from `source` a
    /// chunk at a time, each reported to `reports` as it goes out.
    pub(crate) async fn exchange(
        &self,
        request: Request<OutgoingBody>,
        source: ChunkSource,
        reports: &UnboundedSender<Report<TransportError>>,
    ) -> Result<Response<Bytes>, Error> {
        let (head, body) = request.into_parts();
        match body {
            OutgoingBody::Part(part) => {
                let (job, reports) = (part.job, reports.clone());
                let on_sent: OnSent = Arc::new(move |bytes| {
                    let _ = reports.send(Report::Sent { job, bytes });
                });
                let data = (source, job.offset, job.len);
                let head = Request::from_parts(head, ());
                self.send_streamed(head, &part.multipart, data, Some(on_sent))
                    .await
            }
            OutgoingBody::Bytes(bytes) => self.answer(Request::from_parts(head, full(bytes))).await,
            other => Err(Error::Source(std::io::Error::other(format!(
                "a body this client cannot send: {other:?}"
            )))),
        }
    }

    /// Sends a part request whose data is `len` bytes of `source` from `offset` (`data`),
    /// streamed a chunk at a time and told to `on_sent` as they go. A failed read of the
    /// source is [`Error::Source`](uploads_core::upload::RequestError::Source).
    async fn send_streamed(
        &self,
        head: Request<()>,
        multipart: &MultipartBody,
        (source, offset, len): (ChunkSource, u64, u64),
        on_sent: Option<OnSent>,
    ) -> Result<Response<Bytes>, Error> {
        let source_error = SourceErrorSlot::default();
        let live = Arc::new(AtomicBool::new(true));
        let body = SourceBody::new(
            multipart,
            source,
            offset,
            len,
            on_sent,
            Arc::clone(&live),
            Arc::clone(&source_error),
        );
        let result = self.answer(head.map(|()| body.boxed())).await;
        live.store(false, Ordering::Release);
        let failed_read = source_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match (result, failed_read) {
            (Err(_), Some(read_error)) => Err(Error::Source(read_error)),
            (result, _) => result,
        }
    }

    /// Sends `request` and parses the whole answer.
    async fn call<T>(
        &self,
        request: Request<RequestBody>,
        parse: fn(&Response<Bytes>) -> Result<T, ResponseError>,
    ) -> Result<T, Error> {
        Ok(parse(&self.answer(request).await?)?)
    }

    /// Sends `request` and reads its answer (as much of it as [`api::answer_body_limit`]
    /// says), within the request timeout, in a span that records the status and the
    /// service's `x-request-id`.
    async fn answer(&self, request: Request<RequestBody>) -> Result<Response<Bytes>, Error> {
        let span = request_span(&request);
        let exchange = async {
            let response = self.send_head(request).await?;
            let (parts, body) = response.into_parts();
            let body = read_body(body, api::answer_body_limit(parts.status)).await?;
            Ok(Response::from_parts(parts, body))
        };
        with_timeout(self.timeout, exchange).instrument(span).await
    }

    /// Sends `request` and waits for the response head; records it in the current span.
    async fn send_head(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, Error> {
        let address = connect_address(request.uri());
        let response = self
            .http
            .request(request)
            .await
            .map_err(|error| request_error(error, address))?;
        record_response(&response);
        Ok(response)
    }
}

/// A File's content, read as it arrives.
#[derive(Debug)]
pub struct FileContent {
    body: Incoming,
}

impl FileContent {
    /// The next chunk of the content; `None` at its end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(error) => return Some(Err(Error::Transport(TransportError::Body(error)))),
            }
        }
    }

    /// The rest of the content in memory.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        self.body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|error| Error::Transport(TransportError::Body(error)))
    }

    /// The underlying hyper body, e.g. to forward it.
    pub fn into_body(self) -> Incoming {
        self.body
    }
}

/// The span of one request; `status` and `request_id` are recorded when the head arrives.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "openai_request",
        method = %request.method(),
        path = request.uri().path(),
        status = tracing::field::Empty,
        request_id = tracing::field::Empty,
    )
}

/// Records the status and `x-request-id` of a response in the current span.
fn record_response<B>(response: &Response<B>) {
    let span = tracing::Span::current();
    span.record("status", response.status().as_u16());
    if let Some(request_id) = uploads_core::api::request_id(response.headers()) {
        span.record("request_id", request_id);
    }
}

/// A failed request as this crate's error: a connection that could not be made as
/// [`Error::Connect`](uploads_core::upload::RequestError::Connect), with the address and how;
/// an answer without an HTTP status line as
/// [`Error::Protocol`](uploads_core::upload::RequestError::Protocol).
fn request_error(error: hyper_util::client::legacy::Error, address: String) -> Error {
    if error.is_connect() {
        let kind = connect_failure(&error, <dyn std::error::Error>::is::<rustls::Error>);
        return Error::Connect {
            address,
            kind,
            source: TransportError::Request(error),
        };
    }
    if hyper_error(&error).is_some_and(is_not_a_status_line) {
        return Error::Protocol {
            address,
            source: TransportError::Request(error),
        };
    }
    Error::Transport(TransportError::Request(error))
}

/// The hyper error under a client error, if any.
fn hyper_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a hyper::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return Some(hyper);
        }
        cause = error.source();
    }
    None
}

/// Whether the answer failed to parse at its status line: no `HTTP/1.x` version where it
/// begins (a TLS alert record, another protocol), or no status code after it. A response
/// head is only parsed at the start of an answer, so this is never an answer that began as
/// HTTP and broke later (those are header, body or I/O errors). hyper tells a bad version
/// only by its text.
fn is_not_a_status_line(error: &hyper::Error) -> bool {
    error.is_parse_status()
        || (error.is_parse() && error.to_string().starts_with("invalid HTTP version"))
}

/// `exchange`, or [`Error::Timeout`] once `timeout` passes.
async fn with_timeout<T>(
    timeout: Duration,
    exchange: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)))
}

/// Reads a body up to `limit` bytes; what lies beyond is left unread.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, Error> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| Error::Transport(TransportError::Body(error)))?;
        if let Ok(data) = frame.into_data() {
            let room = limit - buffer.len();
            buffer.extend_from_slice(&data[..data.len().min(room)]);
            if buffer.len() == limit {
                break;
            }
        }
    }
    Ok(buffer.freeze())
}

/// The API error of a non-2xx head, with the start of its body.
async fn error_from_head(head: ErrorHead, body: Incoming) -> Error {
    match read_body(body, ErrorHead::MAX_BODY_BYTES).await {
        Ok(body) => Error::Response(ResponseError::from(head.with_body(&body))),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_installs_no_process_wide_tls_provider() {
        let _client = Client::new(ClientConfig::new("https://example.invalid/v1"));
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }

    #[tokio::test]
    async fn an_unusable_base_url_fails_before_sending() {
        let client = Client::new(ClientConfig::new("ftp://example.invalid"));
        let error = client
            .retrieve_file(&FileId::new("file-1"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Build(_)), "{error:?}");
        assert_eq!(error.as_failure(0), None);
    }
}
