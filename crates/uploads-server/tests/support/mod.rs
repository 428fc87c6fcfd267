//! What every HTTP test of the server shares: starting a server on `127.0.0.1:0` over a
//! temp dir, a small client on hyper's low-level connections (http1 or h2) that answers
//! `(status, headers, body)`, a raw-socket client for wire-format tests, multipart bodies,
//! and looks at the data dir.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod certs;
pub mod logs;
pub mod services;
pub mod silencing_proxy;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uploads_core::digest::Md5Hasher;
use uploads_core::multipart::{Boundary, FileField, MultipartBody};
use uploads_core::types::{
    ApiErrorDetail, ErrorBody, FileId, FileObject, PartId, Upload, UploadId, UploadPart,
};
use uploads_server::clock::ManualClock;
use uploads_server::{RunningServer, Server, ServerBuilder};

/// The key of the first owner every test server knows.
pub const KEY_A: &str = "sk-test-alpha-0123456789";
/// The owner [`KEY_A`] acts for.
pub const OWNER_A: &str = "proj_a";
/// The key of the second owner.
pub const KEY_B: &str = "sk-test-bravo-9876543210";
/// The owner [`KEY_B`] acts for.
pub const OWNER_B: &str = "proj_b";
/// Where every test's [`ManualClock`] starts (unix seconds).
pub const T0: u64 = 1_700_000_000;
/// OpenAI's `type` of every refusal a caller must fix.
pub const INVALID_REQUEST: &str = "invalid_request_error";

/// A server over its own temp dir, with a clock the test moves.
pub struct TestServer {
    /// The server (drop it to stop it like a crash).
    pub running: RunningServer,
    /// The clock the server's ledger reads.
    pub clock: ManualClock,
    /// The data dir; removed when the test ends.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server knowing [`KEY_A`] and [`KEY_B`], with default limits and the clock at [`T0`].
    pub async fn start() -> Self {
        Self::start_with(|builder| builder).await
    }

