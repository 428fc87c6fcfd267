//! Hostile input over raw TCP: exact bytes written, the reply read with a guard on every read.
//! Each case gets a clear 4xx (or the connection closed after the configured timeout), no
//! server thread panics, memory stays bounded, nothing is stored from a refused part, and the
//! server keeps serving others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use uploads_core::types::{FileObject, Upload};
use uploads_server::{RunningServer, Server};

use crate::support::{
    BOUNDARY, Client, RawOutcome, Rng, after_answer, exclusive_memory, file_body, find, md5_hex,
    multipart_content_type, only_id_named_entries, part_body, raw_body, raw_exchange, raw_head,
    read_response, resident_bytes, shared_memory, temp_entries, tree,
};

/// The configured header and body timeouts of the hostile server.
const TIMEOUT: Duration = Duration::from_millis(300);
/// Name of the hostile server's runtime threads: a panic on one is a server panic.
const SERVER_THREAD: &str = "hostile-server";

/// Panics seen on the server's threads.
static SERVER_PANICS: AtomicU64 = AtomicU64::new(0);

/// One in-process server for every hostile test, on its own runtime.
struct Hostile {
    runtime: Runtime,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _server: RunningServer,
}

fn hostile() -> &'static Hostile {
    static HOSTILE: OnceLock<Hostile> = OnceLock::new();
    HOSTILE.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with(SERVER_THREAD))
            {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREAD)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = runtime
            .block_on(
                Server::builder()
                    .data_dir(dir.path())
                    .header_read_timeout(TIMEOUT)
                    .body_idle_timeout(TIMEOUT)
                    .start(),
            )
            .unwrap();
        Hostile {
            runtime,
            addr: server.local_addr(),
            dir,
            _server: server,
        }
    })
}

impl Hostile {
    fn client(&self) -> Client {
        Client::new(self.addr, None)
    }

    fn run<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// The server still serves a normal request and no server thread panicked.
    async fn still_serves(&self) {
        self.client().new_upload("still-serving.txt", 1).await;
        assert_eq!(
            SERVER_PANICS.load(Ordering::SeqCst),
            0,
            "a server thread panicked"
        );
    }

    /// Part files stored for `upload` (temp files of a request being abandoned aside).
    fn stored_parts(&self, upload: &str) -> Vec<std::path::PathBuf> {
        let parts = self.dir.path().join("uploads").join(upload).join("parts");
        let temps = temp_entries(&parts);
        tree(&parts)
            .into_iter()
            .filter(|part| !temps.contains(part))
            .collect()
    }

    /// Asserts that `upload` holds no part, waiting (a bounded number of short polls) for
    /// the temp files of refused requests to go: their writer thread removes them just
    /// after the answer went out.
    async fn assert_nothing_stored(&self, upload: &str) {
        assert!(
            self.stored_parts(upload).is_empty(),
            "a refused part was stored"
        );
        let parts = self.dir.path().join("uploads").join(upload).join("parts");
        for _ in 0..250 {
            if temp_entries(&parts).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "temp files of refused parts remain: {:?}",
            temp_entries(&parts)
        );
    }
}

/// A fresh pending upload on the hostile server.
async fn fresh_upload(client: &Client) -> String {
    client
        .new_upload("hostile.bin", 1 << 20)
        .await
        .id
        .as_str()
        .to_owned()
}

/// A complete raw request: head with Content-Length and the body.
fn raw_request(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = raw_head(
        "POST",
        path,
        &[
            ("content-type", content_type.to_owned()),
            ("content-length", body.len().to_string()),
        ],
    );
    request.extend_from_slice(body);
    request
}

