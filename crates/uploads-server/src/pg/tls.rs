//! PostgreSQL over TLS, configured by the database URL as libpq reads it.
//!
//! The URL of a managed database (RDS, Supabase, Neon, ...) works as its console gives it:
//! both forms tokio-postgres reads (`postgres://user@host:5432/db?sslmode=verify-full` and
//! `host=... dbname=... sslmode=verify-full`) may carry two of libpq's parameters, which are
//! taken off the URL here; the rest of it is tokio-postgres's to read.
//!
//! * `sslmode`, default `prefer` (as libpq):
//!
//!   | `sslmode`     | TLS                                       | the server's certificate            |
//!   |---------------|-------------------------------------------|-------------------------------------|
//!   | `disable`     | never                                     | -                                   |
//!   | `prefer`      | if the server accepts it, else plain      | not checked, unless `sslrootcert`   |
//!   | `require`     | always: a server without TLS is refused   | not checked, unless `sslrootcert`   |
//!   | `verify-ca`   | always                                    | signed by a root of `sslrootcert`   |
//!   | `verify-full` | always                                    | signed by a root, and for the host  |
//!
//!   As libpq documents, a root certificate file makes `prefer` and `require` check the
//!   chain as `verify-ca` does. The host name checked by `verify-full` is `host` (a DNS name
//!   or an IP address in the certificate's subject alternative names); `hostaddr`, when given,
//!   is only where the connection goes. Over a Unix socket no TLS is used, whatever the mode
//!   (libpq ignores `sslmode` there too).
//! * `sslrootcert=FILE`: the roots, PEM certificates (relative to the working directory).
//!   `sslrootcert=system` means the public roots of the `webpki-roots` crate (Mozilla's), and
//!   then, as in libpq 16, `sslmode` defaults to `verify-full` and a weaker mode is an error.
//!   Without `sslrootcert`, `verify-full` uses those public roots too.
//!
//! Where this is stricter than libpq, on purpose:
//!
//! * an `sslrootcert` file that cannot be read, or holds no certificate, is an error in every
//!   mode but `disable` (libpq skips verification silently when the file is missing, unless
//!   the mode is `verify-*`): a typo MUST NOT turn verification off;
//! * `verify-ca` without `sslrootcert` is an error (libpq looks for `~/.postgresql/root.crt`
//!   and fails without it): checking a chain up to the public roots, but not the name, would
//!   accept anyone who holds a certificate for any name;
//! * under `prefer`, a handshake that fails (a certificate that `sslrootcert` does not
//!   vouch for) is an error; libpq would retry without TLS.
//!
//! What it does *not* do: client certificates (`sslcert`, `sslkey`), revocation lists
//! (`sslcrl`), `sslmode=allow`, the `PGSSL*` environment variables and libpq's default files
//! under `~/.postgresql/`; tokio-postgres refuses the parameters it does not know, and this
//! module refuses `allow`. TLS is rustls with the ring provider, given to each connection
//! (never installed process-wide); the connector also gives tokio-postgres the channel
//! binding of SCRAM-SHA-256-PLUS.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::with_sources;

/// The ALPN protocol of PostgreSQL (required by a server that takes TLS directly).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// tokio-postgres's words when a server answers `N` to the request for TLS.
const SERVER_REFUSED_TLS: &str = "server does not support TLS";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    /// Plain sessions only.
    Disable,
    /// TLS when the server accepts it.
    Prefer,
    /// TLS or nothing.
    Require,
    /// TLS with a certificate signed by a trusted root.
    VerifyCa,
    /// TLS with a certificate signed by a trusted root and issued for the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsUrlError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(TlsUrlError::Allow),
            other => Err(TlsUrlError::UnknownMode(other.to_owned())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// PEM certificates in a file.
    File(PathBuf),
    /// `system`: the public roots of `webpki-roots`.
    System,
}

/// The TLS parameters a URL gave.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    mode: Option<SslMode>,
    roots: Option<Roots>,
}

