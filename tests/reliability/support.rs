//! Test support: a seeded RNG, a tiny HTTP client over one hyper connection per request, raw
//! TCP exchanges for hostile bytes, the wire bodies of the API, and views of a data dir, the
//! process's memory and the `uploads` binary.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uploads_core::digest::Md5Hasher;
use uploads_core::types::{ErrorBody, FileList, FileObject, Upload, UploadPart};

/// How long any one exchange may take before the test calls the server stuck. A guard
/// against hangs, never an assertion about speed.
pub const EXCHANGE_GUARD: Duration = Duration::from_secs(30);

/// The multipart boundary every well-formed body in these tests uses.
pub const BOUNDARY: &str = "----reliability-5c1f0e3a9b7d";

/// `SplitMix64`: a small, seeded, reproducible source of test randomness.
pub struct Rng(u64);

impl Rng {
    /// A generator from a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range` (half-open).
    pub fn below(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Lower-case hex md5 of `chunks` concatenated.
pub fn md5_hex<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Md5Hasher::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finish_hex()
}

/// Serializes tests that measure this process's memory against tests that use a lot of it.
static MEMORY: RwLock<()> = RwLock::new(());

/// Taken by every test that runs an in-process server: many may run at once.
pub fn shared_memory() -> RwLockReadGuard<'static, ()> {
    MEMORY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Taken by a test whose memory must not be mixed with others' (a measurement, or a load).
pub fn exclusive_memory() -> RwLockWriteGuard<'static, ()> {
    MEMORY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `future` on a fresh two-worker runtime (as `#[tokio::test(flavor = "multi_thread")]`
/// does), so a test can hold a memory guard around it without holding it across an await.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// This process's resident set size in bytes, from `/proc/self/status` (`None` off Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// An answer read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body parsed as `T`; panics with the body when it is not one.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} body is not the expected JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The OpenAI error body.
    pub fn error(&self) -> ErrorBody {
        self.json()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// A client of one server: a fresh connection per request, so a killed server fails only the
/// requests in flight.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    authorization: Option<String>,
}

impl Client {
    /// A client sending `Authorization: Bearer <key>` (or nothing).
    pub fn new(addr: SocketAddr, key: Option<&str>) -> Self {
        Self {
            addr,
            authorization: key.map(|key| format!("Bearer {key}")),
        }
    }

    /// A client sending this exact `Authorization` value.
    pub fn with_authorization(addr: SocketAddr, value: &str) -> Self {
        Self {
            addr,
            authorization: Some(value.to_owned()),
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> io::Result<Reply> {
        tokio::time::timeout(
            EXCHANGE_GUARD,
            self.send_unguarded(method, path, content_type, body.into()),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "exchange guard elapsed"))?
    }

    async fn send_unguarded(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> io::Result<Reply> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        if let Some(value) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, value.as_str());
        }
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(body)).map_err(io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        Ok(Reply {
            status: parts.status,
            body,
        })
    }

    /// `POST /v1/uploads` for a `user_data` upload of `bytes` bytes.
    pub async fn create_upload(&self, filename: &str, bytes: u64) -> io::Result<Reply> {
        let body = serde_json::json!({
            "filename": filename, "purpose": "user_data", "bytes": bytes,
            "mime_type": "application/octet-stream",
        });
        self.post_json("/v1/uploads", body.to_string()).await
    }

    /// Creates an upload and returns it, panicking on anything but 200.
    pub async fn new_upload(&self, filename: &str, bytes: u64) -> Upload {
        self.create_upload(filename, bytes)
            .await
            .expect("create")
            .expect(200)
            .json()
    }

    /// `POST /v1/uploads/{id}/parts` with `data` as the `data` field.
    pub async fn add_part(&self, upload: &str, data: &[u8]) -> io::Result<Reply> {
        self.send(
            Method::POST,
            &format!("/v1/uploads/{upload}/parts"),
            Some(&multipart_content_type()),
            part_body(data),
        )
        .await
    }

    /// Adds a part and returns its id, panicking on anything but 200.
    pub async fn new_part(&self, upload: &str, data: &[u8]) -> String {
        let part: UploadPart = self
            .add_part(upload, data)
            .await
            .expect("add part")
            .expect(200)
            .json();
        part.id.as_str().to_owned()
    }

    /// `POST /v1/uploads/{id}/complete`.
    pub async fn complete(
        &self,
        upload: &str,
        part_ids: &[String],
        md5: Option<&str>,
    ) -> io::Result<Reply> {
        let mut body = serde_json::json!({ "part_ids": part_ids });
        if let Some(md5) = md5 {
            body["md5"] = md5.into();
        }
        self.post_json(&format!("/v1/uploads/{upload}/complete"), body.to_string())
            .await
    }

    /// `POST /v1/uploads/{id}/cancel`.
    pub async fn cancel(&self, upload: &str) -> io::Result<Reply> {
        self.send(
            Method::POST,
            &format!("/v1/uploads/{upload}/cancel"),
            None,
            Bytes::new(),
        )
        .await
    }

    /// `GET /v1/files` (one page of up to 10,000).
    pub async fn list_files(&self) -> io::Result<Reply> {
        self.send(Method::GET, "/v1/files", None, Bytes::new())
            .await
    }

    /// Every File this client's owner sees.
    pub async fn files(&self) -> Vec<FileObject> {
        let list: FileList = self.list_files().await.expect("list").expect(200).json();
        assert!(!list.has_more, "more files than one page");
        list.data
    }

    /// `GET /v1/files/{id}`.
    pub async fn retrieve_file(&self, file: &str) -> io::Result<Reply> {
        self.send(
            Method::GET,
            &format!("/v1/files/{file}"),
            None,
            Bytes::new(),
        )
        .await
    }

    /// `DELETE /v1/files/{id}`.
    pub async fn delete_file(&self, file: &str) -> io::Result<Reply> {
        self.send(
            Method::DELETE,
            &format!("/v1/files/{file}"),
            None,
            Bytes::new(),
        )
        .await
    }

    /// `GET /v1/files/{id}/content`.
    pub async fn content(&self, file: &str) -> io::Result<Reply> {
        self.send(
            Method::GET,
            &format!("/v1/files/{file}/content"),
            None,
            Bytes::new(),
        )
        .await
    }

    /// `POST /v1/files` with a raw multipart body.
    pub async fn create_file_raw(&self, body: Vec<u8>) -> io::Result<Reply> {
        self.send(
            Method::POST,
            "/v1/files",
            Some(&multipart_content_type()),
            body,
        )
        .await
    }

    async fn post_json(&self, path: &str, body: String) -> io::Result<Reply> {
        self.send(Method::POST, path, Some("application/json"), body)
            .await
    }
}

/// `multipart/form-data` with [`BOUNDARY`].
pub fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The multipart body of an add-part request carrying `data`.
pub fn part_body(data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"blob\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The multipart body of `POST /files` whose `file` field has the raw `disposition_tail`
/// after `name="file"; ` (so a test controls the filename's exact bytes).
pub fn file_body(disposition_tail: &[u8], purpose: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
    )
    .into_bytes();
    body.extend_from_slice(disposition_tail);
    body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A request head for raw exchanges: `POST path` with the given extra header lines.
pub fn raw_head(method: &str, path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: reliability\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// What came back on a raw connection.
#[derive(Debug)]
pub enum RawOutcome {
    /// A response head was read (status and everything read with it).
    Answered {
        /// The status of the first response.
        status: u16,
        /// Every byte read.
        bytes: Vec<u8>,
    },
    /// The server closed (or reset) the connection without answering.
    Closed,
}

impl RawOutcome {
    /// The status, if answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered { status, .. } => Some(*status),
            Self::Closed => None,
        }
    }
}

/// Reads until one full response head arrived (then the rest of its `Content-Length` body)
/// or the connection ends. `None` when the exchange guard elapsed: the server neither
/// answered nor closed.
pub async fn read_response(stream: &mut TcpStream) -> Option<RawOutcome> {
    tokio::time::timeout(EXCHANGE_GUARD, read_response_unguarded(stream))
        .await
        .ok()
}

async fn read_response_unguarded(stream: &mut TcpStream) -> RawOutcome {
    let mut bytes = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        if let Some(head_end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            while bytes.len() < head_end + 4 + length {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                }
            }
            return RawOutcome::Answered { status, bytes };
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return RawOutcome::Closed,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Writes `request` on a new connection (ignoring write errors: the server may answer and
/// close early) and reads the answer.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let _ = stream.write_all(request).await;
    read_response(&mut stream)
        .await
        .expect("the server neither answered nor closed the connection")
}

/// The first index of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The body of the first raw answer in `bytes` (after its head, `Content-Length` long).
pub fn raw_body(bytes: &[u8]) -> &[u8] {
    let (body, _) = split_answer(bytes);
    body
}

/// The bytes read after the first answer (a second answer on the same connection).
pub fn after_answer(bytes: &[u8]) -> &[u8] {
    let (_, rest) = split_answer(bytes);
    rest
}

fn split_answer(bytes: &[u8]) -> (&[u8], &[u8]) {
    let Some(end) = find(bytes, b"\r\n\r\n") else {
        return (&[], &[]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(bytes.len());
    let body_end = (end + 4 + length).min(bytes.len());
    (&bytes[end + 4..body_end], &bytes[body_end..])
}

/// Every entry under `root`, as paths relative to it, sorted.
pub fn tree(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    found.sort();
    found
}

/// Entries under `root` whose name starts with the store's temp prefix.
pub fn temp_entries(root: &Path) -> Vec<PathBuf> {
    tree(root)
        .into_iter()
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(uploads_server::store::TEMP_PREFIX))
        })
        .collect()
}

/// Whether every entry under `root` is one the store names: its fixed directories and files,
/// and ids made of `[A-Za-z0-9_-]` (with the store's suffixes).
pub fn only_id_named_entries(root: &Path) -> Result<(), PathBuf> {
    let id = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    for path in tree(root) {
        let ok = path.components().all(|component| {
            let name = component.as_os_str().to_str().unwrap_or("");
            let stem = name
                .strip_suffix(".json")
                .or_else(|| name.strip_suffix(".data"))
                .or_else(|| name.strip_suffix(".log"))
                .unwrap_or(name);
            id(stem)
        });
        if !ok {
            return Err(path);
        }
    }
    Ok(())
}

/// The `uploads` binary, built (once per test run) with the profile this test was built
/// with, so a fixed server is what the crash tests run.
pub fn uploads_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/reliability-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let profile = profile_dir
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "-p",
                "uploads-cli",
                "--bin",
                "uploads",
                "--message-format=json",
            ])
            .stderr(std::process::Stdio::inherit());
        match profile {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        let output = command.output().expect("run cargo build");
        assert!(output.status.success(), "cargo build -p uploads-cli failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact")
            .filter(|message| message["target"]["name"] == "uploads")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no `uploads` executable")
    })
}
