//! The listening server: configuration, the accept loop (one task per connection, a cap on
//! connections, header and body timeouts), and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use uploads_core::auth::ApiKeys;
use uploads_core::ledger::{Owner, max_complete_request_bytes};
use uploads_core::limits::Limits;

use crate::body::{BodyPace, with_guard};
use crate::clock::{Clock, SystemClock};
use crate::metrics::{Metrics, serve_metrics};
use crate::objects::ObjectBytes;
use crate::pg::PgRecords;
use crate::records::{LocalRecords, PostgresRecords, Records};
use crate::refused_heads::RefusedHeads;
use crate::service::{Handler, Service, ServiceConfig};
use crate::starting::Starting;
use crate::stats::ServerStats;
use crate::store::{DataDirLock, DirStore};
use crate::tls::{ServerTls, TlsError};

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults: `127.0.0.1:0`, data in `./uploads-data`, no keys (open),
    /// OpenAI's limits, the system clock.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures and starts a [`Server`].
#[must_use]
pub struct ServerBuilder {
    listen: SocketAddr,
    data_dir: PathBuf,
    keys: ApiKeys,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// Replaces the database's clock on PostgreSQL (see [`ServerBuilder::shared_clock`]).
    shared_clock: Option<Arc<dyn Clock>>,
    /// See [`ServerBuilder::object_memory_budget`].
    object_memory_budget: usize,
    max_connections: usize,
    max_header_bytes: usize,
    max_json_bytes: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    body_idle_timeout: Duration,
    min_body_bytes_per_sec: u64,
    sweep_interval: Duration,
    shutdown_grace: Duration,
    /// PostgreSQL + object storage, when configured (see [`ServerBuilder::shared`]).
    postgres: Option<PostgresBackend>,
    /// The certificate and key files, for HTTPS (see [`ServerBuilder::tls`]).
    tls: Option<(PathBuf, PathBuf)>,
    /// See [`ServerBuilder::metrics_listen`].
    metrics_listen: Option<SocketAddr>,
}

/// Where several instances keep one namespace: records in PostgreSQL, bytes in a bucket.
#[derive(Clone)]
struct PostgresBackend {
    database_url: String,
    object_store: String,
    options: Vec<(String, String)>,
}

impl PostgresBackend {
    /// Connects to both, migrating the database; the error names what is unreachable.
    async fn open(
        &self,
        limits: Limits,
        clock: Option<Arc<dyn Clock>>,
        memory_budget: usize,
    ) -> io::Result<(PostgresRecords, Arc<ObjectBytes>)> {
        let objects = ObjectBytes::open(&self.object_store, self.options.clone())?
            .with_memory_budget(memory_budget);
        objects.check().await?;
        let records = PgRecords::connect(&self.database_url, limits).await?;
        tracing::info!(object_store = %self.object_store, "records in PostgreSQL, bytes in object storage");
        let objects = Arc::new(objects);
        Ok((
            PostgresRecords::new(records, Arc::clone(&objects), clock),
            objects,
        ))
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::from("uploads-data"),
            keys: ApiKeys::default(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            shared_clock: None,
            object_memory_budget: crate::objects::DEFAULT_MEMORY_BUDGET,
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            max_json_bytes: 4 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_mins(2),
            body_idle_timeout: Duration::from_mins(1),
            min_body_bytes_per_sec: 1024,
            sweep_interval: Duration::from_mins(1),
            shutdown_grace: Duration::from_secs(30),
            postgres: None,
            tls: None,
            metrics_listen: None,
        }
    }
}

impl ServerBuilder {
    /// The address to listen on; port 0 picks a free port (see [`RunningServer::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The directory holding every Upload, Part and File.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Accepts `key` as a bearer token for `owner`. With no key configured the server is open:
    /// any request is served, as one anonymous owner.
    pub fn api_key(mut self, key: impl Into<String>, owner: impl Into<String>) -> Self {
        let owner: String = owner.into();
        self.keys.insert(key.into(), Owner::new(owner));
        self
    }