impl TlsParams {
    /// Takes `key=value` when it is one of ours: whether it was.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, TlsUrlError> {
        match key {
            "sslmode" => self.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => {
                self.roots = match value {
                    "" => None,
                    "system" => Some(Roots::System),
                    file => Some(Roots::File(PathBuf::from(file))),
                };
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The mode in force and how a certificate is checked, by libpq's rules (and the
    /// stricter ones of the module doc).
    fn policy(self) -> Result<Policy, TlsUrlError> {
        let system = self.roots == Some(Roots::System);
        let mode = self.mode.unwrap_or(if system {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        if system && mode != SslMode::VerifyFull {
            return Err(TlsUrlError::WeakWithSystem(mode.as_str()));
        }
        let check = match (mode, self.roots) {
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(roots)) => {
                Check::Chain(roots)
            }
            (SslMode::VerifyCa, None) => return Err(TlsUrlError::VerifyCaWithoutRoots),
            (SslMode::VerifyFull, roots) => Check::ChainAndName(roots.unwrap_or(Roots::System)),
        };
        Ok(Policy { mode, check })
    }
}

/// How the server's certificate is checked.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Not at all (the handshake still proves the server holds the key it presents).
    Nothing,
    /// Its chain up to one of these roots, not its names.
    Chain(Roots),
    /// Its chain up to one of these roots and that it names the host.
    ChainAndName(Roots),
}

/// What a URL asks of TLS.
#[derive(Debug, PartialEq, Eq)]
struct Policy {
    mode: SslMode,
    check: Check,
}

/// Why a database URL's TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
enum TlsUrlError {
    /// `sslmode` has a value libpq does not know.
    #[error(
        "sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full (as libpq)"
    )]
    UnknownMode(String),
    /// `sslmode=allow`.
    #[error("sslmode=allow is not supported (it tries a plain session first): use prefer")]
    Allow,
    /// `sslrootcert=system` with a mode weaker than `verify-full`.
    #[error(
        "sslmode={0} may not be used with sslrootcert=system (use verify-full): anyone can get a certificate from a public root for a name they control"
    )]
    WeakWithSystem(&'static str),
    /// `verify-ca` without roots of its own.
    #[error(
        "sslmode=verify-ca needs sslrootcert=FILE (the CA that signed the server's certificate): with the public roots it would accept anyone's certificate; use verify-full to check the public roots and the host name"
    )]
    VerifyCaWithoutRoots,
    /// A parameter is not percent-encoded UTF-8.
    #[error("the database URL's parameter {0} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// The roots file cannot be read.
    #[error("cannot read sslrootcert {}", path.display())]
    ReadRoots {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The roots file is not PEM.
    #[error("sslrootcert {} is not a file of PEM certificates", path.display())]
    ParseRoots {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The roots file holds no certificate usable as a root.
    #[error("sslrootcert {} holds no certificate usable as a root", path.display())]
    NoRoots {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (it does not, with the ring provider).
    #[error("configuring TLS for PostgreSQL")]
    Rustls(#[source] rustls::Error),
    /// rustls refused the roots.
    #[error("configuring the verification of PostgreSQL's certificate")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    /// The rest of the URL, as tokio-postgres reads it.
    #[error("the database URL is not valid")]
    Url(#[source] tokio_postgres::Error),
}

/// How sessions to one database use TLS: the connector to give the pool, and what to say
/// when connecting fails.
pub(crate) struct PgTls {
    mode: SslMode,
    /// The servers, `host:port` each, for error messages.
    servers: String,
    connector: MakeRustlsConnect,
}

impl PgTls {
    /// Reads a database URL (either form) as libpq does: tokio-postgres's config, with the
    /// TLS of `sslmode` and `sslrootcert` set, and the connector that does it. The error
    /// (`InvalidInput`) says what is wrong, naming the parameter or the file.
    pub(crate) fn from_url(url: &str) -> io::Result<(tokio_postgres::Config, Self)> {
        Self::read(url)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, with_sources(&error)))
    }

    fn read(url: &str) -> Result<(tokio_postgres::Config, Self), TlsUrlError> {
        let (rest, params) = split_tls_params(url)?;
        let policy = params.policy()?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(TlsUrlError::Url)?;
        let hosts = config.get_hosts();
        let no_hosts = hosts.is_empty();
        let only_sockets = !no_hosts
            && config.get_hostaddrs().is_empty()
            && hosts.iter().all(|host| !matches!(host, Host::Tcp(_)));
        config.ssl_mode(if only_sockets {
            tokio_postgres::config::SslMode::Disable
        } else {
            policy.mode.wire()
        });
        // tokio-postgres names the server to TLS by `host` only: with `hostaddr` alone, the
        // address is the name (as libpq checks it).
        if no_hosts {
            for addr in config.get_hostaddrs().to_vec() {
                config.host(addr.to_string());
            }
        }
        let tls = Self {
            mode: policy.mode,
            servers: servers(&config),
            connector: MakeRustlsConnect::new(client_config(&policy.check)?),
        };
        Ok((config, tls))
    }

    /// The connector for tokio-postgres (deadpool's manager).
    pub(crate) fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// The error of a first connection that failed, said plainly when TLS is why: a server
    /// that does not accept TLS, a handshake (a certificate) refused. `target` names the
    /// database.
    pub(crate) fn connect_failed(
        &self,
        target: &str,
        error: &deadpool_postgres::PoolError,
    ) -> io::Error {
        // The pool's words only repeat its source's.
        let error: &(dyn std::error::Error + 'static) = match error {
            deadpool_postgres::PoolError::Backend(error) => error,
            other => other,
        };
        let (servers, mode) = (&self.servers, self.mode.as_str());
        let refused = sources(error).any(|cause| cause.to_string() == SERVER_REFUSED_TLS);
        let message = if refused {
            format!("PostgreSQL at {servers} does not accept TLS, and sslmode={mode}")
        } else if let Some(why) = sources(error).find(|cause| is_tls_failure(*cause)) {
            format!("the TLS handshake with PostgreSQL at {servers} failed (sslmode={mode}): {why}")
        } else {
            format!(
                "cannot reach the database at {target}: {}",
                with_sources(error)
            )
        };
        io::Error::new(io::ErrorKind::ConnectionRefused, message)
    }
}

/// `error` and its sources.
fn sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// Whether `error` is rustls's (as the connector's `io::Error` carries it).
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<rustls::Error>()
        || error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<rustls::Error>)
}

