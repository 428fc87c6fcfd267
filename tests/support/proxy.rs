//! A small fault-injecting TCP proxy in front of the server. It reads each request's head
//! and, for an add-part request with a fault queued, answers it itself (or resets the
//! connection mid-body) without speaking to the server; every other request is forwarded
//! with `Connection: close`, so each connection carries one request and every part request
//! passes by here.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to one add-part request instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the head and half the body, then resets the connection.
    Reset,
    /// Reads the whole request and answers this status with OpenAI's error body.
    Status(u16),
    /// Reads the whole request and answers 429 with `Retry-After: <seconds>`.
    TooManyRequests { retry_after_seconds: u32 },
    /// Reads the whole request and never answers (until the client gives up on it).
    Stall,
    /// Forwards the request, then sends only the first half of the server's answer and
    /// closes: the server stored the Part, the client never learns its id.
    Truncate,
}

/// The running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    upstream: SocketAddr,
    faults: Mutex<VecDeque<Fault>>,
    part_requests: AtomicU64,
    parts_answered: AtomicU64,
    faults_injected: AtomicU64,
    /// Request bodies pass at most this many bytes per second per connection.
    bytes_per_second: Option<u64>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 in front of `upstream`; `faults` apply to the first part
    /// requests, in order.
    pub async fn start(upstream: SocketAddr, faults: Vec<Fault>) -> Self {
        Self::start_with_rate(upstream, faults, None).await
    }

    /// As [`Proxy::start`], with request bodies slowed to `bytes_per_second` per connection:
    /// a slow link, so that parts are still in flight when a test interrupts an upload.
    pub async fn start_with_rate(
        upstream: SocketAddr,
        faults: Vec<Fault>,
        bytes_per_second: Option<u64>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            faults: Mutex::new(faults.into()),
            part_requests: AtomicU64::new(0),
            parts_answered: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            bytes_per_second,
        });
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(client, &state).await;
                });
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// The base URL clients use to reach the server through the proxy.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Add-part requests that reached the proxy.
    pub fn part_requests(&self) -> u64 {
        self.state.part_requests.load(Ordering::SeqCst)
    }

    /// Add-part requests whose answer the server gave and the proxy passed on whole.
    pub fn parts_answered(&self) -> u64 {
        self.state.parts_answered.load(Ordering::SeqCst)
    }

    /// Faults applied so far.
    pub fn faults_injected(&self) -> u64 {
        self.state.faults_injected.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut client: TcpStream, state: &State) -> io::Result<()> {
    let (head, body_start) = read_head(&mut client).await?;
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let request_line = head_text.lines().next().unwrap_or_default().to_owned();
    let content_length: u64 = head_text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let is_part = request_line.starts_with("POST ")
        && request_line
            .split(' ')
            .nth(1)
            .is_some_and(|path| path.ends_with("/parts"));
    let fault = if is_part {
        state.part_requests.fetch_add(1, Ordering::SeqCst);
        state.faults.lock().unwrap().pop_front()
    } else {
        None
    };
    if fault.is_some() {
        state.faults_injected.fetch_add(1, Ordering::SeqCst);
    }
    let unread = content_length.saturating_sub(body_start.len() as u64);
    match fault {
        Some(Fault::Reset) => {
            let half = (content_length / 2).saturating_sub(body_start.len() as u64);
            discard(&mut client, half).await?;
            client.set_zero_linger()?;
            drop(client);
            Ok(())
        }
        Some(Fault::Status(status)) => {
            discard(&mut client, unread).await?;
            answer(&mut client, status, "").await
        }
        Some(Fault::TooManyRequests {
            retry_after_seconds,
        }) => {
            discard(&mut client, unread).await?;
            let header = format!("retry-after: {retry_after_seconds}\r\n");
            answer(&mut client, 429, &header).await
        }
        Some(Fault::Stall) => {
            discard(&mut client, unread).await?;
            // Hold the connection open, silent, until the client closes it.
            let mut rest = [0; 1];
            while client.read(&mut rest).await? > 0 {}
            Ok(())
        }
        Some(Fault::Truncate) => {
            let mut upstream =
                forward(&mut client, state, &head, body_start, content_length).await?;
            let mut answer = Vec::new();
            upstream.read_to_end(&mut answer).await?;
            client.write_all(&answer[..answer.len() / 2]).await?;
            client.shutdown().await
        }
        None => {
            let mut upstream =
                forward(&mut client, state, &head, body_start, content_length).await?;
            tokio::io::copy(&mut upstream, &mut client).await?;
            client.shutdown().await?;
            if is_part {
                state.parts_answered.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }
}

/// Sends the request (head, then its whole body) to the server on a connection of its own.
async fn forward(
    client: &mut TcpStream,
    state: &State,
    head: &[u8],
    mut body_start: Vec<u8>,
    content_length: u64,
) -> io::Result<TcpStream> {
    let unread = content_length.saturating_sub(body_start.len() as u64);
    let mut upstream = TcpStream::connect(state.upstream).await?;
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    upstream.write_all(&head[..line_end]).await?;
    upstream.write_all(b"connection: close\r\n").await?;
    upstream.write_all(&head[line_end..]).await?;
    let already = body_start.len().min(content_length as usize);
    body_start.truncate(already);
    upstream.write_all(&body_start).await?;
    let mut rest = client.take(unread);
    match state.bytes_per_second {
        None => {
            tokio::io::copy(&mut rest, &mut upstream).await?;
        }
        Some(rate) => copy_at_rate(&mut rest, &mut upstream, rate).await?,
    }
    Ok(upstream)
}

/// Copies `from` to `to` in slices of a tenth of `rate`, one slice per tenth of a second.
async fn copy_at_rate(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut TcpStream,
    rate: u64,
) -> io::Result<()> {
    let mut slice = vec![0; (rate / 10).max(1) as usize];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        let read = from.read(&mut slice).await?;
        if read == 0 {
            return Ok(());
        }
        to.write_all(&slice[..read]).await?;
    }
}

/// Reads up to the end of the request head; returns the head and the body bytes read past it.
async fn read_head(client: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = buffer.split_off(end + 4);
            return Ok((buffer, body));
        }
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn discard(client: &mut TcpStream, len: u64) -> io::Result<()> {
    let mut taken = client.take(len);
    tokio::io::copy(&mut taken, &mut tokio::io::sink()).await?;
    Ok(())
}

async fn answer(client: &mut TcpStream, status: u16, extra_headers: &str) -> io::Result<()> {
    let body = format!(
        r#"{{"error":{{"message":"injected fault {status}","type":"server_error","param":null,"code":null}}}}"#
    );
    let response = format!(
        "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: req_proxy\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}
