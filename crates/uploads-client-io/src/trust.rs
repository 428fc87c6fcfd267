//! Which certificate authorities the clients trust: Mozilla's roots (webpki-roots) and, beside
//! them, a team's own CA named as curl, Python and git read it, by `SSL_CERT_FILE` (one PEM
//! file of certificates) and `SSL_CERT_DIR` (a directory of PEM files, or several directories
//! separated by `:`).
//!
//! What is not a certificate is skipped: a file in the directory that holds none, the other
//! sections of a PEM file (keys, CRLs). A file that cannot be read or parsed is logged and
//! skipped, as is a certificate rustls cannot use as a root: one bad file never leaves a client
//! without the roots it had.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};
use rustls::{ClientConfig, RootCertStore};

/// The environment variable naming a PEM file of extra trusted certificates.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
/// The environment variable naming directories (`:`-separated) of PEM files of extra trusted
/// certificates.
pub const SSL_CERT_DIR: &str = "SSL_CERT_DIR";

/// Where extra trusted certificates are read from: what `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// say, or given explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraRoots {
    /// A PEM file of certificates.
    pub file: Option<PathBuf>,
    /// Directories whose files (PEM) hold certificates.
    pub dirs: Vec<PathBuf>,
}

impl ExtraRoots {
    /// What `SSL_CERT_FILE` and `SSL_CERT_DIR` name, read from the process environment (an
    /// empty variable names nothing).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name).map(PathBuf::from))
    }

    /// What `SSL_CERT_FILE` and `SSL_CERT_DIR` name, read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Self {
        let named = |name| lookup(name).filter(|path| !path.as_os_str().is_empty());
        Self {
            file: named(SSL_CERT_FILE),
            dirs: named(SSL_CERT_DIR).map_or_else(Vec::new, |dirs| {
                std::env::split_paths(&dirs)
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .collect()
            }),
        }
    }

    /// Whether nothing is named: the built-in roots alone.
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.dirs.is_empty()
    }

    /// The certificates found: the file's, then each directory's files' (in name order).
    /// What cannot be read is logged (`tracing::warn`) and skipped.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        let mut certificates = Vec::new();
        if let Some(file) = &self.file {
            certificates.extend(read_certificates(file));
        }
        for dir in &self.dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "{SSL_CERT_DIR}: cannot read the directory; skipped");
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .collect();
            files.sort();
            for file in files {
                certificates.extend(read_certificates(&file));
            }
        }
        certificates
    }

    /// Mozilla's roots and the certificates found here: what a client trusts.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for certificate in self.certificates() {
            if let Err(error) = roots.add(certificate) {
                tracing::warn!(%error, "a certificate from {SSL_CERT_FILE}/{SSL_CERT_DIR} cannot be a root; skipped");
            }
        }
        roots
    }
}

/// The roots a client trusts: Mozilla's, and those `SSL_CERT_FILE` / `SSL_CERT_DIR` name.
pub fn root_store() -> RootCertStore {
    ExtraRoots::from_env().root_store()
}

/// A rustls client configuration on the ring provider (the client's own: nothing
/// process-wide is installed), rustls' safe default protocol versions, trusting `roots`, no
/// client certificate and no ALPN (a client that speaks HTTP/2 adds it).
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    let builder = match ClientConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        // Ring supports rustls' default protocol versions, so this does not happen; were it
        // to, rustls' own default provider still gives a working client.
        Err(error) => {
            tracing::warn!(%error, "the ring provider was refused; using rustls' default");
            ClientConfig::builder()
        }
    };
    builder.with_root_certificates(roots).with_no_client_auth()
}

/// rustls' provider on ring, the client's own (not installed process-wide).
///
/// rustls 0.23.48 deprecates `ring::default_provider` because ring has no post-quantum key
/// exchange. It has no successor in rustls 0.23: the `rustls-ring` crate is for rustls 0.24,
/// and the other ways to a provider are aws-lc-rs, which this workspace keeps out, or the
/// process-wide default, which the clients promise not to install. Hence the one `allow`.
#[allow(
    deprecated,
    reason = "rustls 0.23 has no other ring provider that is not process-wide"
)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificates of the PEM file at `path`; none (logged) when it cannot be read or is not
/// PEM.
fn read_certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read a trusted certificate file; skipped");
            return Vec::new();
        }
    };
    match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, pem::Error>>() {
        Ok(certificates) => certificates,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "not a PEM file of certificates; skipped");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (rcgen), as PEM.
    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn the_variables_name_a_file_and_directories_and_empty_ones_name_nothing() {
        let lookup = |file: &str, dir: &str| {
            let (file, dir) = (file.to_owned(), dir.to_owned());
            ExtraRoots::from_lookup(move |name| match name {
                SSL_CERT_FILE => Some(PathBuf::from(&file)),
                SSL_CERT_DIR => Some(PathBuf::from(&dir)),
                _ => None,
            })
        };
        assert_eq!(
            lookup("/etc/team/ca.pem", "/etc/a:/etc/b"),
            ExtraRoots {
                file: Some("/etc/team/ca.pem".into()),
                dirs: vec!["/etc/a".into(), "/etc/b".into()],
            }
        );
        assert!(lookup("", "").is_empty());
        assert!(ExtraRoots::from_lookup(|_| None).is_empty());
    }

    #[test]
    fn certificates_come_from_the_file_and_every_file_of_the_directories_skipping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (ca_pem("a"), ca_pem("b"), ca_pem("c"));
        let file = dir.path().join("bundle.pem");
        // A bundle may carry other sections: only certificates count.
        std::fs::write(
            &file,
            format!("{a}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{b}"),
        )
        .unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("c.pem"), &c).unwrap();
        std::fs::write(certs.join("README"), "not a certificate").unwrap();
        std::fs::write(
            certs.join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\n!!\n",
        )
        .unwrap();
        std::fs::create_dir(certs.join("nested")).unwrap();
        let roots = ExtraRoots {
            file: Some(file),
            dirs: vec![certs, dir.path().join("missing")],
        };
        assert_eq!(roots.certificates(), vec![der(&a), der(&b), der(&c)]);
        let store = roots.root_store();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 3);
    }

    #[test]
    fn an_unreadable_file_leaves_the_built_in_roots() {
        let dir = tempfile::tempdir().unwrap();
        let roots = ExtraRoots {
            file: Some(dir.path().join("missing.pem")),
            dirs: Vec::new(),
        };
        assert!(roots.certificates().is_empty());
        assert_eq!(
            roots.root_store().len(),
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
    }
}
