//! The [`Client`] and its low-level calls: one blocking method per operation, each building
//! its request with the core, sending it with a ureq agent, and parsing the answer with the
//! core.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::{Request, Response};
use uploads_core::api::{self, ClientConfig, CreateFileForm, ErrorHead, ResponseError};
use uploads_core::multipart::MultipartBody;
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, DeletedFile, FileId, FileList, FileObject,
    ListFilesQuery, Upload, UploadId, UploadPart,
};
use uploads_core::upload::{ConnectFailure, connect_address};
use uploads_core::uploader::{OutgoingBody, Report};
use ureq::{Agent, AsSendBody, SendBody};

use crate::error::{Error, TransportError};
use crate::source::PartReader;
use uploads_client_io::trust::ExtraRoots;
use uploads_client_io::unacked::Sockets;
use uploads_client_io::{Source, StopSignal, boundary};

/// How long one request may take by default, body included: generous, since a 64 MiB part
/// on a slow link takes minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_mins(10);

/// A blocking client for the Uploads and Files endpoints.
///
/// Cheap to clone: clones share the agent and its connection pool, and may be used from
/// many threads at once.
#[derive(Clone)]
pub struct Client {
    agent: Agent,
    config: Arc<ClientConfig>,
    timeout: Duration,
    stop: Option<StopSignal>,
    /// The live sockets of the agent, when it is this crate's own.
    sockets: Option<Sockets>,
}

impl std::fmt::Debug for Client {
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
    /// `SSL_CERT_DIR` when set, as curl, Python and git do) and plain http.
    pub fn new(config: ClientConfig) -> Self {
        Self::trusting(config, &ExtraRoots::from_env())
    }

    /// [`Client::new`] trusting the certificates `extra` names beside Mozilla's roots,
    /// whatever the environment says.
    pub fn trusting(config: ClientConfig, extra: &ExtraRoots) -> Self {
        let sockets = Sockets::new();
        Self {
            sockets: Some(sockets.clone()),
            ..Self::with_agent(config, crate::tls::agent(extra, sockets))
        }
    }

    /// A client configured from `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default
    /// `https://api.openai.com/v1`), `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID`.
    pub fn from_env() -> Self {
        Self::new(ClientConfig::from_env(|name| std::env::var(name).ok()))
    }

    /// A client for `config` sending through `agent` (its proxy, TLS and pool settings). Each
    /// request overrides the agent's timeout with this client's, and reads error statuses as
    /// answers, whatever the agent's `http_status_as_error`. The client cannot see the
    /// sockets of an agent of yours, so upload progress then counts the bytes handed to the
    /// connection rather than those that have left the machine.
    pub fn with_agent(config: ClientConfig, agent: Agent) -> Self {
        Self {
            agent,
            config: Arc::new(config),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            stop: None,
            sockets: None,
        }
    }

    /// This client with every request bounded by `timeout` (body included); a request that
    /// takes longer fails with [`RequestError::Timeout`](uploads_core::upload::RequestError::Timeout).
    /// The default is [`DEFAULT_REQUEST_TIMEOUT`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This client with its uploads stopped by `signal` (see [`StopSignal`]).
    #[must_use]
    pub fn stop_signal(mut self, signal: StopSignal) -> Self {
        self.stop = Some(signal);
        self
    }

    /// Where requests go and the credentials they carry.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The stop signal this client carries, if any.
    pub(crate) fn stop(&self) -> Option<&StopSignal> {
        self.stop.as_ref()
    }

    /// The live sockets of this client's agent, when it is this crate's own.
    pub(crate) fn sockets(&self) -> Option<&Sockets> {
        self.sockets.as_ref()
    }

    /// The request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Creates an Upload.
    pub fn create_upload(&self, request: &CreateUploadRequest) -> Result<Upload, Error> {
        let request = self.config.create_upload(request)?;
        self.call_whole(request, api::parse_create_upload)
    }

    /// Adds a Part of `len` bytes read from the file at `path` from `offset`, streamed
    /// straight from the file into the connection.
    pub fn add_upload_part(
        &self,
        upload_id: &UploadId,
        path: impl AsRef<Path>,
        offset: u64,
        len: u64,
    ) -> Result<UploadPart, Error> {
        let opened = Source::open_file(path.as_ref()).map_err(Error::Source)?;
        let multipart = MultipartBody::upload_part(&boundary(), len);
        let head = self
            .config
            .add_upload_part_at(upload_id, None, &multipart)?;
        let part = (&opened.source, offset, len);
        let answer = self.send_streamed(head, &multipart, part, None, self.timeout, None)?;
        Ok(api::parse_add_upload_part(&answer)?)
    }

    /// Adds a Part whose data is in memory.
    pub fn add_upload_part_bytes(
        &self,
        upload_id: &UploadId,
        data: &[u8],
    ) -> Result<UploadPart, Error> {
        let request = self
            .config
            .add_upload_part_bytes(upload_id, &boundary(), data)?;
        self.call_whole(request, api::parse_add_upload_part)
    }