    /// The service's limits (part size, upload size, expiry, purposes).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The clock of this instance: the ledger's `now` on the directory store (a
    /// [`crate::clock::ManualClock`] in expiry tests). On PostgreSQL + object storage it decides
    /// nothing: the database's clock does, because instances' clocks disagree.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// On PostgreSQL + object storage, replaces the database's clock for every decision about time.
    /// For tests that move time: every instance on that database MUST be given the same
    /// clock, or they will disagree about what has expired.
    pub fn shared_clock(mut self, clock: impl Clock) -> Self {
        self.shared_clock = Some(Arc::new(clock));
        self
    }

    /// The most connections served at once; more wait in the listen backlog.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The largest request head (request line and headers) accepted, in bytes.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        // hyper's minimum read buffer.
        self.max_header_bytes = max.max(8192);
        self
    }

    /// The largest JSON request body accepted, in bytes.
    pub fn max_json_bytes(mut self, max: usize) -> Self {
        self.max_json_bytes = max;
        self
    }

    /// How long a client may take to send a request head.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight (HTTP/2 included, which
    /// is also pinged to find dead peers) before it is closed.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a request body may stop moving before the request fails.
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }

    /// The slowest average rate a request body may arrive at, in bytes per second, once its
    /// first body idle timeout has passed (default 1 KiB/s; 0 for no minimum). A body that
    /// falls behind gets 408.
    pub fn min_body_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_body_bytes_per_sec = bytes_per_sec;
        self
    }

    /// How often the sweeper removes the data of expired and cancelled Uploads.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How long a graceful shutdown waits for requests in flight.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Keeps records in the PostgreSQL database at `database_url` and bytes in the object
    /// store at `object_store` (`s3://bucket/prefix`, `gs://...`, `az://...`, `file:///dir`)
    /// instead of the data directory, so that any number of instances can serve one
    /// namespace. `options` configure the object store as `object_store` reads them from the
    /// environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_REGION`, ...).
    pub fn shared<K: Into<String>, V: Into<String>>(
        mut self,
        database_url: impl Into<String>,
        object_store: impl Into<String>,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.postgres = Some(PostgresBackend {
            database_url: database_url.into(),
            object_store: object_store.into(),
            options: options
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        });
        self
    }

    /// On PostgreSQL + object storage, the bytes of Parts held in memory on their way to the object
    /// store, server-wide (default [`crate::objects::DEFAULT_MEMORY_BUDGET`]); past it, a
    /// Part's bytes wait in a temporary file.
    pub fn object_memory_budget(mut self, bytes: usize) -> Self {
        self.object_memory_budget = bytes;
        self
    }

    /// Serves HTTPS (HTTP/2 by ALPN, and HTTP/1.1) with the certificate chain in the PEM file
    /// `cert` and its private key in the PEM file `key`, both read at [`ServerBuilder::start`]
    /// (a pair that cannot be used fails the start, naming the file) and again on
    /// [`RunningServer::reload_tls`].
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// Serves `GET /metrics` (the Prometheus text format, no key) on `addr`, a listener of
    /// its own, so that metrics are never exposed on the API's address by accident. Off by
    /// default.
    pub fn metrics_listen(mut self, addr: SocketAddr) -> Self {
        self.metrics_listen = Some(addr);
        self
    }

    /// Opens the data directory, recovers what a crash left, binds the listener and starts
    /// serving on the current tokio runtime.
    pub async fn start(self) -> io::Result<RunningServer> {
        let largest_complete = max_complete_request_bytes(self.limits.max_parts_per_upload);
        if largest_complete > self.max_json_bytes as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a complete listing {} Parts takes up to {largest_complete} bytes of JSON, \
                     over the JSON body limit of {} bytes: lower max_parts_per_upload or raise \
                     the JSON limit",
                    self.limits.max_parts_per_upload, self.max_json_bytes
                ),
            ));
        }
        // Before anything is opened: a pair that cannot be served is the operator's to fix.
        let tls = match self.tls.clone() {
            Some((cert, key)) => {
                Some(Arc::new(ServerTls::load(cert, key).map_err(|error| {
                    io::Error::new(io::ErrorKind::InvalidInput, error)
                })?))
            }
            None => None,
        };
        if self.keys.is_empty() {
            tracing::warn!("no API keys configured: the server is open to anyone who can reach it");
        }
        let config = ServiceConfig {
            keys: self.keys,
            limits: self.limits,
            max_json_bytes: self.max_json_bytes,
            body_pace: BodyPace {
                idle: self.body_idle_timeout,
                min_bytes_per_sec: self.min_body_bytes_per_sec,
            },
        };
        let (lock, launched, listener) = if let Some(backend) = &self.postgres {
            // The port answers "starting" while the database and the bucket are reached.
            let starting = Starting::answer(TcpListener::bind(self.listen).await?);
            // Instances share the database and the bucket by design: no directory to lock.
            let (records, objects) = backend
                .open(
                    config.limits.clone(),
                    self.shared_clock.clone(),
                    self.object_memory_budget,
                )
                .await?;
            let service = Service::open(config, records, objects).await?;
            let launched = Launched::new(service, self.sweep_interval);
            (None, launched, starting.ready().await?)
        } else {
            let data_dir = self.data_dir.clone();
            let (lock, store) = tokio::task::spawn_blocking(move || {
                let lock = DataDirLock::acquire(&data_dir)?;
                Ok::<_, io::Error>((lock, DirStore::open(data_dir)?))
            })
            .await
            .map_err(io::Error::other)??;
            // The directory is this process's: the port answers "starting" while its
            // records are read back.
            let starting = Starting::answer(TcpListener::bind(self.listen).await?);
            let store = Arc::new(store);
            let records =
                LocalRecords::recover(Arc::clone(&store), config.limits.clone(), self.clock)
                    .await?;
            let service = Service::open(config, records, store).await?;
            let launched = Launched::new(service, self.sweep_interval);
            (Some(lock), launched, starting.ready().await?)
        };
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, data_dir = %self.data_dir.display(), https = tls.is_some(), "listening");
        let (stop_tx, stop_rx) = oneshot::channel();
        let Launched {
            handler: service,
            stats,
            metrics,
            sweeper,
        } = launched;
        let metrics = start_metrics(self.metrics_listen, metrics, &sweeper).await?;
        let max_connections = connections_within_descriptor_limit(self.max_connections);
        let accept = tokio::spawn(accept_loop(
            listener,
            service,
            ConnectionLimits {
                max_connections,
                idle_timeout: self.idle_timeout,
                max_header_bytes: self.max_header_bytes,
                header_read_timeout: self.header_read_timeout,
                shutdown_grace: self.shutdown_grace,
            },
            tls.as_ref().map(|tls| tls.acceptor()),
            stop_rx,
        ));
        Ok(RunningServer {
            local_addr,
            tls,
            stats,
            metrics,
            stop: Some(stop_tx),
            accept,
            sweeper,
            _lock: lock,
        })
    }
}