/// Asserts an OpenAI-shaped 4xx answer with this status.
#[track_caller]
fn assert_refused(outcome: &RawOutcome, status: u16, case: &str) {
    match outcome {
        RawOutcome::Answered { status: got, bytes } => {
            assert_eq!(
                *got,
                status,
                "{case}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(600)])
            );
            let error: uploads_core::types::ErrorBody = serde_json::from_slice(raw_body(bytes))
                .unwrap_or_else(|_| {
                    panic!(
                        "{case}: not an OpenAI error body: {}",
                        String::from_utf8_lossy(bytes)
                    )
                });
            assert_eq!(error.error.kind, "invalid_request_error", "{case}");
        }
        RawOutcome::Closed => panic!("{case}: closed without an answer, expected {status}"),
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x4057_11e5),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn arbitrary_bytes_as_a_part_body_are_refused_with_400(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        framed in any::<bool>(),
    ) {
        let _memory = shared_memory();
        let hostile = hostile();
        hostile.run(async {
            let upload = fresh_upload(&hostile.client()).await;
            // Half the cases open with a real delimiter, to get past the preamble.
            let mut bytes = if framed {
                format!("--{BOUNDARY}\r\n").into_bytes()
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(&body);
            let outcome = raw_exchange(
                hostile.addr,
                &raw_request(
                    &format!("/v1/uploads/{upload}/parts"),
                    &multipart_content_type(),
                    &bytes,
                ),
            )
            .await;
            assert_refused(&outcome, 400, "arbitrary multipart body");
            hostile.assert_nothing_stored(&upload).await;
            hostile.still_serves().await;
        });
    }
}

#[test]
fn wrong_and_missing_boundaries_are_refused_with_400_and_store_nothing() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let upload = fresh_upload(&hostile.client()).await;
        let path = format!("/v1/uploads/{upload}/parts");
        let good = part_body(b"payload");
        let truncated = &good[..good.len() - 10];
        let cases: Vec<(&str, String, Vec<u8>)> = vec![
            (
                "no boundary parameter",
                "multipart/form-data".into(),
                good.clone(),
            ),
            (
                "empty boundary",
                "multipart/form-data; boundary=".into(),
                good.clone(),
            ),
            (
                "another boundary than the body's",
                "multipart/form-data; boundary=not-the-one".into(),
                good.clone(),
            ),
            ("not multipart", "application/json".into(), good.clone()),
            (
                "no closing delimiter",
                multipart_content_type(),
                truncated.to_vec(),
            ),
            (
                "only the closing delimiter",
                multipart_content_type(),
                format!("--{BOUNDARY}--\r\n").into_bytes(),
            ),
            ("empty body", multipart_content_type(), Vec::new()),
            (
                "boundary longer than RFC 2046 allows",
                format!("multipart/form-data; boundary={}", "b".repeat(200)),
                good.clone(),
            ),
        ];
        for (case, content_type, body) in cases {
            let outcome =
                raw_exchange(hostile.addr, &raw_request(&path, &content_type, &body)).await;
            assert_refused(&outcome, 400, case);
        }
        // No content type at all.
        let mut request = raw_head("POST", &path, &[("content-length", good.len().to_string())]);
        request.extend_from_slice(&good);
        assert_refused(
            &raw_exchange(hostile.addr, &request).await,
            400,
            "no content type",
        );
        hostile.assert_nothing_stored(&upload).await;
        hostile.still_serves().await;
    });
}

#[test]
fn a_part_body_split_at_every_byte_is_stored_byte_exact() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        // Data that looks like delimiters and line ends, to trip a careless scanner.
        let data = format!("\r\n--{BOUNDARY}x\r\n-\r\n--\r").into_bytes();
        let request_body = part_body(&data);
        let splits = request_body.len() + 1;
        let upload = client
            .new_upload("split.bin", (data.len() * splits) as u64)
            .await;
        let upload = upload.id.as_str().to_owned();
        let mut request = raw_head(
            "POST",
            &format!("/v1/uploads/{upload}/parts"),
            &[
                ("content-type", multipart_content_type()),
                ("content-length", request_body.len().to_string()),
            ],
        );
        let head_len = request.len();
        request.extend_from_slice(&request_body);
        let mut part_ids = Vec::new();
        for split in 0..splits {
            let mut stream = TcpStream::connect(hostile.addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (first, second) = request.split_at(head_len + split);
            stream.write_all(first).await.unwrap();
            stream.flush().await.unwrap();
            // Lets the server read the first piece on its own.
            tokio::time::sleep(Duration::from_millis(2)).await;
            stream.write_all(second).await.unwrap();
            let outcome = read_response(&mut stream).await.expect("an answer");
            let RawOutcome::Answered { status: 200, bytes } = &outcome else {
                panic!("split at {split}: {outcome:?}");
            };
            let part: uploads_core::types::UploadPart =
                serde_json::from_slice(raw_body(bytes)).unwrap();
            part_ids.push(part.id.as_str().to_owned());
        }
        let expected = data.repeat(splits);
        let done: Upload = client
            .complete(&upload, &part_ids, Some(&md5_hex([&expected[..]])))
            .await
            .unwrap()
            .expect(200)
            .json();
        let file = done.file.unwrap();
        let content = client
            .content(file.id.as_str())
            .await
            .unwrap()
            .expect(200)
            .body
            .clone();
        assert!(content == expected, "a split part was stored differently");
        hostile.still_serves().await;
    });
}