    /// Completes an Upload with its Part ids in file order (and the md5, if given).
    pub fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Upload, Error> {
        let request = self.config.complete_upload(upload_id, request)?;
        self.call_whole(request, api::parse_complete_upload)
    }

    /// Cancels an Upload.
    pub fn cancel_upload(&self, upload_id: &UploadId) -> Result<Upload, Error> {
        let request = self.config.cancel_upload(upload_id)?;
        self.call_whole(request, api::parse_cancel_upload)
    }

    /// Lists Files.
    pub fn list_files(&self, query: &ListFilesQuery) -> Result<FileList, Error> {
        let request = self.config.list_files(query)?;
        self.call_whole(request, api::parse_list_files)
    }

    /// Retrieves a File.
    pub fn retrieve_file(&self, file_id: &FileId) -> Result<FileObject, Error> {
        let request = self.config.retrieve_file(file_id)?;
        self.call_whole(request, api::parse_retrieve_file)
    }

    /// Deletes a File.
    pub fn delete_file(&self, file_id: &FileId) -> Result<DeletedFile, Error> {
        let request = self.config.delete_file(file_id)?;
        self.call_whole(request, api::parse_delete_file)
    }

    /// Creates a File from data in memory with one `POST /files`.
    pub fn create_file(&self, form: &CreateFileForm, data: &[u8]) -> Result<FileObject, Error> {
        let request = self.config.create_file_bytes(form, &boundary(), data)?;
        self.call_whole(request, api::parse_create_file)
    }

    /// A File's content as a reader. The request timeout bounds the whole exchange, reading
    /// the content included.
    pub fn file_content(&self, file_id: &FileId) -> Result<FileContent, Error> {
        let request = self.config.download_file(file_id)?;
        let span = request_span(&request);
        let _entered = span.enter();
        let (parts, body) = request.into_parts();
        let response = self.run(Request::from_parts(parts, body.as_ref()), self.timeout)?;
        let (parts, body) = response.into_parts();
        match api::check_response_head(parts.status, &parts.headers) {
            Ok(()) => Ok(FileContent {
                reader: body.into_reader(),
            }),
            Err(head) => {
                let body = read_body(body, ErrorHead::MAX_BODY_BYTES as u64, self.timeout)?;
                Err(Error::Response(ResponseError::from(head.with_body(&body))))
            }
        }
    }

    /// Sends a request the [`Uploader`](uploads_core::uploader::Uploader) asked for and
    /// reads its answer within `timeout`, waiting at most `silence` for the answer once the
    /// request is sent (the machine's stall time): a part's bytes go straight from `source`
    /// into the connection, reported to `reports` as they go, and are cut short once `stop`
    /// is set.
    pub(crate) fn exchange(
        &self,
        request: Request<OutgoingBody>,
        source: &Source<'_>,
        reports: &std::sync::mpsc::Sender<Report<TransportError>>,
        (timeout, silence): (Duration, Duration),
        stop: &AtomicBool,
    ) -> Result<Response<Vec<u8>>, Error> {
        let (mut head, body) = request.into_parts();
        head.extensions.insert(AnswerWithin(silence));
        match body {
            OutgoingBody::Part(part) => {
                let job = part.job;
                let on_read = move |bytes| {
                    let _ = reports.send(Report::Sent { job, bytes });
                };
                let data = (source, job.offset, job.len);
                let head = Request::from_parts(head, ());
                self.send_streamed(
                    head,
                    &part.multipart,
                    data,
                    Some(&on_read),
                    timeout,
                    Some(stop),
                )
            }
            OutgoingBody::Bytes(bytes) => {
                self.answer(Request::from_parts(head, bytes.as_ref()), timeout)
            }
            other => Err(Error::Source(io::Error::other(format!(
                "a body this client cannot send: {other:?}"
            )))),
        }
    }

