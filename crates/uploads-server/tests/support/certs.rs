//! A private certificate authority for the TLS tests: a CA and the certificates it signs for
//! a server (ours or PostgreSQL), written as PEM files that a server loads and a client trusts
//! (`SSL_CERT_FILE`, `sslrootcert=`, `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`).

#![allow(dead_code)] // Each test crate uses its own part of it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A test CA: a self-signed root that signs leaf certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM.
pub struct Leaf {
    /// The certificate (PEM), signed by the CA.
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// Where [`Leaf::write`] put a certificate and its key.
pub struct LeafFiles {
    /// The certificate's PEM file.
    pub cert: PathBuf,
    /// The key's PEM file (mode 0600: PostgreSQL refuses a key others can read).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, with a fresh key.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `path` (for `SSL_CERT_FILE` and the like).
    pub fn write_cert(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.cert_pem()).expect("write the CA certificate");
        path.to_path_buf()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes the certificate and the key as `<stem>.crt` and `<stem>.key` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> LeafFiles {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("key mode 0600");
        }
        LeafFiles { cert, key }
    }
}