/// A request head with `filler` bytes of headers, in one header or in many.
fn big_head(filler: usize, one_header: bool) -> Vec<u8> {
    let mut head = b"POST /v1/uploads HTTP/1.1\r\nhost: reliability\r\n".to_vec();
    if one_header {
        head.extend_from_slice(format!("x-filler: {}\r\n", "a".repeat(filler)).as_bytes());
    } else {
        for n in 0..filler / 64 {
            head.extend_from_slice(format!("x-filler-{n:05}: {}\r\n", "a".repeat(48)).as_bytes());
        }
    }
    head.extend_from_slice(b"content-length: 0\r\n\r\n");
    head
}

#[test]
fn huge_headers_get_431_or_a_closed_connection() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        for one_header in [true, false] {
            let outcome = raw_exchange(hostile.addr, &big_head(80 * 1024, one_header)).await;
            assert!(
                matches!(outcome.status(), None | Some(431)),
                "{} bytes of headers (one header: {one_header}): {outcome:?}",
                80 * 1024
            );
        }
        hostile.still_serves().await;
    });
}

#[test]
fn deeply_nested_json_is_refused_with_400() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        let upload = fresh_upload(&client).await;
        let nested_arrays = "[".repeat(100_000);
        let nested_objects = "{\"a\":".repeat(50_000);
        for (path, body) in [
            ("/v1/uploads".to_owned(), &nested_arrays),
            ("/v1/uploads".to_owned(), &nested_objects),
            (format!("/v1/uploads/{upload}/complete"), &nested_arrays),
            (format!("/v1/uploads/{upload}/complete"), &nested_objects),
        ] {
            let request = raw_request(&path, "application/json", body.as_bytes());
            let outcome = raw_exchange(hostile.addr, &request).await;
            assert_refused(&outcome, 400, &format!("deep JSON to {path}"));
        }
        hostile.still_serves().await;
    });
}

/// Sends `body` in the background (the server may answer and close before it is all sent)
/// and reads the answer.
async fn send_large(addr: SocketAddr, request: Vec<u8>) -> RawOutcome {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut bytes = Vec::new();
    let mut buffer = [0; 4096];
    let outcome = tokio::time::timeout(crate::support::EXCHANGE_GUARD, async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
            if let Some(end) = find(&bytes, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the server neither answered nor closed");
    drop(writer.await);
    match std::str::from_utf8(&bytes[..bytes.len().min(12)])
        .ok()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => RawOutcome::Answered { status, bytes },
        None => RawOutcome::Closed,
    }
}

#[test]
fn a_ten_megabyte_json_body_is_refused_with_413() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        let upload = fresh_upload(&client).await;
        // Valid JSON all the way, so only its size can be the reason.
        let body = format!(
            "{{\"filename\":\"{}\",\"purpose\":\"user_data\",\"bytes\":1,\"mime_type\":\"text/plain\"}}",
            "x".repeat(10 * 1024 * 1024)
        );
        for path in ["/v1/uploads".to_owned(), format!("/v1/uploads/{upload}/complete")] {
            let outcome = send_large(
                hostile.addr,
                raw_request(&path, "application/json", body.as_bytes()),
            )
            .await;
            assert_refused(&outcome, 413, &format!("10 MB of JSON to {path}"));
        }
        hostile.still_serves().await;
    });
}

