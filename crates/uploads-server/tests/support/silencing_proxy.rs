//! A TCP proxy that can make the service behind it fall silent or refuse connections, as
//! a bucket or a database does in production.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to a service on 127.0.0.1 (the S3 emulator, PostgreSQL) that can fall silent: from then on it forwards nothing
/// more on any connection, old or new, and closes none (a bucket that stops answering); or
/// refuse: it stops listening and cuts the connections it holds (a bucket that is down).
pub struct SilencingProxy {
    /// `http://` and the proxy's address.
    pub endpoint: String,
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    silent: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl SilencingProxy {
    /// Starts forwarding to `upstream` on 127.0.0.1.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = format!("http://{addr}");
        let silent = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let (silenced, refused) = (Arc::clone(&silent), Arc::clone(&refusing));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let modes = (Arc::clone(&silenced), Arc::clone(&refused));
                tokio::spawn(forward(client_read, server_write, modes.clone()));
                tokio::spawn(forward(server_read, client_write, modes));
            }
        });
        Self {
            endpoint,
            port: addr.port(),
            silent,
            refusing,
            accept,
        }
    }

    /// From now on, forwards nothing more and closes nothing.
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Closes the listening socket (new connections are refused) and cuts the others.
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.accept.abort();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    (silent, refusing): (Arc<AtomicBool>, Arc<AtomicBool>),
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        if silent.load(Ordering::SeqCst) {
            // Hold both sockets open, say nothing.
            std::future::pending::<()>().await;
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            // Dropping both halves cuts the connection.
            Ok(_) if refusing.load(Ordering::SeqCst) => return,
            Ok(n) if !silent.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}
