//! A rate-limited service for the bench: an HTTP/1.1-aware TCP proxy in front of the server
//! that answers some part requests (`POST /v1/uploads/{id}/parts`) with OpenAI's 429 itself
//! and forwards everything else untouched.
//!
//! ```text
//! client ─▶ link emulator ─▶ [read a request head ─▶ throttled? ─┬─ no:  forward head + body ─▶ server
//!                                                               └─ yes: read and drop the body,
//!        ◀──────────────────────────────────────────────────────────── answer 429 (connection kept)
//! ```
//!
//! Requests are split by [`Requests`], a push parser that only frames them (the head, then a
//! body of `Content-Length` bytes or `Transfer-Encoding: chunked`); [`Rule`] decides which part
//! requests get a 429. Both are pure and tested in memory. Clients do not pipeline: a request
//! is sent after the previous answer arrived, so the proxy's own 429 never interleaves with a
//! server's answer on the way back.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest request head the proxy reads before giving up on a connection.
const MAX_HEAD: usize = 64 * 1024;
/// What the 429 asks the client to wait, in milliseconds (`retry-after-ms`, OpenAI's header).
const RETRY_AFTER_MS: u64 = 500;

/// Which part requests get a 429: every `every`-th one, during `window` from the first.
#[derive(Debug, Clone)]
pub struct Rule {
    every: u64,
    window: Duration,
    first: Option<Duration>,
    seen: u64,
}

impl Rule {
    /// Every `every`-th part request, for `window` after the first part request.
    pub fn new(every: u64, window: Duration) -> Self {
        Self {
            every: every.max(1),
            window,
            first: None,
            seen: 0,
        }
    }

    /// Counts a part request that arrived at `now` (any epoch); returns whether it gets a 429.
    pub fn throttles(&mut self, now: Duration) -> bool {
        let first = *self.first.get_or_insert(now);
        self.seen += 1;
        now.saturating_sub(first) < self.window && self.seen.is_multiple_of(self.every)
    }
}

/// What a request head says about framing and routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target as sent.
    pub path: String,
    /// The body's framing.
    pub body: Body,
    /// `Expect: 100-continue`: the client may wait for a go-ahead before its body.
    pub expects_continue: bool,
}