/// `host:port` of each server of `config`.
fn servers(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// rustls's client configuration for `check`, with the ring provider.
fn client_config(check: &Check) -> Result<ClientConfig, TlsUrlError> {
    let provider = Arc::new(crate::tls::ring_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(ChainVerifier {
            roots: None,
            algorithms,
        }),
        Check::Chain(roots) => Arc::new(ChainVerifier {
            roots: Some(Arc::new(load_roots(roots)?)),
            algorithms,
        }),
        Check::ChainAndName(roots) => WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_roots(roots)?),
            provider.clone(),
        )
        .build()
        .map_err(TlsUrlError::Verifier)?,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsUrlError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}

/// The roots of `sslrootcert`.
fn load_roots(roots: &Roots) -> Result<RootCertStore, TlsUrlError> {
    let path = match roots {
        Roots::System => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        Roots::File(path) => path,
    };
    let pem = std::fs::read(path).map_err(|source| TlsUrlError::ReadRoots {
        path: path.clone(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsUrlError::ParseRoots {
            path: path.clone(),
            source,
        })?;
    let mut store = RootCertStore::empty();
    let (added, _unusable) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(TlsUrlError::NoRoots { path: path.clone() });
    }
    Ok(store)
}

/// A verifier of the certificate chain only (`verify-ca`, and `prefer`/`require` with
/// roots), or of nothing but the handshake's signatures (without roots). The names in the
/// certificate are never checked: that is `verify-full`'s, which uses rustls's own verifier.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` off a connection string in either of tokio-postgres's
/// forms; the rest is returned as it was written. The last of a repeated parameter wins.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), TlsUrlError> {
    let mut params = TlsParams::default();
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|scheme| url.starts_with(scheme));
    let rest = match scheme {
        Some(scheme) => split_url(url, scheme.len(), &mut params)?,
        None => split_key_values(url, &mut params)?,
    };
    Ok((rest, params))
}

/// [`split_tls_params`] of `postgres://...?k=v&...`, found where tokio-postgres finds them:
/// the credentials end at the first `@`, the parameters start at the first `?` after them.
fn split_url(url: &str, scheme_len: usize, params: &mut TlsParams) -> Result<String, TlsUrlError> {
    let after_credentials = url[scheme_len..]
        .find('@')
        .map_or(scheme_len, |at| scheme_len + at + 1);
    let Some(question) = url[after_credentials..].find('?') else {
        return Ok(url.to_owned());
    };
    let (head, query) = url.split_at(after_credentials + question);
    let mut kept = Vec::new();
    for pair in query[1..].split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !params.take(&percent_decode(key)?, &percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    })
}

/// `%XX` decoded, as tokio-postgres decodes a URL's parts (`+` stays `+`).
fn percent_decode(text: &str) -> Result<String, TlsUrlError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| TlsUrlError::Encoding(text.to_owned()))
}