#[test]
fn wrong_content_lengths_store_nothing_and_break_nothing() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        let upload = fresh_upload(&client).await;
        let path = format!("/v1/uploads/{upload}/parts");
        let body = part_body(b"the whole part");
        // Shorter than declared, then the client closes its side.
        let mut request = raw_head(
            "POST",
            &path,
            &[
                ("content-type", multipart_content_type()),
                ("content-length", (body.len() + 100).to_string()),
            ],
        );
        request.extend_from_slice(&body);
        let mut stream = TcpStream::connect(hostile.addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        stream.shutdown().await.unwrap();
        let outcome = read_response(&mut stream)
            .await
            .expect("an answer or a close");
        assert!(
            matches!(outcome.status(), None | Some(400)),
            "a body cut short: {outcome:?}"
        );
        // Longer than declared: the declared bytes are the request, the rest is garbage that
        // follows it on the connection.
        let declared = body.len() - 20;
        let mut request = raw_head(
            "POST",
            &path,
            &[
                ("content-type", multipart_content_type()),
                ("content-length", declared.to_string()),
            ],
        );
        request.extend_from_slice(&body);
        let mut stream = TcpStream::connect(hostile.addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let first = read_response(&mut stream)
            .await
            .expect("an answer or a close");
        assert_refused(&first, 400, "a body longer than its Content-Length");
        // The surplus bytes are read as the next request: garbage, refused or cut off.
        let surplus = match &first {
            RawOutcome::Answered { bytes, .. } => after_answer(bytes).to_vec(),
            RawOutcome::Closed => Vec::new(),
        };
        let second = if surplus.is_empty() {
            read_response(&mut stream)
                .await
                .expect("an answer or a close")
                .status()
        } else {
            String::from_utf8_lossy(&surplus)
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
        };
        assert!(
            matches!(second, None | Some(400)),
            "the bytes after the declared body: {second:?}"
        );
        hostile.assert_nothing_stored(&upload).await;
        hostile.still_serves().await;
    });
}

/// Writes `bytes` one at a time with `gap` between them; `true` when the server closed the
/// connection or answered 408 before all were sent (what a slowloris must get).
async fn trickle(addr: SocketAddr, prefix: &[u8], bytes: &[u8], gap: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    if stream.write_all(prefix).await.is_err() {
        return true;
    }
    let mut answer = Vec::new();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        let mut buffer = [0; 1024];
        match tokio::time::timeout(gap, stream.read(&mut buffer)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buffer[..n]);
                let status = String::from_utf8_lossy(&answer);
                if status.starts_with("HTTP/1.1 408") {
                    return true;
                }
                panic!("a trickled request got {status}");
            }
        }
    }
    false
}

#[test]
fn headers_trickled_slower_than_the_header_timeout_are_cut_off() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        // 40 bytes at twice the timeout between them: 26 timeouts' worth.
        let head = b"x-slow-header-with-a-long-name: ab\r\nx-more: 1\r\n";
        let cut = trickle(
            hostile.addr,
            b"POST /v1/uploads HTTP/1.1\r\nhost: reliability\r\n",
            head,
            TIMEOUT * 2,
        )
        .await;
        assert!(
            cut,
            "a request head trickled for {:?} was never cut off",
            TIMEOUT * 2 * 47
        );
        hostile.still_serves().await;
    });
}

#[test]
fn a_part_body_trickled_slower_than_the_idle_timeout_gets_408_and_stores_nothing() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let upload = fresh_upload(&hostile.client()).await;
        let body = part_body(b"slow bytes");
        let head = raw_head(
            "POST",
            &format!("/v1/uploads/{upload}/parts"),
            &[
                ("content-type", multipart_content_type()),
                ("content-length", body.len().to_string()),
            ],
        );
        let mut stream = TcpStream::connect(hostile.addr).await.unwrap();
        stream.write_all(&head).await.unwrap();
        stream.write_all(&body[..20]).await.unwrap();
        // Then nothing: the body stopped moving.
        let outcome = read_response(&mut stream)
            .await
            .expect("an answer or a close");
        assert_refused(&outcome, 408, "a stalled part body");
        hostile.assert_nothing_stored(&upload).await;
        // The same for a JSON body.
        let json =
            br#"{"filename":"slow.txt","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#;
        let head = raw_head(
            "POST",
            "/v1/uploads",
            &[
                ("content-type", "application/json".to_owned()),
                ("content-length", json.len().to_string()),
            ],
        );
        let mut stream = TcpStream::connect(hostile.addr).await.unwrap();
        stream.write_all(&head).await.unwrap();
        stream.write_all(&json[..10]).await.unwrap();
        let outcome = read_response(&mut stream)
            .await
            .expect("an answer or a close");
        assert_refused(&outcome, 408, "a stalled JSON body");
        hostile.still_serves().await;
    });
}