impl Head {
    /// Whether this is a request to add a Part: `POST /v1/uploads/{id}/parts`.
    pub fn is_part(&self) -> bool {
        let path = self.path.split('?').next().unwrap_or_default();
        self.method == "POST"
            && path
                .strip_prefix("/v1/uploads/")
                .and_then(|rest| rest.strip_suffix("/parts"))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (none without a `Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A piece of the request stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A request head, parsed, with its raw bytes (to forward untouched).
    Head(Head, Vec<u8>),
    /// Bytes of the current request's body, exactly as sent (chunk framing included).
    Body(&'a [u8]),
    /// The current request's body is complete.
    End,
}

/// Why the stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub String);

/// Where a chunked body is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line (bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk's data: bytes left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data: bytes left of it.
    DataEnd(u8),
    /// After the last chunk: reading trailer lines until an empty one (the current line).
    Trailer(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head(Vec<u8>),
    Length(u64),
    Chunked(Chunked),
}

/// Splits a client's byte stream into requests: feed it what arrives, get heads and bodies.
#[derive(Debug, Clone)]
pub struct Requests {
    state: State,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            state: State::Head(Vec::new()),
        }
    }
}

impl Requests {
    /// Takes the next bytes of the stream; returns the pieces they complete, in order.
    pub fn push<'a>(&mut self, mut input: &'a [u8]) -> Result<Vec<Piece<'a>>, FramingError> {
        let mut pieces = Vec::new();
        while !input.is_empty() {
            match &mut self.state {
                State::Head(buffer) => {
                    // A head ends at the first CRLFCRLF; it may straddle pushes.
                    let before = buffer.len();
                    buffer.extend_from_slice(input);
                    let Some(end) = find(buffer, b"\r\n\r\n") else {
                        if buffer.len() > MAX_HEAD {
                            return Err(FramingError("request head too long".to_owned()));
                        }
                        return Ok(pieces);
                    };
                    let raw: Vec<u8> = buffer[..end + 4].to_vec();
                    input = &input[end + 4 - before..];
                    let head = parse_head(&raw)?;
                    self.state = match head.body {
                        Body::Length(0) => State::Head(Vec::new()),
                        Body::Length(len) => State::Length(len),
                        Body::Chunked => State::Chunked(Chunked::Size(Vec::new())),
                    };
                    let empty = head.body == Body::Length(0);
                    pieces.push(Piece::Head(head, raw));
                    if empty {
                        pieces.push(Piece::End);
                    }
                }
                State::Length(left) => {
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    pieces.push(Piece::Body(&input[..take]));
                    input = &input[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                        pieces.push(Piece::End);
                    }
                }
                State::Chunked(chunked) => {
                    let (used, done) = step_chunked(chunked, input)?;
                    pieces.push(Piece::Body(&input[..used]));
                    input = &input[used..];
                    if done {
                        self.state = State::Head(Vec::new());
                        pieces.push(Piece::End);
                    }
                }
            }
        }
        Ok(pieces)
    }
}

/// Advances a chunked body over `input`; returns the bytes it used and whether the body ended.
fn step_chunked(state: &mut Chunked, input: &[u8]) -> Result<(usize, bool), FramingError> {
    let mut used = 0;
    while used < input.len() {
        let rest = &input[used..];
        match state {
            Chunked::Size(line) | Chunked::Trailer(line) => {
                let newline = rest.iter().position(|byte| *byte == b'\n');
                let take = newline.map_or(rest.len(), |at| at + 1);
                line.extend_from_slice(&rest[..take]);
                used += take;
                if line.len() > MAX_HEAD {
                    return Err(FramingError("chunk line too long".to_owned()));
                }
                if newline.is_none() {
                    continue;
                }
                let text = String::from_utf8_lossy(line).trim().to_owned();
                *state = match state {
                    Chunked::Size(_) => {
                        let digits = text.split(';').next().unwrap_or_default().trim();
                        let size = u64::from_str_radix(digits, 16)
                            .map_err(|_| FramingError(format!("bad chunk size {text:?}")))?;
                        if size == 0 {
                            Chunked::Trailer(Vec::new())
                        } else {
                            Chunked::Data(size)
                        }
                    }
                    // An empty line ends the trailers, and the body.
                    _ if text.is_empty() => return Ok((used, true)),
                    _ => Chunked::Trailer(Vec::new()),
                };
            }
            Chunked::Data(left) => {
                let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                used += take;
                *left -= take as u64;
                if *left == 0 {
                    *state = Chunked::DataEnd(2);
                }
            }
            Chunked::DataEnd(left) => {
                used += 1;
                *left -= 1;
                if *left == 0 {
                    *state = Chunked::Size(Vec::new());
                }
            }
        }
    }
    Ok((used, false))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn parse_head(raw: &[u8]) -> Result<Head, FramingError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| FramingError("request head is not UTF-8".to_owned()))?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path)) = (request_line.next(), request_line.next()) else {
        return Err(FramingError(format!("bad request line in {text:?}")));
    };
    let mut body = Body::Length(0);
    let mut expects_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && body != Body::Chunked {
            body = Body::Length(
                value
                    .parse()
                    .map_err(|_| FramingError(format!("bad content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            body = Body::Chunked;
        } else if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        {
            expects_continue = true;
        }
    }
    Ok(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        body,
        expects_continue,
    })
}

/// OpenAI's answer when a rate limit is reached, as the proxy sends it. `close` adds
/// `Connection: close` (when the body will not be read: the client waits for a go-ahead).
pub fn too_many_requests(close: bool) -> Vec<u8> {
    let body = r#"{"error":{"message":"Rate limit reached for requests per min (RPM): Limit 4, Used 4, Requested 1. Please try again in 500ms.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         retry-after-ms: {RETRY_AFTER_MS}\r\nretry-after: {}\r\ncontent-length: {}\r\n{}\r\n{body}",
        RETRY_AFTER_MS.div_ceil(1000),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// The running proxy: accepts on 127.0.0.1 and forwards to `upstream`, answering 429 as its
/// [`Rule`] says. Stops accepting when dropped.
pub struct Throttle {
    addr: SocketAddr,
    rule: SharedRule,
    fresh_rule: Rule,
    sent: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Throttle {
    /// Listens on a free loopback port in front of `upstream`, answering 429 to every
    /// `every`-th part request (counted across connections) during `window` after the first;
    /// [`Throttle::restart`] starts the count and the window again.
    pub fn start(upstream: SocketAddr, every: u64, window: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let rule = Arc::new(Mutex::new((Instant::now(), Rule::new(every, window))));
        let (stop, counter, shared) = (Arc::clone(&stopping), Arc::clone(&sent), Arc::clone(&rule));
        let accept = thread::Builder::new()
            .name("throttle-accept".to_owned())
            .spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = serve(client, server, Arc::clone(&shared), Arc::clone(&counter));
                }
            })?;
        let throttle = Self {
            addr,
            rule,
            fresh_rule: Rule::new(every, window),
            sent,
            stopping,
            accept: Some(accept),
        };
        Ok(throttle)
    }

    /// The address clients (or the link emulator) connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the count of part requests and the window again: a run of its own.
    pub fn restart(&self) {
        *self.rule.lock().unwrap_or_else(PoisonError::into_inner) =
            (Instant::now(), self.fresh_rule.clone());
    }

    /// The 429s sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// The rule with the epoch its times count from.
type SharedRule = Arc<Mutex<(Instant, Rule)>>;

/// One connection: answers flow back untouched (under a lock the proxy's own 429 shares);
/// requests flow through [`Requests`].
fn serve(
    client: TcpStream,
    server: TcpStream,
    rule: SharedRule,
    sent: Arc<AtomicU64>,
) -> io::Result<()> {
    let back = Arc::new(Mutex::new(client.try_clone()?));
    let answers = Arc::clone(&back);
    let mut from_server = server.try_clone()?;
    thread::Builder::new()
        .name("throttle-answers".to_owned())
        .spawn(move || {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(len @ 1..) = from_server.read(&mut buffer) {
                let client = answers.lock().unwrap_or_else(PoisonError::into_inner);
                if (&*client).write_all(&buffer[..len]).is_err() {
                    break;
                }
            }
            let client = answers.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = client.shutdown(Shutdown::Write);
        })?;
    thread::Builder::new()
        .name("throttle-requests".to_owned())
        .spawn(move || {
            let _ = forward_requests(client, &server, &back, &rule, &sent);
            let _ = server.shutdown(Shutdown::Write);
        })?;
    Ok(())
}

fn forward_requests(
    mut client: TcpStream,
    mut server: &TcpStream,
    back: &Mutex<TcpStream>,
    rule: &SharedRule,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut requests = Requests::default();
    let mut buffer = vec![0; 64 * 1024];
    // Whether the current request is being answered here (its body dropped).
    let mut throttled = false;
    loop {
        let len = client.read(&mut buffer)?;
        if len == 0 {
            return Ok(());
        }
        let pieces = requests
            .push(&buffer[..len])
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.0))?;
        for piece in pieces {
            match piece {
                Piece::Head(head, raw) => {
                    throttled = head.is_part() && {
                        let (epoch, rule) =
                            &mut *rule.lock().unwrap_or_else(PoisonError::into_inner);
                        rule.throttles(epoch.elapsed())
                    };
                    if !throttled {
                        server.write_all(&raw)?;
                    } else if head.expects_continue {
                        // The client waits for a go-ahead that will not come: answer now
                        // and close, as servers do when they refuse such a body.
                        sent.fetch_add(1, Ordering::SeqCst);
                        let client = back.lock().unwrap_or_else(PoisonError::into_inner);
                        (&*client).write_all(&too_many_requests(true))?;
                        return Ok(());
                    }
                }
                Piece::Body(bytes) if !throttled => server.write_all(bytes)?,
                Piece::End if throttled => {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let client = back.lock().unwrap_or_else(PoisonError::into_inner);
                    (&*client).write_all(&too_many_requests(false))?;
                    throttled = false;
                }
                // A throttled body is dropped; a forwarded request's end needs nothing.
                Piece::Body(_) | Piece::End => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(requests: &mut Requests, input: &[u8]) -> Vec<String> {
        requests
            .push(input)
            .unwrap()
            .into_iter()
            .map(|piece| match piece {
                Piece::Head(head, _) => format!("{} {} {:?}", head.method, head.path, head.body),
                Piece::Body(bytes) => format!("body {}", String::from_utf8_lossy(bytes)),
                Piece::End => "end".to_owned(),
            })
            .collect()
    }

    #[test]
    fn requests_with_a_length_split_at_their_bodies_even_byte_by_byte() {
        let stream = b"POST /v1/uploads/upload_1/parts HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /v1/files HTTP/1.1\r\nhost: x\r\n\r\n";
        let whole = collect(&mut Requests::default(), stream);
        assert_eq!(
            whole,
            [
                "POST /v1/uploads/upload_1/parts Length(5)",
                "body hello",
                "end",
                "GET /v1/files Length(0)",
                "end"
            ]
        );
        // Fed a byte at a time, the same pieces come out (bodies in bytes).
        let mut requests = Requests::default();
        let mut pieces = Vec::new();
        for byte in stream {
            pieces.extend(collect(&mut requests, std::slice::from_ref(byte)));
        }
        let heads_and_ends: Vec<_> = pieces.iter().filter(|p| !p.starts_with("body")).collect();
        assert_eq!(heads_and_ends.len(), 4);
        let body: String = pieces
            .iter()
            .filter_map(|p| p.strip_prefix("body "))
            .collect();
        assert_eq!(body, "hello");
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let stream = b"POST /v1/uploads/u/parts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\na\r\n\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let pieces = collect(&mut Requests::default(), stream);
        assert_eq!(pieces[0], "POST /v1/uploads/u/parts Chunked");
        // The body is forwarded as sent: framing, a chunk holding CRLF, trailers.
        assert_eq!(
            pieces[1],
            "body 5;ext=1\r\nhello\r\n3\r\na\r\n\r\n0\r\nx-trailer: 1\r\n\r\n"
        );
        assert_eq!(pieces[2..], ["end", "GET / Length(0)", "end"]);
        // Split everywhere, the same bytes make up the body.
        let mut requests = Requests::default();
        let mut body = String::new();
        let mut ends = 0;
        for byte in stream {
            for piece in collect(&mut requests, std::slice::from_ref(byte)) {
                if let Some(bytes) = piece.strip_prefix("body ") {
                    body.push_str(bytes);
                }
                ends += usize::from(piece == "end");
            }
        }
        assert_eq!(ends, 2);
        assert!(body.ends_with("x-trailer: 1\r\n\r\n"));
    }

    #[test]
    fn bad_framing_is_refused() {
        let bad = b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n";
        assert!(Requests::default().push(bad).is_err());
        let bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(Requests::default().push(bad_chunk).is_err());
    }

    #[test]
    fn only_part_requests_are_parts() {
        let head = |method: &str, path: &str| Head {
            method: method.to_owned(),
            path: path.to_owned(),
            body: Body::Length(0),
            expects_continue: false,
        };
        assert!(head("POST", "/v1/uploads/upload_abc/parts").is_part());
        assert!(!head("POST", "/v1/uploads/upload_abc/complete").is_part());
        assert!(!head("GET", "/v1/uploads/upload_abc/parts").is_part());
        assert!(!head("POST", "/v1/uploads//parts").is_part());
        assert!(!head("POST", "/v1/uploads").is_part());
    }

    #[test]
    fn every_fourth_part_request_in_the_window_is_throttled() {
        let mut rule = Rule::new(4, Duration::from_secs(10));
        let at = Duration::from_secs;
        // The window starts at the first part request, whenever that is.
        let early: Vec<bool> = (0..8).map(|_| rule.throttles(at(100))).collect();
        assert_eq!(
            early,
            [false, false, false, true, false, false, false, true]
        );
        // The 12th is throttled at 9 s; the 16th, at 10 s, is past the window.
        let later: Vec<bool> = (0..8).map(|i| rule.throttles(at(109 + i / 4))).collect();
        assert_eq!(
            later,
            [false, false, false, true, false, false, false, false]
        );
    }

    #[test]
    fn the_429_is_openais() {
        let answer = String::from_utf8(too_many_requests(false)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains("retry-after-ms: 500\r\nretry-after: 1\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(!head.contains("connection: close"));
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
        assert_eq!(error["error"]["type"], "requests");
        assert!(error["error"]["param"].is_null());
        assert!(
            too_many_requests(true)
                .windows(17)
                .any(|w| w == b"connection: close")
        );
    }

    #[test]
    fn a_throttled_part_is_answered_here_and_the_connection_stays_usable() {
        // A server that answers each request with 200 and what it received.
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        thread::spawn(move || {
            let (stream, _) = upstream.accept().unwrap();
            let mut requests = Requests::default();
            let mut buffer = vec![0; 4096];
            let mut reader = stream.try_clone().unwrap();
            let mut writer = stream;
            let mut body = Vec::new();
            while let Ok(len @ 1..) = reader.read(&mut buffer) {
                for piece in requests.push(&buffer[..len]).unwrap() {
                    match piece {
                        Piece::Body(bytes) => body.extend_from_slice(bytes),
                        Piece::End => {
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            writer.write_all(answer.as_bytes()).unwrap();
                            writer.write_all(&body).unwrap();
                            body.clear();
                        }
                        Piece::Head(..) => {}
                    }
                }
            }
        });
        let throttle = Throttle::start(upstream_addr, 2, Duration::from_hours(1)).unwrap();
        let mut client = TcpStream::connect(throttle.addr()).unwrap();
        let part = |body: &str| {
            format!(
                "POST /v1/uploads/u/parts HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let read_answer = |client: &mut TcpStream| {
            let mut answer = Vec::new();
            let mut byte = [0];
            while find(&answer, b"\r\n\r\n").is_none() {
                client.read_exact(&mut byte).unwrap();
                answer.push(byte[0]);
            }
            let head = String::from_utf8(answer).unwrap();
            let len: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; len];
            client.read_exact(&mut body).unwrap();
            (head, String::from_utf8(body).unwrap())
        };
        client.write_all(part("first").as_bytes()).unwrap();
        assert_eq!(read_answer(&mut client).1, "first");
        client.write_all(part("second").as_bytes()).unwrap();
        let (head, body) = read_answer(&mut client);
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(body.contains("rate_limit_exceeded"));
        // The next request on the same connection reaches the server intact.
        client.write_all(part("third").as_bytes()).unwrap();
        assert_eq!(read_answer(&mut client).1, "third");
        assert_eq!(throttle.sent(), 1);
    }
}
