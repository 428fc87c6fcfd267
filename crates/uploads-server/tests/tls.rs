//! HTTPS, for real: a private CA signs the server's certificate, a rustls client trusting
//! that CA uploads over HTTP/1.1 and HTTP/2 (chosen by ALPN), the pair is reloaded in place
//! while a connection stays open, a pair that cannot be served is refused (at startup, or on
//! reload while the old one stays), and a client that never finishes its handshake gives its
//! connection slot back after the header timeout.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use uploads_core::api::{self, ClientConfig as ApiConfig};
use uploads_core::digest::Md5Hasher;
use uploads_core::multipart::Boundary;
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, ErrorBody, ListFilesQuery, Purpose, UploadStatus,
};
use uploads_server::{RunningServer, Server, ServerBuilder};

use support::certs::{Leaf, LeafFiles, TestCa};
use support::logs::logs;
use support::{KEY_A, OWNER_A};

/// A CA, a certificate it issued for `localhost` and `127.0.0.1` written to `dir`, and the
/// files.
fn ca_and_pair(dir: &Path) -> (TestCa, Leaf, LeafFiles) {
    let ca = TestCa::new("uploads test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let files = leaf.write(dir, "server");
    (ca, leaf, files)
}

/// An HTTPS server over `dir/data` serving `files`.
async fn https_server(
    dir: &Path,
    files: &LeafFiles,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> RunningServer {
    logs();
    configure(
        Server::builder()
            .data_dir(dir.join("data"))
            .api_key(KEY_A, OWNER_A)
            .tls(&files.cert, &files.key),
    )
    .start()
    .await
    .unwrap()
}

/// A rustls client configuration trusting only `ca`, offering `alpn`.
fn trusting(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated, reason = "the ring provider, as the server's")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// One TLS connection to the server, with what its handshake settled.
struct Connection {
    /// The protocol ALPN chose.
    alpn: Option<Vec<u8>>,
    /// The certificate the server presented (the chain's first).
    served_cert: CertificateDer<'static>,
    sender: Sender,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Connects to `addr` as `localhost` with `config`; speaks what ALPN chose.
    async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Self, std::io::Error> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let served_cert = session.peer_certificates().unwrap()[0].clone().into_owned();
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(Self {
            alpn,
            served_cert,
            sender,
        })
    }

    /// Sends `request` (built by the core) with the test key; the answer, read whole.
    async fn send(&mut self, request: Request<Bytes>) -> Response<Bytes> {
        let (mut head, body) = request.into_parts();
        head.headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {KEY_A}").parse().unwrap(),
        );
        if let Some(authority) = head.uri.authority() {
            let host = authority.as_str().parse().unwrap();
            head.headers.entry(http::header::HOST).or_insert(host);
        }
        let request = Request::from_parts(head, Full::new(body));
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Sender::Http2(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
        };
        let (head, body) = response.into_parts();
        Response::from_parts(head, body.collect().await.unwrap().to_bytes())
    }
}

/// The core's requests, for the server at `addr` (by name, as the certificate says).
fn api(addr: SocketAddr) -> ApiConfig {
    ApiConfig::new(format!("https://localhost:{}/v1", addr.port())).with_api_key(KEY_A)
}

