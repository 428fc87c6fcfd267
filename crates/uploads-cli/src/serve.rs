//! `uploads serve`: the server, with limits checked and one line saying where clients go.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use uploads_core::limits::{Limits, LimitsError};
use uploads_server::{ApiKeySpec, RunningServer, Server, TlsError, shutdown_signal};

use crate::size::{format_size, parse_size};
use crate::{EXIT_CODES, Failure, output};

/// The arguments of `serve`.
#[derive(clap::Args)]
#[command(after_help = format!("\
Examples:
  uploads serve                                   open server on 127.0.0.1:8000, data in ./uploads-data
  uploads serve --listen 0.0.0.0:8000 --data-dir /var/lib/uploads
  UPLOADS_API_KEYS=sk-a=team-a,sk-b=team-b uploads serve
  uploads serve --max-part-bytes 16MiB --max-upload-bytes 1GiB
  uploads serve --listen 0.0.0.0:8443 --tls-cert /etc/uploads/cert.pem --tls-key /etc/uploads/key.pem
  AWS_ENDPOINT_URL=http://minio:9000 AWS_ALLOW_HTTP=true \\
    uploads serve --database-url postgres://uploads@db:5432/uploads --object-store s3://bucket/uploads

Clients then use: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 (printed at startup; https:// with
--tls-cert). SIGHUP reloads the certificate and key; a pair that cannot be used keeps the old one.

Environment:
  UPLOADS_API_KEYS   accepted keys, comma-separated KEY or KEY=OWNER (values never shown)
  UPLOADS_DATABASE_URL, UPLOADS_OBJECT_STORE   as --database-url, --object-store
  UPLOADS_TLS_CERT, UPLOADS_TLS_KEY   as --tls-cert, --tls-key
  AWS_*, GOOGLE_*, AZURE_*   the object store's credentials and endpoint (object_store's names)
  UPLOADS_LOG_FORMAT as --log-format (text or json)
  RUST_LOG           log filter (default info: one line per request)