/// Starts the metrics listener on `addr`, if one is asked for. When it cannot, the start
/// fails: the `sweeper` already started stops (nothing may sweep a directory this process
/// gives up).
async fn start_metrics(
    addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    sweeper: &JoinHandle<()>,
) -> io::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    // Not the API's address: an `AddrInUse` here must not read as the API's.
    let listening = serve_metrics(addr, metrics).await.map_err(|error| {
        sweeper.abort();
        io::Error::other(format!("cannot listen for metrics on {addr}: {error}"))
    })?;
    Ok(Some(listening))
}

/// A server that is serving. Dropping it without [`RunningServer::shutdown`] stops it at once,
/// as a crash would: connections and the requests on them are cut (a change already being
/// made durable finishes, as it would have reached the disk or not).
pub struct RunningServer {
    local_addr: SocketAddr,
    /// The certificate and key served, when HTTPS.
    tls: Option<Arc<ServerTls>>,
    stats: Arc<ServerStats>,
    /// The metrics listener's address and task, when one was asked for.
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
    stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// The data directory's lock, released when the server stops (or is dropped); none on
    /// PostgreSQL + object storage.
    _lock: Option<DataDirLock>,
}

impl RunningServer {
    /// The address the server listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use: `http://<addr>/v1`, or `https://<addr>/v1` with TLS.
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme(), self.local_addr)
    }

    /// `https` when the server serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Reads the certificate and key files given to [`ServerBuilder::tls`] again (what
    /// `uploads serve` does on SIGHUP): handshakes from now on present the new pair;
    /// connections already open are not touched. A pair that cannot be used leaves the one
    /// in use in place: the error is logged (naming the file) and returned. Without TLS,
    /// nothing to do.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.as_ref().map_or(Ok(()), |tls| tls.reload())
    }

    /// Counters of what reached the handlers.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Where `GET /metrics` is served (see [`ServerBuilder::metrics_listen`]), with the port
    /// chosen for port 0; `None` without a metrics listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// Stops accepting, lets requests in flight finish (up to the shutdown grace), and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.accept).await;
        self.sweeper.abort();
        self.stop_metrics();
    }

    fn stop_metrics(&self) {
        if let Some((_, listener)) = &self.metrics {
            listener.abort();
        }
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.sweeper.abort();
        self.stop_metrics();
    }
}