/// Whether the server closes a connection on which nothing is sent, within `patience`
/// header timeouts.
async fn closes_silent_connection(addr: SocketAddr, sent: &[u8], patience: u32) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut buffer = [0; 64];
    for _ in 0..patience {
        if tokio::time::timeout(TIMEOUT * 2, stream.read(&mut buffer))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        assert!(
            closes_silent_connection(hostile.addr, b"", 20).await,
            "a connection that sent nothing stayed open for 40 header timeouts"
        );
    });
}

#[test]
fn a_trickled_http2_preface_is_cut_off() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        assert!(
            closes_silent_connection(hostile.addr, b"PRI * HTTP/2.0\r\n", 20).await,
            "a connection that stopped half way through the HTTP/2 preface stayed open"
        );
        let cut = trickle(
            hostile.addr,
            b"",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n",
            TIMEOUT * 2,
        )
        .await;
        assert!(
            cut,
            "an HTTP/2 preface trickled byte by byte was never cut off"
        );
    });
}

#[test]
fn silent_connections_cannot_lock_out_other_clients() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::builder()
            .data_dir(dir.path())
            .max_connections(2)
            .header_read_timeout(TIMEOUT)
            .body_idle_timeout(TIMEOUT)
            .start()
            .await
            .unwrap();
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(server.local_addr()).await.unwrap());
        }
        let client = Client::new(server.local_addr(), None);
        let answer =
            tokio::time::timeout(TIMEOUT * 40, client.create_upload("locked-out.txt", 1)).await;
        assert!(
            matches!(answer, Ok(Ok(ref reply)) if reply.status == 200),
            "two silent connections locked every other client out: {answer:?}"
        );
        drop(silent);
    });
}

#[test]
fn hostile_requests_leave_memory_bounded() {
    let Some(_) = resident_bytes() else {
        println!("skipped: no /proc/self/status here");
        return;
    };
    let _memory = exclusive_memory();
    let hostile = hostile();
    hostile.run(async {
        let upload = fresh_upload(&hostile.client()).await;
        let mut rng = Rng::new(0x3e3_0001);
        let mut batch = || {
            let mut requests = Vec::new();
            for _ in 0..40 {
                let len = rng.below(0..8192) as usize;
                let garbage = rng.bytes(len);
                requests.push(raw_request(
                    &format!("/v1/uploads/{upload}/parts"),
                    &multipart_content_type(),
                    &garbage,
                ));
            }
            requests.push(big_head(80 * 1024, true));
            requests.push(raw_request(
                "/v1/uploads",
                "application/json",
                "[".repeat(100_000).as_bytes(),
            ));
            requests
        };
        let large = raw_request(
            "/v1/uploads",
            "application/json",
            &vec![b' '; 10 * 1024 * 1024],
        );
        // A warm-up batch sizes the allocator's pools; later ones must not keep growing.
        for request in batch() {
            raw_exchange(hostile.addr, &request).await;
        }
        send_large(hostile.addr, large.clone()).await;
        let before = resident_bytes().unwrap();
        for _ in 0..5 {
            for request in batch() {
                raw_exchange(hostile.addr, &request).await;
            }
            send_large(hostile.addr, large.clone()).await;
        }
        let after = resident_bytes().unwrap();
        let grown = after.saturating_sub(before);
        println!("RSS across 5 hostile batches: {before} -> {after} bytes");
        assert!(
            grown < 64 * 1024 * 1024,
            "the process grew by {grown} bytes across hostile requests"
        );
        hostile.still_serves().await;
    });
}

/// Filenames that would be dangerous as paths, as JSON strings can carry them.
fn hostile_filenames() -> Vec<String> {
    vec![
        "../../../../etc/passwd".to_owned(), // tidy:not-a-path
        "..".to_owned(),
        "/absolute/path.txt".to_owned(),
        "C:\\Windows\\system32\\x.dll".to_owned(),
        "nul\0byte.txt".to_owned(),
        "new\nline\r\nand\ttab.txt".to_owned(),
        ".tmp-looks-like-a-temp-file".to_owned(),
        "state.json".to_owned(),
        "unicodé 💾 \u{202e}txt.exe".to_owned(),
        "x".repeat(10 * 1024),
        "ü".repeat(5 * 1024),
    ]
}