    /// Like [`TestServer::start`], with more settings.
    pub async fn start_with(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let running = start_on(dir.path(), &clock, configure).await;
        Self {
            running,
            clock,
            dir,
        }
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the server down, lets `between` change its data dir (what a crash or an
    /// operator leaves), and starts a new server on it with the same clock and keys.
    pub async fn restart_after(self, between: impl FnOnce(&Path)) -> Self {
        self.restart_between(between, |builder| builder).await
    }

    /// Like [`TestServer::restart_after`] with nothing changed in between, the new server
    /// configured by `configure` (limits a test set at the first start are not kept).
    pub async fn restart_with(
        self,
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Self {
        self.restart_between(|_| {}, configure).await
    }

    /// Shuts down, lets `between` change the data dir, starts again configured by `configure`.
    async fn restart_between(
        self,
        between: impl FnOnce(&Path),
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Self {
        let Self {
            running,
            clock,
            dir,
        } = self;
        running.shutdown().await;
        between(dir.path());
        let running = start_on(dir.path(), &clock, configure).await;
        Self {
            running,
            clock,
            dir,
        }
    }

    /// An http1 client acting for [`KEY_A`].
    pub async fn client(&self) -> Client {
        Client::connect(self.running.local_addr(), Protocol::Http1, Some(KEY_A)).await
    }
}

/// Starts a server knowing [`KEY_A`] and [`KEY_B`] on `dir` (a restart when it was used before).
pub async fn start_on(
    dir: &Path,
    clock: &ManualClock,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    let builder = on_backend(dir, Server::builder().clock(clock.clone()));
    // The test moves time for the database too.
    let builder = if shared_backend() {
        builder.shared_clock(clock.clone())
    } else {
        builder
    };
    configure(builder).start().await.unwrap()
}

/// `builder` on `dir`, knowing [`KEY_A`] and [`KEY_B`], on the backend the tests run against
/// ([`shared_backend`]).
fn on_backend(dir: &Path, builder: ServerBuilder) -> ServerBuilder {
    let builder = builder
        .data_dir(dir)
        .api_key(KEY_A, OWNER_A)
        .api_key(KEY_B, OWNER_B);
    match shared_namespace(dir) {
        Some(namespace) => builder.shared(
            &namespace.database_url,
            &namespace.object_store,
            namespace.s3_env(),
        ),
        None => builder,
    }
}

/// Like [`start_on`] on the system's clock (the database's on the shared backend): for
/// clients that wait real time, as the official SDKs do after a 429.
pub async fn start_on_system_clock(
    dir: &Path,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    configure(on_backend(dir, Server::builder()))
        .start()
        .await
        .unwrap()
}

/// Which backend the tests run against: the directory store, or with
/// `UPLOADS_TEST_BACKEND=shared` PostgreSQL and object storage (the harness's, see
/// [`services`]); `cargo xtask ci` runs the server's suites both ways.
pub fn shared_backend() -> bool {
    std::env::var("UPLOADS_TEST_BACKEND").is_ok_and(|backend| backend == "shared")
}

/// The database and bucket standing for a data dir when the tests run on the shared
/// backend: the same on every start with that dir, so a restart sees what was stored.
fn shared_namespace(dir: &Path) -> Option<services::Namespace> {
    static NAMESPACES: std::sync::Mutex<Vec<(PathBuf, services::Namespace)>> =
        std::sync::Mutex::new(Vec::new());
    if !shared_backend() {
        return None;
    }
    let mut namespaces = NAMESPACES.lock().unwrap();
    if let Some((_, namespace)) = namespaces.iter().find(|(known, _)| known == dir) {
        return Some(namespace.clone());
    }
    let namespace = services::Services::get().fresh();
    namespaces.push((dir.to_owned(), namespace.clone()));
    Some(namespace)
}

/// Which HTTP version a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one connection per request (so requests really run in parallel).
    Http1,
    /// HTTP/2 with prior knowledge, every request a stream of one connection.
    Http2,
}

/// The body of a request the client sends.
pub type RequestBody = BoxBody<Bytes, Infallible>;

/// A whole body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> RequestBody {
    http_body_util::Full::new(bytes.into()).boxed()
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, read to its end.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON of type `T`, asserting the status is 200.
    #[track_caller]
    pub fn ok<T: DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        self.json()
    }

    /// The body as JSON of type `T`.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", self.text()))
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body))
    }

    /// The OpenAI error of the body.
    #[track_caller]
    pub fn error(&self) -> ApiErrorDetail {
        self.json::<ErrorBody>().error
    }

    /// Asserts a 503 the SDKs retry: `server_error`, with `retry-after` and `retry-after-ms`.
    #[track_caller]
    pub fn assert_retryable_503(&self) {
        assert_eq!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            self.text()
        );
        assert_eq!(self.error().kind, "server_error", "{}", self.text());
        for header in ["retry-after", "retry-after-ms"] {
            assert!(
                self.headers.contains_key(header),
                "{header}: {:?}",
                self.headers
            );
        }
    }

    /// Asserts an OpenAI-shaped refusal: status, `invalid_request_error`, `param`, message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, param: Option<&str>, message: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let error = self.error();
        assert_eq!(error.kind, INVALID_REQUEST, "{}", self.text());
        assert_eq!(error.param.as_deref(), param, "{}", self.text());
        assert_eq!(error.message, message);
    }

    /// The `Content-Length` header as a number.
    #[track_caller]
    pub fn content_length(&self) -> u64 {
        self.headers[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A client of the server on hyper's low-level connections.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    key: Option<String>,
    /// The one h2 connection, shared by every clone; `None` for http1.
    h2: Option<http2::SendRequest<RequestBody>>,
}

impl Client {
    /// A client of the server at `addr` sending `Authorization: Bearer <key>` (when given).
    pub async fn connect(addr: SocketAddr, protocol: Protocol, key: Option<&str>) -> Self {
        let h2 = match protocol {
            Protocol::Http1 => None,
            Protocol::Http2 => {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (sender, connection) =
                    http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                Some(sender)
            }
        };
        Self {
            addr,
            key: key.map(str::to_owned),
            h2,
        }
    }

    /// The same client (and h2 connection) acting with another key, or none.
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: RequestBody,
    ) -> Reply {
        self.send_with_headers(method, path, content_type, &[], body)
            .await
    }

    /// [`Client::send`] with more headers.
    pub async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: RequestBody,
    ) -> Reply {
        let uri = match self.h2 {
            Some(_) => format!("http://{}{path}", self.addr),
            None => path.to_owned(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, self.addr.to_string());
        if let Some(key) = &self.key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(length) = body.size_hint().exact() {
            builder = builder.header(CONTENT_LENGTH, length);
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body).unwrap();
        let response = if let Some(sender) = &self.h2 {
            sender.clone().send_request(request).await.unwrap()
        } else {
            let stream = TcpStream::connect(self.addr).await.unwrap();
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let (head, body) = response.into_parts();
        Reply {
            status: head.status,
            headers: head.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, full(Bytes::new())).await
    }

    /// `POST path` with a JSON body given as text.
    pub async fn post_json(&self, path: &str, json: &str) -> Reply {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            full(json.to_owned()),
        )
        .await
    }

    /// `POST /v1/uploads` with this body.
    pub async fn create_upload_json(&self, json: &str) -> Reply {
        self.post_json("/v1/uploads", json).await
    }

    /// A pending `user_data` Upload of `bytes` bytes named `data.bin`.
    pub async fn create_upload(&self, bytes: u64) -> Upload {
        let reply = self
            .create_upload_json(&format!(
                r#"{{"filename":"data.bin","purpose":"user_data","bytes":{bytes},"mime_type":"application/octet-stream"}}"#
            ))
            .await;
        reply.ok()
    }

    /// `POST /v1/uploads/{id}/parts` with `data`, encoded as the official SDK does.
    pub async fn add_part(&self, upload: &UploadId, data: &[u8]) -> Reply {
        let form = MultipartBody::upload_part(&next_boundary(), data.len() as u64);
        self.send(
            Method::POST,
            &format!("/v1/uploads/{upload}/parts"),
            Some(&form.content_type),
            full(form.assemble(data)),
        )
        .await
    }

    /// Adds the Part at `index` of the file, naming its position as this workspace's
    /// clients do ([`uploads_core::api::PART_INDEX_HEADER`]), asserting it was accepted.
    pub async fn add_part_at(&self, upload: &UploadId, index: u32, data: &[u8]) -> UploadPart {
        let form = MultipartBody::upload_part(&next_boundary(), data.len() as u64);
        self.send_with_headers(
            Method::POST,
            &format!("/v1/uploads/{upload}/parts"),
            Some(&form.content_type),
            &[(uploads_core::api::PART_INDEX_HEADER, index.to_string())],
            full(form.assemble(data)),
        )
        .await
        .ok()
    }

    /// Adds a Part, asserting it was accepted.
    pub async fn add_part_ok(&self, upload: &UploadId, data: &[u8]) -> UploadPart {
        let part: UploadPart = self.add_part(upload, data).await.ok();
        assert_eq!(
            (&part.upload_id, part.object.as_str()),
            (upload, "upload.part")
        );
        part
    }

    /// `POST /v1/uploads/{id}/complete` with these ids and md5.
    pub async fn complete(
        &self,
        upload: &UploadId,
        part_ids: &[&PartId],
        md5: Option<&str>,
    ) -> Reply {
        let body = serde_json::json!({ "part_ids": part_ids, "md5": md5 });
        self.post_json(&format!("/v1/uploads/{upload}/complete"), &body.to_string())
            .await
    }

    /// Completes, asserting it worked; the completed Upload.
    pub async fn complete_ok(
        &self,
        upload: &UploadId,
        part_ids: &[&PartId],
        md5: Option<&str>,
    ) -> Upload {
        let completed: Upload = self.complete(upload, part_ids, md5).await.ok();
        assert_eq!(completed.status.as_str(), "completed");
        completed
    }

    /// `POST /v1/uploads/{id}/cancel`.
    pub async fn cancel(&self, upload: &UploadId) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/uploads/{upload}/cancel"),
            None,
            full(Bytes::new()),
        )
        .await
    }

    /// `GET /v1/files/{id}`.
    pub async fn retrieve(&self, file: &FileId) -> Reply {
        self.get(&format!("/v1/files/{file}")).await
    }

    /// `GET /v1/files/{id}/content`.
    pub async fn content(&self, file: &FileId) -> Reply {
        self.get(&format!("/v1/files/{file}/content")).await
    }

    /// A File's content, asserting it is served whole with its `Content-Length`.
    pub async fn content_ok(&self, file: &FileId) -> Bytes {
        let reply = self.content(file).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.content_length(), reply.body.len() as u64);
        assert_eq!(
            reply.headers[CONTENT_TYPE].as_bytes(),
            b"application/octet-stream"
        );
        reply.body
    }

    /// `DELETE /v1/files/{id}`.
    pub async fn delete(&self, file: &FileId) -> Reply {
        self.send(
            Method::DELETE,
            &format!("/v1/files/{file}"),
            None,
            full(Bytes::new()),
        )
        .await
    }

    /// `GET /v1/files?query`.
    pub async fn list(&self, query: &str) -> Reply {
        self.get(&format!("/v1/files?{query}")).await
    }

    /// The ids `GET /v1/files?query` lists, in order.
    pub async fn list_ids(&self, query: &str) -> Vec<FileId> {
        let list: uploads_core::types::FileList = self.list(query).await.ok();
        list.data.into_iter().map(|file| file.id).collect()
    }

    /// Uploads `parts` in one Upload and completes it in that order (with the md5).
    pub async fn upload_file(&self, parts: &[&[u8]]) -> FileObject {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let upload = self.create_upload(total as u64).await;
        let mut ids = Vec::new();
        for part in parts {
            ids.push(self.add_part_ok(&upload.id, part).await.id);
        }
        let listed: Vec<&PartId> = ids.iter().collect();
        let completed = self
            .complete_ok(&upload.id, &listed, Some(&md5_hex(parts)))
            .await;
        completed.file.unwrap()
    }
}