/// [`split_tls_params`] of `key=value key='quoted \' value' ...`, read as tokio-postgres
/// reads it. A string it cannot read is returned whole, for tokio-postgres to say why.
fn split_key_values(text: &str, params: &mut TlsParams) -> Result<String, TlsUrlError> {
    let Some(pairs) = key_values(text) else {
        return Ok(text.to_owned());
    };
    let mut kept = Vec::new();
    for (key, value, span) in pairs {
        if !params.take(key, &value)? {
            kept.push(&text[span]);
        }
    }
    Ok(kept.join(" "))
}

/// The `(key, value, where the pair is)` of a key=value string, or `None` if it is not one.
fn key_values(text: &str) -> Option<Vec<(&str, String, std::ops::Range<usize>)>> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        let &(start, _) = chars.peek()?;
        let mut key_end = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key_end = i + c.len_utf8();
        }
        if key_end == start {
            return None;
        }
        skip_spaces(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_spaces(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = text.len();
        loop {
            match chars.peek().copied() {
                None if quoted => return None,
                None => break,
                Some((i, c)) if (quoted && c == '\'') || (!quoted && c.is_whitespace()) => {
                    if quoted {
                        chars.next();
                        end = i + 1;
                    } else {
                        end = i;
                    }
                    break;
                }
                Some((_, '\\')) => {
                    chars.next();
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                Some((_, c)) => {
                    chars.next();
                    value.push(c);
                }
            }
        }
        pairs.push((&text[start..key_end], value, start..end));
        if chars.peek().is_none() {
            return Some(pairs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn split(url: &str) -> (String, TlsParams) {
        split_tls_params(url).unwrap()
    }

    fn params(mode: Option<SslMode>, roots: Option<Roots>) -> TlsParams {
        TlsParams { mode, roots }
    }

    fn file(path: &str) -> Roots {
        Roots::File(PathBuf::from(path))
    }

    #[test]
    fn a_urls_tls_parameters_are_taken_off_and_the_rest_is_kept_as_written() {
        assert_eq!(
            split(
                "postgres://u:p%40ss@db.example:6543/app?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Frds+ca.pem&connect_timeout=3"
            ),
            (
                "postgres://u:p%40ss@db.example:6543/app?application_name=a%20b&connect_timeout=3"
                    .to_owned(),
                params(
                    Some(SslMode::VerifyFull),
                    Some(file("/etc/ca dir/rds+ca.pem"))
                )
            )
        );
        assert_eq!(
            split("postgresql://db/app?sslmode=require"),
            (
                "postgresql://db/app".to_owned(),
                params(Some(SslMode::Require), None)
            )
        );
        assert_eq!(
            split("postgres://u@db/app"),
            ("postgres://u@db/app".to_owned(), TlsParams::default())
        );
        // A `?` in the credentials is not where the parameters start.
        assert_eq!(
            split("postgres://u:a?b@db/app?sslmode=disable&sslmode=verify-ca&sslrootcert=ca.pem"),
            (
                "postgres://u:a?b@db/app".to_owned(),
                params(Some(SslMode::VerifyCa), Some(file("ca.pem")))
            )
        );
    }

    #[test]
    fn key_value_strings_lose_their_tls_parameters_and_keep_the_rest_quoted_as_written() {
        assert_eq!(
            split(
                "host=db port=5432  sslmode = 'verify-full' options='-c a=b' sslrootcert='/c/it\\'s ca.pem' user=u\\ v"
            ),
            (
                "host=db port=5432 options='-c a=b' user=u\\ v".to_owned(),
                params(Some(SslMode::VerifyFull), Some(file("/c/it's ca.pem")))
            )
        );
        assert_eq!(
            split("host=db sslrootcert=system"),
            ("host=db".to_owned(), params(None, Some(Roots::System)))
        );
        // What tokio-postgres cannot read is left for it to say why.
        assert_eq!(
            split("host=db sslmode='require"),
            ("host=db sslmode='require".to_owned(), TlsParams::default())
        );
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_the_value() {
        for url in [
            "postgres://db/app?sslmode=verify_full",
            "host=db sslmode=verify_full",
        ] {
            let error = PgTls::from_url(url).err().unwrap();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(
                error.to_string(),
                "sslmode=\"verify_full\" is not one of disable, prefer, require, verify-ca, verify-full (as libpq)"
            );
        }
        let allow = PgTls::from_url("postgres://db/app?sslmode=allow")
            .err()
            .unwrap();
        assert!(
            allow.to_string().contains("sslmode=allow is not supported"),
            "{allow}"
        );
    }

    #[test]
    fn the_mode_and_the_check_follow_libpq() {
        let ca = || file("ca.pem");
        let policy = |mode, roots| params(mode, roots).policy();
        let cases = [
            (None, None, SslMode::Prefer, Check::Nothing),
            (
                Some(SslMode::Disable),
                Some(file("ca.pem")),
                SslMode::Disable,
                Check::Nothing,
            ),
            (
                None,
                Some(file("ca.pem")),
                SslMode::Prefer,
                Check::Chain(ca()),
            ),
            (
                Some(SslMode::Require),
                None,
                SslMode::Require,
                Check::Nothing,
            ),
            // libpq: "if a root CA file exists, require behaves like verify-ca".
            (
                Some(SslMode::Require),
                Some(file("ca.pem")),
                SslMode::Require,
                Check::Chain(ca()),
            ),
            (
                Some(SslMode::VerifyCa),
                Some(file("ca.pem")),
                SslMode::VerifyCa,
                Check::Chain(ca()),
            ),
            (
                Some(SslMode::VerifyFull),
                Some(file("ca.pem")),
                SslMode::VerifyFull,
                Check::ChainAndName(ca()),
            ),
            (
                Some(SslMode::VerifyFull),
                None,
                SslMode::VerifyFull,
                Check::ChainAndName(Roots::System),
            ),
            // libpq 16: sslrootcert=system makes verify-full the default.
            (
                None,
                Some(Roots::System),
                SslMode::VerifyFull,
                Check::ChainAndName(Roots::System),
            ),
        ];
        for (mode, roots, want_mode, want_check) in cases {
            assert_eq!(
                policy(mode, roots.clone()).unwrap(),
                Policy {
                    mode: want_mode,
                    check: want_check
                },
                "{mode:?} {roots:?}"
            );
        }
        for weak in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
        ] {
            let error = policy(Some(weak), Some(Roots::System)).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "sslmode={} may not be used with sslrootcert=system (use verify-full): anyone can get a certificate from a public root for a name they control",
                    weak.as_str()
                )
            );
        }
        assert!(matches!(
            policy(Some(SslMode::VerifyCa), None),
            Err(TlsUrlError::VerifyCaWithoutRoots)
        ));
    }

    #[test]
    fn tokio_postgres_is_told_whether_to_ask_for_tls_and_whether_to_insist() {
        use tokio_postgres::config::SslMode as Wire;
        let wire = |url: &str| PgTls::from_url(url).unwrap().0.get_ssl_mode();
        assert_eq!(wire("postgres://db/app"), Wire::Prefer);
        assert_eq!(wire("postgres://db/app?sslmode=disable"), Wire::Disable);
        assert_eq!(wire("postgres://db/app?sslmode=require"), Wire::Require);
        assert_eq!(wire("host=db sslmode=verify-full"), Wire::Require);
        assert_eq!(wire("postgres://db/app?sslrootcert=system"), Wire::Require);
        // libpq ignores sslmode over a Unix socket; PostgreSQL has no TLS there.
        assert_eq!(
            wire("host=/run/postgresql sslmode=verify-full"),
            Wire::Disable
        );
    }

    #[test]
    fn hostaddr_alone_is_the_name_tls_checks() {
        let (config, _) =
            PgTls::from_url("hostaddr=127.0.0.1 port=5 user=u sslmode=verify-full").unwrap();
        assert_eq!(config.get_hosts(), [Host::Tcp("127.0.0.1".to_owned())]);
        let (config, _) =
            PgTls::from_url("postgres://u@db.example:5/app?hostaddr=127.0.0.1&sslmode=verify-full")
                .unwrap();
        assert_eq!(config.get_hosts(), [Host::Tcp("db.example".to_owned())]);
    }

    #[test]
    fn an_unusable_sslrootcert_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let url = |path: &Path| {
            format!(
                "postgres://db/app?sslmode=require&sslrootcert={}",
                path.display()
            )
        };
        let error = PgTls::from_url(&url(&missing)).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read sslrootcert {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = PgTls::from_url(&url(&empty)).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "sslrootcert {} holds no certificate usable as a root",
                empty.display()
            )
        );
        // With TLS off, the file is not read (as libpq).
        PgTls::from_url(&format!(
            "postgres://db/app?sslmode=disable&sslrootcert={}",
            missing.display()
        ))
        .unwrap();
    }

    #[test]
    fn the_rest_of_the_url_is_checked_by_tokio_postgres_with_its_reason() {
        let error = PgTls::from_url("postgres://db/app?sslmode=require&sslcert=client.pem")
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "the database URL is not valid: invalid connection string: unknown option `sslcert`"
        );
    }
}