#[test]
fn hostile_filenames_are_metadata_only_and_returned_exactly() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        for filename in hostile_filenames() {
            let upload = client.new_upload(&filename, 3).await;
            assert_eq!(upload.filename, filename);
            let part = client.new_part(upload.id.as_str(), b"abc").await;
            let done: Upload = client
                .complete(upload.id.as_str(), &[part], None)
                .await
                .unwrap()
                .expect(200)
                .json();
            let file = done.file.unwrap();
            assert_eq!(file.filename, filename);
            let retrieved: FileObject = client
                .retrieve_file(file.id.as_str())
                .await
                .unwrap()
                .expect(200)
                .json();
            assert_eq!(retrieved.filename, filename);
            assert!(
                client
                    .files()
                    .await
                    .iter()
                    .any(|listed| listed.id == file.id && listed.filename == filename),
                "listed with its name"
            );
            // The same name through `POST /files`, escaped as browsers do.
            let escaped = filename
                .replace('"', "%22")
                .replace('\r', "%0D")
                .replace('\n', "%0A");
            let tail = format!("filename=\"{escaped}\"");
            let created: FileObject = client
                .create_file_raw(file_body(tail.as_bytes(), "user_data", b"abc"))
                .await
                .unwrap()
                .expect(200)
                .json();
            assert_eq!(created.filename, filename, "POST /files filename");
        }
        // A lone surrogate cannot be a string: the request is refused whole.
        let lone =
            br#"{"filename":"a\ud800b","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#;
        let outcome = raw_exchange(
            hostile.addr,
            &raw_request("/v1/uploads", "application/json", lone),
        )
        .await;
        assert_refused(&outcome, 400, "a lone surrogate in the filename");
        // Ids in the URL that try to be paths name nothing.
        for (method, path) in [
            ("POST", "/v1/uploads/..%2F..%2Ffiles/parts"),
            ("POST", "/v1/uploads/%2E%2E/complete"),
            ("POST", "/v1/uploads/.tmp-x/cancel"),
            ("GET", "/v1/files/..%2Fuploads"),
            ("GET", "/v1/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/content"),
            ("DELETE", "/v1/files/..%2F..%2F"),
            ("DELETE", "/v1/files/%00"),
        ] {
            let body = br#"{"part_ids":["part_x"]}"#;
            let mut request = raw_head(
                method,
                path,
                &[
                    ("content-type", "application/json".to_owned()),
                    ("content-length", body.len().to_string()),
                ],
            );
            request.extend_from_slice(body);
            let outcome = raw_exchange(hostile.addr, &request).await;
            assert_refused(&outcome, 404, &format!("{method} {path}"));
        }
        check_only_ids_on_disk(hostile.dir.path());
        hostile.still_serves().await;
    });
}

#[test]
fn non_utf8_multipart_filenames_are_stored_as_replacement_characters_never_as_paths() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        let raw: &[u8] = b"..\xff/\xfe\xc0\xaf..\x00evil";
        let mut tail = b"filename=\"".to_vec();
        tail.extend_from_slice(raw);
        tail.push(b'"');
        let created: FileObject = client
            .create_file_raw(file_body(&tail, "user_data", b"raw"))
            .await
            .unwrap()
            .expect(200)
            .json();
        assert_eq!(created.filename, String::from_utf8_lossy(raw));
        // RFC 5987 `filename*` carries any bytes: UTF-8 ones exactly.
        let created: FileObject = client
            .create_file_raw(file_body(
                b"filename*=UTF-8''%F0%9F%92%BE%2E%2E%2F%00x",
                "user_data",
                b"ext",
            ))
            .await
            .unwrap()
            .expect(200)
            .json();
        assert_eq!(created.filename, "💾../\0x");
        let content = client
            .content(created.id.as_str())
            .await
            .unwrap()
            .expect(200)
            .body
            .clone();
        assert_eq!(&content[..], b"ext");
        check_only_ids_on_disk(hostile.dir.path());
        hostile.still_serves().await;
    });
}