/// A fresh multipart boundary (the SDK's shape: from 16 bytes of "entropy").
pub fn next_boundary() -> Boundary {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut entropy = [0x5a; 16];
    entropy[..8].copy_from_slice(&n.to_be_bytes());
    Boundary::from_entropy(entropy)
}

/// A `POST /files` form: text fields, then the `file` field holding `data`.
pub fn file_form(fields: &[(&str, &str)], filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let file = FileField {
        name: "file",
        filename,
        content_type: "text/plain",
    };
    let form = MultipartBody::new(&next_boundary(), fields, file, data.len() as u64);
    (form.content_type.clone(), form.assemble(data))
}

/// Lower-case hex md5 of the chunks, in order.
pub fn md5_hex(chunks: &[&[u8]]) -> String {
    let mut hasher = Md5Hasher::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finish_hex()
}

/// `len` bytes that differ with `seed` and hold CR, LF and dashes (multipart's delimiters).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    const ALPHABET: &[u8] = b"-\r\n-0123456789abcdef--\r\n";
    (0..len)
        .map(|index| match index % 16 {
            0 => seed,
            _ => ALPHABET[(index + usize::from(seed) * 7) % ALPHABET.len()],
        })
        .collect()
}

/// A request body of exactly `len` bytes streamed from a channel (the test decides when
/// each chunk goes, and memory stays bounded), and the sender that feeds it.
pub fn streamed_body(len: u64) -> (mpsc::Sender<Bytes>, RequestBody) {
    let (sender, receiver) = mpsc::channel(4);
    let body = ChannelBody {
        receiver,
        remaining: len,
    };
    (sender, body.boxed())
}

