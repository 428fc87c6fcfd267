//! Peers on 127.0.0.1 that speak the other protocol than the client expects, each counting
//! the connections it accepts (a retry is one more connection): a plain HTTP server, and a
//! real TLS server (rustls) whose certificate no client trusts. Shared by the adapters' and
//! the CLI's tests (`#[path]`).
//!
//! Every attempt a client makes fails only after the peer answered it, so once the client
//! has returned its error, [`Peer::accepted`] is exactly the number of attempts.
#![allow(dead_code)] // each test file uses a part

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate for 127.0.0.1 and `localhost`, valid for a century, made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500
/// -subj "/CN=uploads test peer" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost"
/// -addext "basicConstraints=critical,CA:FALSE"`.
/// No root store holds it: a client that checks certificates refuses it.
const CERTIFICATE: &[u8] = include_bytes!("test-peer.cert.pem");
/// The certificate's private key; it protects nothing but these tests.
const PRIVATE_KEY: &[u8] = include_bytes!("test-peer.key.pem");

/// A hang guard for a peer waiting on its client, never a measurement.
const HANG_GUARD: Duration = Duration::from_mins(1);

/// A listening peer.
pub struct Peer {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Peer {
    /// `host:port` of the peer, as the clients' errors name it.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// The base URL of the peer under `scheme` (`http` or `https`).
    pub fn base_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/v1", self.address)
    }

    /// How many connections the peer accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A plain HTTP server: whatever arrives (a TLS `ClientHello` included) gets `400 Bad
/// Request`, as hyper's server answers bytes it cannot parse.
pub fn plain_http() -> Peer {
    serve(|mut stream| {
        let mut buffer = [0; 4096];
        let _ = stream.read(&mut buffer);
        let _ = stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        finish(stream);
    })
}

/// A TLS server (rustls, ring) with a certificate no client trusts: a TLS client refuses the
/// certificate; a plain HTTP request gets a TLS alert record.
pub fn tls() -> Peer {
    let certificate = CertificateDer::from_pem_slice(CERTIFICATE).expect("the test certificate");
    let key = PrivateKeyDer::from_pem_slice(PRIVATE_KEY).expect("the test key");
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .expect("a server config"),
    );
    serve(move |mut stream| {
        let Ok(mut connection) = rustls::ServerConnection::new(Arc::clone(&config)) else {
            return;
        };
        // Fails once the client refuses the certificate, or once the client's bytes are not
        // TLS (after writing the alert that says so).
        while connection.is_handshaking() {
            match connection.complete_io(&mut stream) {
                Ok((0, 0)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        finish(stream);
    })
}

/// A peer on 127.0.0.1, port 0, handling each connection it accepts with `handle`, one at a
/// time, for as long as the test process lives.
fn serve(handle: impl Fn(TcpStream) + Send + 'static) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("the bound address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(HANG_GUARD));
            handle(stream);
        }
    });
    Peer { address, accepted }
}

/// Ends a connection after its answer: no more writes, then what the client still sends is
/// read until it closes, so the answer is never lost to a reset.
fn finish(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}