#[track_caller]
fn check_only_ids_on_disk(root: &Path) {
    if let Err(path) = only_id_named_entries(root) {
        panic!(
            "the data dir holds a name the store did not mint: {}",
            path.display()
        );
    }
}

#[test]
fn an_oversized_part_gets_413_and_stores_nothing() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let dir = tempfile::tempdir().unwrap();
        let limits = uploads_core::limits::Limits::default().with_max_part_bytes(1024);
        let server = Server::builder()
            .data_dir(dir.path())
            .limits(limits)
            .start()
            .await
            .unwrap();
        let client = Client::new(server.local_addr(), None);
        let upload = client.new_upload("big.bin", 4096).await;
        let id = upload.id.as_str();
        client.new_part(id, &[7; 1024]).await;
        let reply = client.add_part(id, &[7; 1025]).await.unwrap();
        reply.expect(413);
        let error = reply.error().error;
        assert_eq!(error.param.as_deref(), Some("data"));
        assert_eq!(error.kind, "invalid_request_error");
        let parts = dir.path().join("uploads").join(id).join("parts");
        let mut settled = false;
        for _ in 0..250 {
            if tree(&parts).len() == 1 {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(settled, "the oversized part left bytes: {:?}", tree(&parts));
    });
}

#[test]
fn chunked_part_bodies_are_stored_exactly_and_bad_chunking_is_refused() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let client = hostile.client();
        let data = b"chunked transfer of a part".to_vec();
        let body = part_body(&data);
        let upload = client.new_upload("chunked.bin", data.len() as u64).await;
        let id = upload.id.as_str().to_owned();
        let head = raw_head(
            "POST",
            &format!("/v1/uploads/{id}/parts"),
            &[
                ("content-type", multipart_content_type()),
                ("transfer-encoding", "chunked".to_owned()),
            ],
        );
        let mut request = head.clone();
        for chunk in body.chunks(7) {
            request.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let outcome = raw_exchange(hostile.addr, &request).await;
        let RawOutcome::Answered { status: 200, bytes } = &outcome else {
            panic!("a chunked part: {outcome:?}");
        };
        let part: uploads_core::types::UploadPart =
            serde_json::from_slice(raw_body(bytes)).unwrap();
        let done: Upload = client
            .complete(
                &id,
                &[part.id.as_str().to_owned()],
                Some(&md5_hex([&data[..]])),
            )
            .await
            .unwrap()
            .expect(200)
            .json();
        let content = client
            .content(done.file.unwrap().id.as_str())
            .await
            .unwrap()
            .expect(200)
            .body
            .clone();
        assert_eq!(&content[..], &data[..]);

        let upload = fresh_upload(&client).await;
        let head = raw_head(
            "POST",
            &format!("/v1/uploads/{upload}/parts"),
            &[
                ("content-type", multipart_content_type()),
                ("transfer-encoding", "chunked".to_owned()),
            ],
        );
        for garbage in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"ffffffffffffffffffff\r\nhello\r\n",
            b"5\r\nhello world, more than five\r\n0\r\n\r\n",
        ] {
            let mut request = head.clone();
            request.extend_from_slice(&body[..20]);
            request.splice(head.len()..head.len(), b"14\r\n".iter().copied());
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(garbage);
            let outcome = raw_exchange(hostile.addr, &request).await;
            assert!(
                matches!(outcome.status(), None | Some(400)),
                "bad chunking {:?}: {outcome:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        hostile.assert_nothing_stored(&upload).await;
        hostile.still_serves().await;
    });
}

#[test]
fn too_many_fields_are_refused_with_400() {
    let _memory = shared_memory();
    let hostile = hostile();
    hostile.run(async {
        let upload = fresh_upload(&hostile.client()).await;
        let mut body = Vec::new();
        for n in 0..1000 {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f{n}\"\r\n\r\nv\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let outcome = raw_exchange(
            hostile.addr,
            &raw_request(
                &format!("/v1/uploads/{upload}/parts"),
                &multipart_content_type(),
                &body,
            ),
        )
        .await;
        assert_refused(&outcome, 400, "a thousand fields");
        hostile.assert_nothing_stored(&upload).await;
        hostile.still_serves().await;
    });
}