{EXIT_CODES}"))]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Where Uploads and Files are stored.
    #[arg(long, default_value = "uploads-data")]
    data_dir: PathBuf,
    /// An accepted API key, as KEY or KEY=OWNER (repeatable; comma-separated in the
    /// environment). Without any, the server is open.
    #[arg(
        long = "api-key",
        env = "UPLOADS_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<ApiKeySpec>,
    /// Largest Part, e.g. 64MiB (the default) or 16M.
    #[arg(long, value_parser = parse_size)]
    max_part_bytes: Option<u64>,
    /// Largest Upload, e.g. 8GiB (the default) or 500MB.
    #[arg(long, value_parser = parse_size)]
    max_upload_bytes: Option<u64>,
    /// Keep records in this PostgreSQL database (postgres://USER@HOST:PORT/DB) instead of
    /// the data directory, so that several instances serve one namespace; needs
    /// --object-store.
    #[arg(long, env = "UPLOADS_DATABASE_URL", requires = "object_store")]
    database_url: Option<String>,
    /// Keep bytes in this object store (s3://BUCKET/PREFIX, gs://..., az://...,
    /// file:///DIR), configured from the standard environment (AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP, ...); needs
    /// --database-url.
    #[arg(long, env = "UPLOADS_OBJECT_STORE", requires = "database_url")]
    object_store: Option<String>,
    /// With --object-store: the bytes of Parts held in memory on their way to the bucket,
    /// server-wide, e.g. 64MiB (the default); past it, Parts wait in temp files ($TMPDIR).
    #[arg(long, value_parser = parse_size, requires = "object_store")]
    memory_budget: Option<u64>,
    /// Bytes each owner may keep (its Files plus its pending Uploads' declared bytes),
    /// e.g. 100GiB; past it, a new Upload or File is refused (400) and nothing is stored.
    /// Default: no quota.
    #[arg(long, env = "UPLOADS_QUOTA_BYTES", value_parser = parse_size)]
    quota_bytes: Option<u64>,
    /// Files each owner may keep (a pending Upload counts as the File it will become).
    /// Default: no quota.
    #[arg(long, env = "UPLOADS_QUOTA_FILES")]
    quota_files: Option<u64>,
    /// Requests each API key may make per minute; past it, 429 with retry-after-ms, as
    /// OpenAI answers. Default: no limit.
    #[arg(long, env = "UPLOADS_REQUESTS_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    requests_per_minute: Option<u32>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with the certificate chain in this PEM file, the
    /// server's certificate first; needs --tls-key. Read again on SIGHUP.
    #[arg(
        long,
        env = "UPLOADS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert's certificate; needs --tls-cert. Read again on
    /// SIGHUP.
    #[arg(
        long,
        env = "UPLOADS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`, no key) on this address, e.g.
    /// 127.0.0.1:9464; a listener of its own, so that they are never exposed on --listen by
    /// accident. Default: off.
    #[arg(long, env = "UPLOADS_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// How the log on stderr is written: `text`, one line per event for a terminal, or
    /// `json`, one JSON object per line for a log pipeline (each request's: method, path,
    /// route, owner, status, bytes_received, bytes_sent, elapsed_ms, error_type,
    /// request_id).
    #[arg(long, value_enum, env = "UPLOADS_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for a terminal.
    Text,
    /// One JSON object per line, its fields at the top level.
    Json,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let mut limits = Limits::default();
    if let Some(max) = args.max_part_bytes {
        limits.max_part_bytes = max;
    }
    if let Some(max) = args.max_upload_bytes {
        limits.max_upload_bytes = max;
    }
    limits.quota_bytes = args.quota_bytes;
    limits.quota_files = args.quota_files;
    limits.requests_per_minute = args.requests_per_minute;
    limits.validate().map_err(|error| {
        Failure::Usage(match error {
            LimitsError::ZeroPartBytes => {
                "--max-part-bytes 0 would refuse every part: give at least 1 byte, e.g. 64MiB"
                    .to_owned()
            }
            LimitsError::ZeroUploadBytes => {
                "--max-upload-bytes 0 would refuse every file: give at least 1 byte, e.g. 8GiB"
                    .to_owned()
            }
            other => format!("impossible limits: {other}"),
        })
    })?;
    if limits.max_part_bytes > limits.max_upload_bytes {
        output::note(&format!(
            "--max-part-bytes {} is over --max-upload-bytes {}: parts are bounded by the upload limit",
            format_size(limits.max_part_bytes),
            format_size(limits.max_upload_bytes)
        ));
    }
    let mut builder = Server::builder()
        .listen(args.listen)
        .data_dir(&args.data_dir)
        .limits(limits);
    for spec in args.api_keys {
        builder = builder.api_key(spec.key, spec.owner);
    }
    if let Some(addr) = args.metrics_listen {
        builder = builder.metrics_listen(addr);
    }
    let tls = args.tls_cert.is_some();
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        builder = builder.tls(cert, key);
    }
    let storage = match (args.database_url, args.object_store) {
        (Some(database_url), Some(object_store)) => {
            let storage = format!("records in PostgreSQL, bytes in {object_store}");
            builder = builder.shared(database_url, object_store, std::env::vars());
            if let Some(budget) = args.memory_budget {
                builder =
                    builder.object_memory_budget(usize::try_from(budget).unwrap_or(usize::MAX));
            }
            storage
        }
        _ => format!("data in {}", args.data_dir.display()),
    };
    let server = builder.start().await.map_err(|error| {
        if error
            .get_ref()
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<TlsError>) {
            return Failure::Usage(format!("cannot serve HTTPS: {error}"));
        }
        Failure::Transfer(if error.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot listen on {}: the address is already in use (another `uploads serve`?); choose another with --listen",
                args.listen
            )
        } else {
            format!(
                "cannot start the server on {} with {storage}: {error}",
                args.listen,
            )
        })
    })?;
    let metrics = server
        .metrics_addr()
        .map(|addr| format!("; metrics on http://{addr}/metrics"))
        .unwrap_or_default();
    let line = format!(
        "uploads: serving; clients use OPENAI_BASE_URL={}; {storage}{metrics}",
        client_base_url(server.scheme(), server.local_addr()),
    );
    // A closed stdout must not stop the server; the log on stderr goes on.
    let _ = output::print_line(&line);
    if tls {
        serve_reloading_on_hangup(server).await;
    } else {
        server.run_until(shutdown_signal()).await;
    }
    Ok(())
}

/// Serves until SIGINT or SIGTERM, reading the certificate and key again on each SIGHUP (a
/// pair that cannot be used is logged and the old one kept, by the server).
async fn serve_reloading_on_hangup(server: RunningServer) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                let shutdown = shutdown_signal();
                tokio::pin!(shutdown);
                loop {
                    tokio::select! {
                        () = &mut shutdown => break,
                        Some(()) = hangups.recv() => {
                            // Logged by the server either way; the old pair stays on failure.
                            let _ = server.reload_tls();
                        }
                    }
                }
                server.shutdown().await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: the certificate will not be reloaded");
            }
        }
    }
    server.run_until(shutdown_signal()).await;
}

/// The base URL a client on this machine uses (`scheme` is `http` or `https`): a wildcard
/// address becomes loopback.
fn client_base_url(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}/v1", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_given_to_clients_as_loopback() {
        assert_eq!(
            client_base_url("http", "0.0.0.0:8000".parse().unwrap()),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            client_base_url("http", "[::]:80".parse().unwrap()),
            "http://[::1]:80/v1"
        );
        assert_eq!(
            client_base_url("https", "10.0.0.5:9000".parse().unwrap()),
            "https://10.0.0.5:9000/v1"
        );
    }
}