/// See [`streamed_body`].
struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver.poll_recv(cx).map(|chunk| {
            chunk.map(|chunk| {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Ok(Frame::data(chunk))
            })
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The head of an HTTP/1.1 request as raw bytes, ending the connection after the reply.
pub fn request_head(
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(key) = key {
        let _ = write!(head, "Authorization: Bearer {key}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if let Some(length) = content_length {
        let _ = write!(head, "Content-Length: {length}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

/// `GET /healthz` (no key, outside `/v1`) on a connection of its own.
pub async fn healthz(addr: SocketAddr) -> Reply {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).await
}

/// Writes `bytes` on a new connection and reads the reply.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_reply(&mut stream).await.unwrap()
}

/// Reads one HTTP/1.1 response with a `Content-Length` body. Fails when the connection ends
/// (or breaks) before a whole response arrived; bytes after it are left unread.
pub async fn read_reply(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Reply> {
    let mut received = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        if let Some(reply) = parse_reply(&received)? {
            return Ok(reply);
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection ended after {:?}",
                    String::from_utf8_lossy(&received)
                ),
            ));
        }
        received.extend_from_slice(&buffer[..n]);
    }
}

/// A whole response out of `received`, or `None` when more bytes are needed.
fn parse_reply(received: &[u8]) -> io::Result<Option<Reply>> {
    let Some(head_len) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let head = std::str::from_utf8(&received[..head_len]).map_err(|_| invalid("head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid(status_line))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(line))?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid(name))?,
            HeaderValue::from_str(value.trim()).map_err(|_| invalid(value))?,
        );
    }
    let length: usize = match headers.get(CONTENT_LENGTH) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| invalid("content-length"))?,
        None => 0,
    };
    let body = &received[head_len + 4..];
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some(Reply {
        status,
        headers,
        body: Bytes::copy_from_slice(&body[..length]),
    }))
}