/// Uploads `data` in two Parts on `connection`, completes with the md5, and reads the File
/// back: the bytes that arrived.
async fn upload_and_read_back(connection: &mut Connection, addr: SocketAddr, data: &[u8]) -> Bytes {
    let api = api(addr);
    let create = CreateUploadRequest {
        filename: "data.bin".into(),
        purpose: Purpose::UserData,
        bytes: data.len() as u64,
        mime_type: "application/octet-stream".into(),
        expires_after: None,
    };
    let upload =
        api::parse_create_upload(&connection.send(api.create_upload(&create).unwrap()).await)
            .unwrap();
    let mut part_ids = Vec::new();
    for chunk in data.chunks(data.len().div_ceil(2)) {
        let boundary = Boundary::new("tls-test-boundary").unwrap();
        let request = api
            .add_upload_part_bytes(&upload.id, &boundary, chunk)
            .unwrap();
        let part = api::parse_add_upload_part(&connection.send(request).await).unwrap();
        part_ids.push(part.id);
    }
    let mut md5 = Md5Hasher::new();
    md5.update(data);
    let complete = CompleteUploadRequest {
        part_ids,
        md5: Some(md5.finish_hex()),
    };
    let completed = api::parse_complete_upload(
        &connection
            .send(api.complete_upload(&upload.id, &complete).unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(completed.status, UploadStatus::Completed);
    let file = completed.file.unwrap();
    let content = connection.send(api.download_file(&file.id).unwrap()).await;
    assert_eq!(content.status(), StatusCode::OK);
    api::parse_download_file(content).unwrap()
}

#[tokio::test]
async fn an_upload_over_https_arrives_whole_over_http1_and_http2_chosen_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| builder).await;
    let addr = server.local_addr();
    assert_eq!(server.base_url(), format!("https://{addr}/v1"));
    let data: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();
    for (offered, chosen) in [
        (&[&b"h2"[..], &b"http/1.1"[..]][..], &b"h2"[..]),
        (&[&b"http/1.1"[..]][..], &b"http/1.1"[..]),
    ] {
        let mut connection = Connection::open(addr, trusting(&ca, offered))
            .await
            .unwrap();
        assert_eq!(connection.alpn.as_deref(), Some(chosen));
        assert_eq!(
            connection.served_cert,
            CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
        );
        let arrived = upload_and_read_back(&mut connection, addr, &data).await;
        assert_eq!(arrived, data, "over {}", String::from_utf8_lossy(chosen));
    }
    // A client offering no ALPN at all speaks HTTP/1.1.
    let mut connection = Connection::open(addr, trusting(&ca, &[])).await.unwrap();
    assert_eq!(connection.alpn, None);
    assert_eq!(
        upload_and_read_back(&mut connection, addr, b"hello").await,
        &b"hello"[..]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| builder).await;
    let stranger = TestCa::new("another CA");
    let error = Connection::open(server.local_addr(), trusting(&stranger, &[b"h2"]))
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
}