struct ConnectionLimits {
    max_connections: usize,
    idle_timeout: Duration,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    shutdown_grace: Duration,
}

/// Descriptors kept free of connections: the listener, logs, data files being written or read.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files to the hard limit (the default soft limit of 1024 is
/// far below what a server needs) and returns the connection cap, lowered if needed so that
/// connections (each with up to one file open for its request) cannot exhaust descriptors:
/// past the cap, clients wait in the listen backlog instead of `accept` failing.
fn connections_within_descriptor_limit(max_connections: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let soft = match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.maximum,
            Err(error) => {
                tracing::warn!(%error, "could not raise the open-file limit");
                limit.current
            }
        };
        if let Some(soft) = soft {
            let fit = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS) / 2)
                .unwrap_or(usize::MAX)
                .max(1);
            if fit < max_connections {
                tracing::warn!(
                    max_connections,
                    open_file_limit = soft,
                    lowered_to = fit,
                    "the connection cap is lowered to fit the open-file limit"
                );
                return fit;
            }
        }
    }
    max_connections
}

/// HTTP/2's connection preface, which tells an HTTP/2 client from an HTTP/1 one.
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes a client sent, `seen`, tell HTTP/1 from HTTP/2: the whole
/// preface, or bytes that are not a prefix of it.
pub(crate) fn protocol_known(seen: &[u8]) -> bool {
    seen.len() >= H2_PREFACE.len() || seen != &H2_PREFACE[..seen.len()]
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2, within `timeout`.
/// hyper-util reads those bytes with no timeout of its own (its header timeout starts after),
/// so without this a connection that sends nothing, or trickles the HTTP/2 preface, would
/// hold its slot forever.
async fn protocol_known_in_time(stream: &TcpStream, timeout: Duration) -> bool {
    let known = async {
        let mut seen = [0; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut seen).await?;
            if n == 0 {
                return Ok(false); // closed before a byte
            }
            if protocol_known(&seen[..n]) {
                return Ok(true);
            }
            // A prefix of the HTTP/2 preface: the rest is still coming. Peeking returns at
            // once while bytes wait unread, so pause instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    matches!(
        tokio::time::timeout(timeout, known).await,
        Ok(Ok::<_, std::io::Error>(true))
    )
}

/// A service that was opened: what the connections call, its counters and its sweeper.
struct Launched {
    handler: Arc<dyn Handler>,
    stats: Arc<ServerStats>,
    metrics: Arc<Metrics>,
    sweeper: JoinHandle<()>,
}

impl Launched {
    /// Starts `service`'s sweeper, every `interval`.
    fn new<R: Records>(service: Arc<Service<R>>, interval: Duration) -> Self {
        Self {
            stats: service.stats(),
            metrics: service.metrics(),
            sweeper: tokio::spawn(Arc::clone(&service).sweep_every(interval)),
            handler: service,
        }
    }
}

/// The first and the longest pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn accept_loop(
    listener: TcpListener,
    service: Arc<dyn Handler>,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        // A client may close its sending side once its request is out; it still gets
        // the answer (and the request is not dropped half-handled).
        .half_close(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is gone: its connection slot is freed.
        .keep_alive_interval(Some(limits.idle_timeout / 4))
        .keep_alive_timeout(limits.idle_timeout / 4);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection's task: dropping this set (the server dropped, or the grace over)
    // cuts them all, as a crash would.
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off (doubling, up to a
                    // second) instead of spinning, and log once per doubling.
                    tracing::warn!(%error, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            service: Arc::clone(&service),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            peer,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
        };
        let header_read_timeout = limits.header_read_timeout;
        let tls = tls.clone();
        connections.spawn(async move {
            // Holds a connection slot only while the client speaks: a silent socket (or
            // one that stops during its TLS handshake) is closed after the header timeout,
            // like a slow request head.
            match tls {
                None => {
                    if protocol_known_in_time(&stream, header_read_timeout).await {
                        connection.serve(stream).await;
                    } else {
                        tracing::debug!(%peer, "no request within the header timeout; closing");
                    }
                }
                Some(acceptor) => {
                    match crate::tls::accept_in_time(&acceptor, stream, header_read_timeout).await {
                        Ok(stream) => connection.serve(stream).await,
                        Err(error) => tracing::debug!(%peer, %error, "closing"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    drain(connections, graceful, limits.shutdown_grace).await;
}

/// What one accepted connection is served with.
struct Connection {
    service: Arc<dyn Handler>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    peer: SocketAddr,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

impl Connection {
    /// Serves requests on `stream` (a socket, or the decrypted side of a TLS session) until
    /// the client closes it, it stays idle for the idle timeout, or the server shuts down.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            service,
            builder,
            watcher,
            peer,
            idle_timeout,
            max_header_bytes,
        } = self;
        let activity = Arc::new(Activity::default());
        // hyper's own answers (a head it cannot read) get the service's body and id.
        let stream = RefusedHeads::new(
            stream,
            Arc::clone(&activity),
            Arc::clone(&service),
            peer,
            max_header_bytes,
        );
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            service_fn({
                let activity = Arc::clone(&activity);
                move |request| {
                    let service = Arc::clone(&service);
                    let active = activity.request_started();
                    async move {
                        // In flight until its response body is sent, too.
                        let response = service.handle(request).await;
                        Ok::<_, std::convert::Infallible>(
                            response.map(|body| with_guard(body, active)),
                        )
                    }
                }
            }),
        );
        tokio::select! {
            served = watcher.watch(connection.into_owned()) => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            () = activity.idle_for(idle_timeout) => {
                tracing::debug!(%peer, "connection idle; closing");
            }
        }
    }
}

/// Lets the open connections finish the requests they are serving, for at most `grace`,
/// then cuts the rest; logs what happened.
async fn drain(mut connections: JoinSet<()>, graceful: GracefulShutdown, grace: Duration) {
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    let drained = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    if drained {
        tracing::info!(
            connections = open,
            "shut down: stopped accepting; the open connections closed after their requests in flight"
        );
    } else {
        while connections.try_join_next().is_some() {}
        let cut = connections.len();
        tracing::warn!(
            connections = open,
            cut,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "shut down: the grace elapsed; connections still serving requests were cut"
        );
    }
}

/// Requests in flight on one connection, and when the last one ended.
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicU64,
    changed: tokio::sync::Notify,
}

/// A request in flight on a connection, until dropped (its response head is produced).
struct ActiveRequest(Arc<Activity>);

impl Activity {
    fn request_started(self: &Arc<Self>) -> ActiveRequest {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        ActiveRequest(Arc::clone(self))
    }

    /// Requests handed to the service on this connection so far.
    pub(crate) fn requests_started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests whose response (body included) is not yet sent.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            if tokio::time::timeout(timeout, changed).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}
