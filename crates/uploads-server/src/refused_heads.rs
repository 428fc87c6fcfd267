//! Requests that hyper refuses while reading their head (over the head limit, a request line
//! or header that does not parse, `Content-Length`s that disagree) never reach the service:
//! hyper answers them itself, with a bare status, no body, no `x-request-id` and no log
//! line. [`RefusedHeads`] wraps a connection's socket and puts the service's kind of answer
//! in place of that one: OpenAI's error body ([`Rejection::unreadable_head`]), an
//! `x-request-id`, and a log line.
//!
//! How it tells hyper's own answer from the service's, without parsing responses: an HTTP/1
//! server writes nothing but answers to requests it handed to the service, except that one.
//! So when, at the last flush, every request handed over had been answered in full (its
//! response body dropped, hence all of it written) and no request has been handed over
//! since, the next write is hyper's own answer; it starts with `HTTP/1.` and the connection
//! closes after it. The first write of an HTTP/2 connection is a SETTINGS frame: such a
//! connection is passed through untouched.
//!
//! What stays bare: when a client pipelines and hyper queues its refusal behind the last
//! bytes of the previous answer before a flush, both go out in one write and the refusal is
//! left as hyper wrote it. Telling them apart there would take parsing the responses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use uploads_core::rejection::Rejection;

use crate::server::Activity;
use crate::service::Handler;

/// Header fields hyper reads in one request head (its default; setting it explicitly would
/// move every request's header parsing to the heap). More is a 431.
pub(crate) const MAX_HEADER_FIELDS: usize = 100;

/// What a response written by hyper itself begins with.
const HTTP1_RESPONSE: &[u8] = b"HTTP/1.";

/// A connection's socket that answers hyper's own refusals the way the service answers.
pub(crate) struct RefusedHeads<T> {
    inner: T,
    activity: Arc<Activity>,
    service: Arc<dyn Handler>,
    peer: SocketAddr,
    max_head_bytes: usize,
    state: State,
}

enum State {
    /// HTTP/1 (or nothing written yet). `quiet_since` is `Some(n)` while every one of the `n`
    /// requests handed to the service so far was answered in full at the last flush, and
    /// nothing has been written since.
    Watching {
        quiet_since: Option<u64>,
        first_write: bool,
    },
    /// The service's answer in place of hyper's: `written` bytes of `answer` are out;
    /// `consumed` is what hyper is told of its own bytes once all of it is.
    Replacing {
        answer: Vec<u8>,
        written: usize,
        consumed: usize,
    },
    /// The answer is out; whatever hyper still writes is dropped (the connection closes).
    Replaced,
    /// HTTP/2: nothing to do.
    PassThrough,
}

impl<T> RefusedHeads<T> {
    pub(crate) fn new(
        inner: T,
        activity: Arc<Activity>,
        service: Arc<dyn Handler>,
        peer: SocketAddr,
        max_head_bytes: usize,
    ) -> Self {
        Self {
            inner,
            activity,
            service,
            peer,
            max_head_bytes,
            state: State::Watching {
                quiet_since: Some(0),
                first_write: true,
            },
        }
    }

    /// Looks at the start of the next write (`first` of `len` bytes) and decides whether it
    /// is hyper's own answer; returns whether the service's answer replaces it.
    fn replaces(&mut self, first: &[u8], len: usize) -> bool {
        let State::Watching {
            quiet_since,
            first_write,
        } = &mut self.state
        else {
            return matches!(self.state, State::Replacing { .. } | State::Replaced);
        };
        let hyper_own = *quiet_since == Some(self.activity.requests_started())
            && first.starts_with(HTTP1_RESPONSE);
        if let Some(status) = hyper_own.then(|| status_of(first)).flatten() {
            self.state = State::Replacing {
                answer: self.answer(status),
                written: 0,
                consumed: len,
            };
            return true;
        }
        if *first_write && !first.starts_with(HTTP1_RESPONSE) {
            self.state = State::PassThrough;
        } else {
            *quiet_since = None;
            *first_write = false;
        }
        false
    }

    /// The service's answer for hyper's `status`: OpenAI's body, an `x-request-id`, logged.
    fn answer(&self, status: StatusCode) -> Vec<u8> {
        let rejection = Rejection::unreadable_head(status, self.max_head_bytes, MAX_HEADER_FIELDS);
        let request_id = self.service.request_id();
        tracing::info!(
            status = status.as_u16(),
            peer = %self.peer,
            %request_id,
            error = %rejection.body.error.message,
            "request refused before routing"
        );
        let body = rejection.body_json();
        let mut answer = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             x-request-id: {request_id}\r\nconnection: close\r\n\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        answer
    }
}

/// The status code of a response head's first line (`HTTP/1.1 431 ...`).
fn status_of(head: &[u8]) -> Option<StatusCode> {
    let code = head.get(HTTP1_RESPONSE.len() + 2..HTTP1_RESPONSE.len() + 5)?;
    StatusCode::from_bytes(code).ok()
}

impl<T: AsyncWrite + Unpin> RefusedHeads<T> {
    /// Writes the rest of the replacing answer; then tells hyper its bytes were written.
    fn poll_replace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &mut self.state {
            State::Replacing {
                answer,
                written,
                consumed,
            } => {
                while *written < answer.len() {
                    let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *written += n;
                }
                let consumed = *consumed;
                self.state = State::Replaced;
                Poll::Ready(Ok(consumed))
            }
            // Called only once `replaces` said so.
            _ => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RefusedHeads<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.replaces(buf, buf.len()) {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if matches!(this.state, State::Replaced) {
            return Poll::Ready(Ok(buf.len()));
        }
        this.poll_replace(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &**buf);
        let len = bufs.iter().map(|buf| buf.len()).sum();
        if !this.replaces(first, len) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if matches!(this.state, State::Replaced) {
            return Poll::Ready(Ok(len));
        }
        this.poll_replace(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        // hyper flushes the socket only once its own buffer is empty: every byte written.
        if let State::Watching { quiet_since, .. } = &mut this.state {
            *quiet_since =
                (this.activity.requests_in_flight() == 0).then(|| this.activity.requests_started());
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RefusedHeads<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}