/// Every path under `root`, recursively.
pub fn paths_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Every temp file (name starting `.tmp-`) under `root`.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    paths_under(root)
        .into_iter()
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(uploads_server::store::TEMP_PREFIX))
        })
        .collect()
}

/// Removes a stored Part's bytes behind the server's back (an operator, a bucket's
/// lifecycle rule): its file, or on the shared backend its object.
pub async fn remove_part_bytes(data_dir: &Path, upload: &UploadId, part: &PartId) {
    match shared_namespace(data_dir) {
        Some(namespace) => {
            let bucket = uploads_server::objects::ObjectBytes::open(
                &namespace.object_store,
                namespace.s3_env(),
            )
            .unwrap();
            bucket
                .delete(&format!("uploads/{upload}/{part}"))
                .await
                .unwrap();
        }
        None => std::fs::remove_file(parts_dir(data_dir, upload).join(part.as_str())).unwrap(),
    }
}

/// The names in the data dir's quarantine.
pub fn quarantined(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("quarantine"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The directory holding an Upload's Part files.
pub fn parts_dir(data_dir: &Path, upload: &UploadId) -> PathBuf {
    data_dir.join("uploads").join(upload.as_str()).join("parts")
}

/// The names of the committed Part files of an Upload (temp files left out), sorted; on the
/// shared backend, of its Parts' objects in the bucket.
pub fn stored_parts(data_dir: &Path, upload: &UploadId) -> Vec<String> {
    if let Some(namespace) = shared_namespace(data_dir) {
        let prefix = format!("objects/uploads/{upload}/");
        let mut names: Vec<String> = services::Services::get()
            .list_objects(&namespace.bucket)
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        names.sort();
        return names;
    }
    let Ok(entries) = std::fs::read_dir(parts_dir(data_dir, upload)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(uploads_server::store::TEMP_PREFIX))
        .collect();
    names.sort();
    names
}

/// Every object in the shared backend's bucket for this data dir (none on the directory
/// backend).
pub fn stored_objects(data_dir: &Path) -> Vec<String> {
    shared_namespace(data_dir)
        .map(|namespace| services::Services::get().list_objects(&namespace.bucket))
        .unwrap_or_default()
}

/// How many Upload records are stored (directories, or rows on the shared backend).
pub fn stored_uploads(data_dir: &Path) -> usize {
    if let Some(namespace) = shared_namespace(data_dir) {
        let count =
            services::Services::get().psql_on(&namespace.database, "SELECT count(*) FROM uploads");
        return count.parse().unwrap();
    }
    std::fs::read_dir(data_dir.join("uploads")).map_or(0, Iterator::count)
}

/// Whether an Upload's record is stored (its directory, or its row on the shared backend).
pub fn upload_stored(data_dir: &Path, upload: &UploadId) -> bool {
    if let Some(namespace) = shared_namespace(data_dir) {
        let sql = format!("SELECT count(*) FROM uploads WHERE id = '{upload}'");
        return services::Services::get().psql_on(&namespace.database, &sql) == "1";
    }
    data_dir.join("uploads").join(upload.as_str()).exists()
}

/// Waits until `done` holds, polling. The bound only keeps a broken server from hanging
/// the suite; no test asserts how long anything takes.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..30_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until no temp file is left under `root` (a refused body's bytes are removed on a
/// blocking thread, just after the answer).
pub async fn no_temp_files_eventually(root: &Path) {
    eventually("temp files removed", || temp_files(root).is_empty()).await;
}
