//! A durable, OpenAI-compatible Uploads + Files server on hyper.
//!
//! It serves `/v1/uploads*` and `/v1/files*` as OpenAI's service does, so the official SDKs,
//! this workspace's clients and any OpenAI-compatible tooling can upload to it offline. Every
//! decision (status codes, error bodies, transitions) comes from the sans-IO ledger in
//! [`uploads_core::ledger`]; this crate authenticates, stores bytes durably and speaks HTTP
//! (http1 and h2).
//!
//! HTTPS is built in ([`ServerBuilder::tls`]: PEM files, HTTP/2 by ALPN and HTTP/1.1, the pair
//! reloaded in place by [`RunningServer::reload_tls`]), and so are Prometheus metrics on a
//! listener of their own ([`ServerBuilder::metrics_listen`]), per-owner quotas and a per-key
//! request rate ([`uploads_core::limits::Limits`]'s `quota_bytes`, `quota_files`,
//! `requests_per_minute`). What it does *not* do: client certificates, other OpenAI
//! endpoints, or file processing (every File is `processed` at once).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let server = uploads_server::Server::builder()
//!     .data_dir("/var/lib/uploads")
//!     .api_key("sk-local-1", "project-a")
//!     .start()
//!     .await?;
//! println!("serving on {}", server.base_url());
//! server.run_until(uploads_server::shutdown_signal()).await;
//! # Ok(())
//! # }
//! ```
//!
//! Two backends, one behaviour:
//!
//! * **A directory** (the default, one process): every write goes to a temp file in the
//!   target's directory, is fsynced, renamed into place, and the directory fsynced; an
//!   Upload's state file is its commit point. See [`store`] for the layout.
//! * **PostgreSQL + object storage** ([`ServerBuilder::shared`], several instances, any of
//!   which may take any request): each change is one transaction over the rows it locks,
//!   and the bytes live in a bucket ([`objects`]); time is the database's.
//!
//! The service stands on two seams, the records (the ledger's state) and the bytes
//! ([`byte_store::ByteStore`]), and asks neither which backend it has. See [`Server`] for the
//! limits and timeouts.

mod body;
pub mod byte_store;
pub mod clock;
mod entropy;
mod md5_ahead;
mod metrics;
pub mod objects;
mod pg;
mod probe;
mod readers;
mod records;
mod refused_heads;
mod server;
mod service;
mod starting;
mod stats;
pub mod store;
mod tls;

/// The scale-out tests' PostgreSQL and S3 emulator, shared by this crate's unit tests.
#[cfg(test)]
#[path = "../tests/support/services.rs"]
mod test_services;

/// The tests' proxy that makes a service fall silent, shared by this crate's unit tests.
#[cfg(test)]
#[path = "../tests/support/silencing_proxy.rs"]
mod test_proxy;

pub use pg::DOWNLOAD_GRACE_SECS;
pub use server::{RunningServer, Server, ServerBuilder};
pub use stats::ServerStats;
pub use tls::TlsError;
pub use uploads_core::forms::MAX_DIRECT_FILE_BYTES;

use std::str::FromStr;

/// An API key and the owner (project) it acts for, as written on a command line: `KEY` or
/// `KEY=OWNER`. Without an owner, the key is its own owner, named by a digest of the key so
/// that no secret is written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySpec {
    /// The bearer token.
    pub key: String,
    /// The owner whose objects the key sees.
    pub owner: String,
}

impl FromStr for ApiKeySpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (key, owner) = if let Some((key, owner)) = spec.split_once('=') {
            (key.trim(), owner.trim().to_owned())
        } else {
            let key = spec.trim();
            let mut hasher = uploads_core::digest::Md5Hasher::new();
            hasher.update(key.as_bytes());
            (key, format!("key-{}", &hasher.finish_hex()[..16]))
        };
        if key.is_empty() || owner.is_empty() {
            return Err(format!("expected KEY or KEY=OWNER, got {spec:?}"));
        }
        Ok(Self {
            key: key.to_owned(),
            owner,
        })
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM: what `serve` waits for.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_name_their_owner_or_get_one_from_the_key() {
        assert_eq!(
            "sk-a=project-1".parse(),
            Ok(ApiKeySpec {
                key: "sk-a".into(),
                owner: "project-1".into()
            })
        );
        let anonymous: ApiKeySpec = "sk-b".parse().unwrap();
        assert_eq!(anonymous.key, "sk-b");
        assert!(anonymous.owner.starts_with("key-") && !anonymous.owner.contains("sk-b"));
        assert_eq!(
            anonymous,
            "sk-b".parse().unwrap(),
            "the same key is the same owner"
        );
        assert!("=owner".parse::<ApiKeySpec>().is_err());
        assert!("key=".parse::<ApiKeySpec>().is_err());
    }
}
