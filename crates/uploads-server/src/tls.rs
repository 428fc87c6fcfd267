//! HTTPS: the certificate and key a server is given (PEM files), checked before it serves,
//! swapped in place when they are reloaded (SIGHUP), and the handshake of each connection,
//! bounded by the header timeout.
//!
//! A pair is one certificate chain and the private key of its first certificate. A pair that
//! cannot be used (a file missing or unreadable, not PEM, no certificate, no key, a key that
//! is not the certificate's) is refused with an error naming the file. At startup that stops
//! the server; on reload the pair in use stays, and the error is logged and returned.
//!
//! Reloading changes what *new* handshakes present; connections already open keep the
//! session they negotiated and are not dropped.
//!
//! The handshake and the first bytes of the decrypted stream (enough to tell HTTP/1 from
//! HTTP/2) must arrive within the header timeout, as a plain connection's first bytes must:
//! hyper-util reads those bytes with no timeout of its own, so a client that connects and
//! then stays silent would otherwise hold its connection slot for ever.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::server::{H2_PREFACE, protocol_known};

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (missing, no permission).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{} is not a PEM file: {source}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section (`PRIVATE KEY`, `RSA PRIVATE KEY`,
    /// `EC PRIVATE KEY`).
    #[error("{} holds no PEM private key", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind the server cannot sign with.
    #[error("the private key in {} cannot be used: {source}", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The certificate does not parse as X.509.
    #[error("the certificate in {} cannot be used: {source}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The key is not the private key of the certificate (the first of the chain).
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// A server's TLS: where its pair is read from, the pair in use, and the acceptor whose
/// handshakes present it.
pub(crate) struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentPair>,
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// Reads and checks the pair; offers HTTP/2 and HTTP/1.1 by ALPN.
    pub(crate) fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let provider = Arc::new(ring_provider());
        let pair = read_pair(&cert, &key, &provider)?;
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            // Ring supports rustls' safe default versions; this does not happen.
            .map_err(|source| TlsError::UnusableKey {
                path: key.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert,
            key,
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the pair again from the same files: new handshakes present it from now on.
    /// A pair that cannot be used leaves the one in use in place; why is logged and returned.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        match read_pair(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    %error,
                    "TLS certificate not reloaded; still serving the previous one"
                );
                Err(error)
            }
        }
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

/// rustls' provider on ring, given to each of the server's configurations (its HTTPS and
/// PostgreSQL's), never installed process-wide, as the clients'.
///
/// rustls 0.23.48 deprecates `ring::default_provider` (ring has no post-quantum key
/// exchange) with no successor in 0.23 but aws-lc-rs, which this workspace keeps out.
#[allow(
    deprecated,
    reason = "rustls 0.23 has no other ring provider that is not process-wide"
)]
pub(crate) fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads a certificate chain and its key from PEM files and checks they belong together.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let not_pem = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::NotPem { path, source }
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(not_pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = match PrivateKeyDer::from_pem_slice(&read(key)?) {
        Ok(private_key) => private_key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            });
        }
        Err(source) => return Err(not_pem(key)(source)),
    };
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|source| TlsError::UnusableKey {
            path: key.to_owned(),
            source,
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    match pair.keys_match() {
        // A key whose public half the provider cannot tell: the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        Err(source) => Err(TlsError::BadCertificate {
            path: cert.to_owned(),
            source,
        }),
    }
}

/// The pair new handshakes present; replaced whole on reload.
#[derive(Debug)]
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Why a TLS connection was closed before it was served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// The handshake and the first bytes did not arrive within the header timeout.
    #[error("no request within the header timeout")]
    TimedOut,
    /// The handshake failed or the connection broke.
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] io::Error),
    /// The client closed the connection before sending a byte of HTTP.
    #[error("closed before a request")]
    Closed,
}

/// Performs the handshake and reads enough of the decrypted stream to tell HTTP/1 from
/// HTTP/2, all within `timeout`; the stream returned gives those bytes back first.
pub(crate) async fn accept_in_time(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Result<Replayed<TlsStream<TcpStream>>, AcceptError> {
    let accept = async {
        let mut stream = acceptor.accept(stream).await?;
        let mut seen = Vec::with_capacity(H2_PREFACE.len());
        while !protocol_known(&seen) {
            let mut more = [0; H2_PREFACE.len()];
            let n = stream
                .read(&mut more[..H2_PREFACE.len() - seen.len()])
                .await?;
            if n == 0 {
                return Err(AcceptError::Closed);
            }
            seen.extend_from_slice(&more[..n]);
        }
        Ok(Replayed {
            seen,
            read_again: 0,
            inner: stream,
        })
    };
    tokio::time::timeout(timeout, accept)
        .await
        .unwrap_or(Err(AcceptError::TimedOut))
}

/// A stream whose first bytes were already read: they are read again first.
pub(crate) struct Replayed<S> {
    seen: Vec<u8>,
    read_again: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let left = &this.seen[this.read_again..];
        if left.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        this.read_again += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn the_bytes_read_to_tell_the_protocol_are_read_again_first() {
        let inner: &[u8] = b" /v1/files HTTP/1.1\r\n\r\n";
        let mut stream = Replayed {
            seen: b"GET".to_vec(),
            read_again: 0,
            inner,
        };
        let mut small = [0; 2];
        stream.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GE");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"T /v1/files HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn the_protocol_is_known_from_the_first_byte_off_the_http2_preface_or_the_whole_preface() {
        assert!(!protocol_known(b""));
        assert!(!protocol_known(b"PRI * HTTP/2"));
        assert!(protocol_known(b"G"));
        assert!(protocol_known(b"PRI * HTTP/1"));
        assert!(protocol_known(H2_PREFACE));
    }
}