    /// Sends a part request whose data is `len` bytes of `source` from `offset` (`data`):
    /// they go straight from the source into the connection, telling `on_read` as they go,
    /// and are cut short once `stop` is set. A failed read of the source is
    /// [`Error::Source`](uploads_core::upload::RequestError::Source).
    fn send_streamed(
        &self,
        head: Request<()>,
        multipart: &MultipartBody,
        (source, offset, len): (&Source<'_>, u64, u64),
        on_read: Option<&(dyn Fn(u64) + Sync)>,
        timeout: Duration,
        stop: Option<&AtomicBool>,
    ) -> Result<Response<Vec<u8>>, Error> {
        let data = PartReader::new(source, offset, len, on_read, stop);
        let mut body = multipart
            .head
            .as_ref()
            .chain(data)
            .chain(multipart.tail.as_ref());
        let request = head.map(|()| SendBody::from_reader(&mut body));
        let result = self.answer(request, timeout);
        match (result, body.get_mut().0.get_mut().1.failed.take()) {
            (Err(_), Some(read_error)) => Err(Error::Source(read_error)),
            (result, _) => result,
        }
    }

    /// Sends `request`, whose body is in memory, and parses the answer.
    fn call_whole<T, B: AsRef<[u8]>>(
        &self,
        request: Request<B>,
        parse: fn(&Response<Vec<u8>>) -> Result<T, ResponseError>,
    ) -> Result<T, Error> {
        let (parts, body) = request.into_parts();
        let answer = self.answer(Request::from_parts(parts, body.as_ref()), self.timeout)?;
        Ok(parse(&answer)?)
    }

    /// Sends `request` and reads its answer within `timeout` (as much of it as
    /// [`api::answer_body_limit`] says), in a span that records the status and the service's
    /// `x-request-id`.
    fn answer<B: AsSendBody>(
        &self,
        request: Request<B>,
        timeout: Duration,
    ) -> Result<Response<Vec<u8>>, Error> {
        let span = request_span(&request);
        let _entered = span.enter();
        let response = self.run(request, timeout)?;
        let (parts, body) = response.into_parts();
        let limit = api::answer_body_limit(parts.status) as u64;
        let body = read_body(body, limit, timeout)?;
        Ok(Response::from_parts(parts, body))
    }

    /// Sends `request` and waits for the response head; records it in the current span.
    fn run<B: AsSendBody>(
        &self,
        request: Request<B>,
        timeout: Duration,
    ) -> Result<Response<ureq::Body>, Error> {
        let answer_within = request
            .extensions()
            .get::<AnswerWithin>()
            .map(|within| within.0);
        let request = self
            .agent
            .configure_request(request)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_recv_response(answer_within)
            .build();
        let address = connect_address(request.uri());
        let response = self
            .agent
            .run(request)
            .map_err(|error| request_error(error, timeout, address))?;
        let span = tracing::Span::current();
        span.record("status", response.status().as_u16());
        if let Some(request_id) = uploads_core::api::request_id(response.headers()) {
            span.record("request_id", request_id);
        }
        Ok(response)
    }
}

/// How long a request waits for its answer once it is sent, when the caller bounds it.
#[derive(Debug, Clone, Copy)]
struct AnswerWithin(Duration);

/// A File's content, read as it arrives.
pub struct FileContent {
    reader: ureq::BodyReader<'static>,
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileContent").finish_non_exhaustive()
    }
}

impl Read for FileContent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
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

/// A failed request as this crate's error: a connection that could not be made as
/// [`Error::Connect`](uploads_core::upload::RequestError::Connect), with the address and how;
/// an answer without an HTTP status line as
/// [`Error::Protocol`](uploads_core::upload::RequestError::Protocol); otherwise as
/// [`transport_error`] says.
fn request_error(error: ureq::Error, timeout: Duration, address: String) -> Error {
    let kind = match &error {
        ureq::Error::Timeout(ureq::Timeout::Connect) => ConnectFailure::TimedOut,
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            ConnectFailure::Refused
        }
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ConnectFailure::Other,
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::TlsRequired => {
            ConnectFailure::Tls
        }
        ureq::Error::Io(io) if is_tls_handshake_failure(io) => ConnectFailure::Tls,
        ureq::Error::Protocol(protocol) if is_not_a_status_line(&protocol.to_string()) => {
            return Error::Protocol {
                address,
                source: TransportError::Http(error),
            };
        }
        _ => return transport_error(error, timeout),
    };
    Error::Connect {
        address,
        kind,
        source: TransportError::Http(error),
    }
}

/// Whether an I/O error is rustls refusing the connection. ureq reports the handshake's
/// errors as I/O errors carrying rustls' error, as it does a record that fails later; the
/// one error of a later record that a retry may fix, one garbled on the way
/// (`DecryptError`), is left a transport error.
fn is_tls_handshake_failure(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| !matches!(tls, rustls::Error::DecryptError))
}

/// Whether ureq's protocol error (`ureq_proto::Error`, as text: ureq does not export the
/// type) says the answer failed to parse at its status line: no `HTTP/1.x` version where it
/// begins (a TLS alert record, another protocol), or no status code after it. Headers and
/// bodies that break later are other errors.
fn is_not_a_status_line(protocol: &str) -> bool {
    protocol == "unsupported http version"
        || [
            "invalid HTTP version",
            "invalid response status",
            "invalid status code",
        ]
        .iter()
        .any(|status_line| protocol.starts_with(&format!("http parse fail: {status_line}")))
}

/// A ureq error as this crate's error: its timeouts as [`Error::Timeout`].
fn transport_error(error: ureq::Error, timeout: Duration) -> Error {
    match error {
        ureq::Error::Timeout(_) => Error::Timeout(timeout),
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => Error::Timeout(timeout),
        other => Error::Transport(TransportError::Http(other)),
    }
}

/// Reads a body up to `limit` bytes; what lies beyond is left unread.
fn read_body(body: ureq::Body, limit: u64, timeout: Duration) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::new();
    body.into_reader()
        .take(limit)
        .read_to_end(&mut buffer)
        .map_err(|error| transport_error(ureq::Error::from(error), timeout))?;
    Ok(buffer)
}
