//! The listener while the server starts: the port is open from the first moment, and every
//! request (a health check included) is answered 503 "starting" with `Retry-After`, until the
//! records are read back (a directory of 100,000 Files takes seconds) or the shared backend
//! answers. A load balancer sees a live port that is not ready yet, and clients (the SDKs
//! retry 503) wait instead of failing to connect.

use std::convert::Infallible;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use uploads_core::rejection::Rejection;

use crate::service::rejection_response;

/// How long one connection may take to send its request while the server starts.
const STARTING_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers "starting" on `listener` until [`Starting::ready`]; then hands the listener back.
pub(crate) struct Starting {
    ready: oneshot::Sender<()>,
    task: JoinHandle<TcpListener>,
}

impl Starting {
    /// Starts answering on `listener`.
    pub(crate) fn answer(listener: TcpListener) -> Self {
        let (ready, stop) = oneshot::channel();
        Self {
            ready,
            task: tokio::spawn(answer_until(listener, stop)),
        }
    }

    /// Stops answering "starting" and returns the listener for the real server; a
    /// connection still open then is closed.
    pub(crate) async fn ready(self) -> std::io::Result<TcpListener> {
        let _ = self.ready.send(());
        self.task.await.map_err(std::io::Error::other)
    }
}

async fn answer_until(listener: TcpListener, mut stop: oneshot::Receiver<()>) -> TcpListener {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(STARTING_REQUEST_TIMEOUT)
        .keep_alive(false);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let builder = builder.clone();
                connections.spawn(async move {
                    let service = service_fn(|_request| async {
                        Ok::<_, Infallible>(rejection_response(&starting()))
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(STARTING_REQUEST_TIMEOUT, connection).await;
                });
            }
        }
    }
    listener
}

/// The answer to every request while the server starts.
fn starting() -> Rejection {
    Rejection::unavailable(
        "The server is starting: it is reading its records back. Retry the request.",
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn every_request_is_a_retryable_503_until_ready_then_the_listener_serves_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let starting = Starting::answer(listener);
        for path in ["/healthz", "/v1/uploads"] {
            let answer = exchange(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 503"), "{path}: {answer}");
            let lower = answer.to_ascii_lowercase();
            assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
            assert!(answer.contains(r#""type":"server_error""#), "{answer}");
            assert!(answer.contains("The server is starting"), "{answer}");
        }
        let listener = starting.ready().await.unwrap();
        // The same socket, now the real server's: a connection waits for its accept.
        let client = tokio::spawn(TcpStream::connect(addr));
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(accepted.local_addr().unwrap(), addr);
        client.await.unwrap().unwrap();
    }
}
