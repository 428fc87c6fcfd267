//! The TCP step of [`Client::new`](crate::Client::new)'s connector: hyper-util's
//! [`HttpConnector`], each socket it opens registered in the client's
//! [`Sockets`] for as long as the connection lives, so that an upload can report what its
//! sockets hold unacknowledged and progress counts what has left the machine.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;
use uploads_client_io::unacked::{Registration, Sockets};

/// [`HttpConnector`] whose sockets join a [`Sockets`] registry while they live.
#[derive(Debug, Clone)]
pub struct TrackedConnector {
    http: HttpConnector,
    sockets: Sockets,
}

impl TrackedConnector {
    /// Connects with `http`, registering each socket in `sockets`.
    pub fn new(http: HttpConnector, sockets: Sockets) -> Self {
        Self { http, sockets }
    }
}

impl Service<Uri> for TrackedConnector {
    type Response = TrackedStream;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TrackedStream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, sockets) = (self.http.call(uri), self.sockets.clone());
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TrackedStream {
                _registration: sockets.register(io.inner()),
                io,
            })
        })
    }
}

/// A connection [`TrackedConnector`] opened: the TCP stream, registered until it drops.
#[derive(Debug)]
pub struct TrackedStream {
    // Declared before the stream, so dropped first: the socket leaves the registry before
    // it closes, as the registry requires.
    _registration: Registration,
    io: TokioIo<TcpStream>,
}

impl Connection for TrackedStream {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