/// `leaf`'s certificate as the DER a client sees.
fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_reload_serves_the_new_pair_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, first, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| builder).await;
    let addr = server.local_addr();
    let mut open = Connection::open(addr, trusting(&ca, &[b"h2"]))
        .await
        .unwrap();
    let mut open_h1 = Connection::open(addr, trusting(&ca, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(open.served_cert, der(&first));

    // The renewed certificate (same names, new key) replaces the files, then SIGHUP.
    let renewed = ca.issue(&["localhost", "127.0.0.1"]);
    renewed.write(dir.path(), "server");
    server.reload_tls().unwrap();

    let mut fresh = Connection::open(addr, trusting(&ca, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(fresh.served_cert, der(&renewed));
    assert_ne!(der(&renewed), der(&first));
    assert_eq!(
        upload_and_read_back(&mut fresh, addr, b"new").await,
        &b"new"[..]
    );
    // The connections opened before go on, on the session they negotiated.
    assert_eq!(
        upload_and_read_back(&mut open, addr, b"old h2").await,
        &b"old h2"[..]
    );
    assert_eq!(
        upload_and_read_back(&mut open_h1, addr, b"old h1").await,
        &b"old h1"[..]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_head_refused_over_https_gets_the_services_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| builder).await;
    let addr = server.local_addr();
    let mut connection = Connection::open(addr, trusting(&ca, &[b"http/1.1"]))
        .await
        .unwrap();
    let mut request = api(addr).list_files(&ListFilesQuery::default()).unwrap();
    request
        .headers_mut()
        .insert("x-filler", "x".repeat(70 * 1024).parse().unwrap());
    let refused = connection.send(request).await;
    assert_eq!(
        refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert!(
        refused.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body: ErrorBody = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(body.error.kind, "invalid_request_error");
    server.shutdown().await;
}

/// Starts a server on `files`; the error it fails with.
async fn refused_start(dir: &Path, cert: &Path, key: &Path) -> std::io::Error {
    Server::builder()
        .data_dir(dir.join("data"))
        .tls(cert, key)
        .start()
        .await
        .err()
        .expect("the server started with a pair it cannot serve")
}

#[tokio::test]
async fn a_pair_that_cannot_be_served_is_refused_at_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, files) = ca_and_pair(dir.path());
    let other = ca.issue(&["localhost"]).write(dir.path(), "other");
    let missing = dir.path().join("missing.crt");
    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n").unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let cases: [(&Path, &Path, String); 6] = [
        (
            &missing,
            &files.key,
            format!("cannot read {}: ", missing.display()),
        ),
        (
            &files.cert,
            &missing,
            format!("cannot read {}: ", missing.display()),
        ),
        (
            &not_pem,
            &files.key,
            format!("{} is not a PEM file", not_pem.display()),
        ),
        // The files given the wrong way round.
        (
            &files.key,
            &files.cert,
            format!("{} holds no PEM certificate", files.key.display()),
        ),
        (
            &files.cert,
            &empty,
            format!("{} holds no PEM private key", empty.display()),
        ),
        (
            &files.cert,
            &other.key,
            format!(
                "the private key in {} does not match the certificate in {}",
                other.key.display(),
                files.cert.display()
            ),
        ),
    ];
    for (cert, key, expected) in cases {
        let error = refused_start(dir.path(), cert, key).await;
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
        assert!(
            error.to_string().starts_with(&expected),
            "{error}\nexpected: {expected}"
        );
    }
    // Nothing was created for a server that did not start.
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn a_bad_pair_on_reload_keeps_the_one_in_use_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, first, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| builder).await;
    let addr = server.local_addr();

    // Half a renewal: the new certificate is in place, its key is not.
    let renewed = ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(&files.cert, &renewed.cert_pem).unwrap();
    let error = server.reload_tls().unwrap_err();
    let expected = format!(
        "the private key in {} does not match the certificate in {}",
        files.key.display(),
        files.cert.display()
    );
    assert_eq!(error.to_string(), expected);
    logs().line_with(&[
        "WARN",
        "TLS certificate not reloaded; still serving the previous one",
        &expected,
    ]);
    let mut connection = Connection::open(addr, trusting(&ca, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(connection.served_cert, der(&first));
    assert_eq!(
        upload_and_read_back(&mut connection, addr, b"still").await,
        &b"still"[..]
    );

    // A key file that went missing: the same.
    std::fs::remove_file(&files.key).unwrap();
    let error = server.reload_tls().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read {}", files.key.display())),
        "{error}"
    );
    let connection = Connection::open(addr, trusting(&ca, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(connection.served_cert, der(&first));

    // Once the pair is whole again, the reload takes.
    std::fs::write(&files.key, &renewed.key_pem).unwrap();
    server.reload_tls().unwrap();
    let connection = Connection::open(addr, trusting(&ca, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(connection.served_cert, der(&renewed));
    server.shutdown().await;
}

/// Reads from `stream` until the server closes it.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut sink = [0; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_client_silent_in_or_after_its_handshake_gives_its_slot_back_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, files) = ca_and_pair(dir.path());
    let server = https_server(dir.path(), &files, |builder| {
        // Only the header timeout can free the slot: the idle timeout is out of reach.
        builder
            .max_connections(1)
            .header_read_timeout(Duration::from_millis(200))
            .idle_timeout(Duration::from_hours(1))
    })
    .await;
    let addr = server.local_addr();

    // Connects and never starts the handshake: it holds the one slot until the server
    // closes it, and the next client is served after that.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let next = tokio::spawn({
        let config = trusting(&ca, &[b"h2"]);
        async move {
            let mut connection = Connection::open(addr, config).await.unwrap();
            upload_and_read_back(&mut connection, addr, b"served").await
        }
    });
    closed_by_server(&mut silent).await;
    assert_eq!(next.await.unwrap(), &b"served"[..]);

    // Starts the handshake and stops half way (a ClientHello's first bytes).
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    closed_by_server(&mut stalled).await;

    // Completes the handshake and then says nothing.
    let quiet = TlsConnector::from(trusting(&ca, &[b"h2"]))
        .connect(
            ServerName::try_from("localhost").unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap();
    let mut quiet = quiet;
    let mut sink = [0; 64];
    // The server's close_notify, then the end of the stream.
    while quiet.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    let mut connection = Connection::open(addr, trusting(&ca, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(
        upload_and_read_back(&mut connection, addr, b"after").await,
        &b"after"[..]
    );
    server.shutdown().await;
}
