//! Request bodies read with a limit and an idle timeout (and counted), and the response body
//! type.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use tokio::sync::mpsc;

/// The body of every response: small JSON bodies, or File content streamed from disk.
pub type ResponseBody = BoxBody<Bytes, io::Error>;

/// A whole response body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response body fed by a channel, for content read on a blocking thread. A read error
/// sent down the channel aborts the response (the client sees a truncated body, never a
/// silently short one, because Content-Length was announced).
pub fn channel_body(receiver: mpsc::Receiver<io::Result<Bytes>>) -> ResponseBody {
    ChannelBody { receiver }.boxed()
}

struct ChannelBody {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

/// `body`, keeping `guard` alive until the body is sent or dropped.
pub fn with_guard<G: Send + Sync + Unpin + 'static>(body: ResponseBody, guard: G) -> ResponseBody {
    Guarded {
        body,
        _guard: guard,
    }
    .boxed()
}

struct Guarded<G> {
    body: ResponseBody,
    _guard: G,
}

impl<G: Unpin> Body for Guarded<G> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why reading a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No byte arrived for the idle timeout.
    #[error("the request body stopped moving for {0:?}")]
    Idle(Duration),
    /// The body arrived slower than the minimum rate (bytes per second).
    #[error("the request body arrived slower than the minimum of {0} bytes per second")]
    TooSlow(u64),
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was crossed.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error("reading the request body failed")]
    Transport(#[source] hyper::Error),
}

/// How fast a body must keep arriving: chunks at most `idle` apart, and on average at least
/// `min_bytes_per_sec` once the first `idle` has passed (so a body trickled a byte at a time,
/// each just inside the idle timeout, still ends).
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// The longest a body may stop moving.
    pub idle: Duration,
    /// The slowest average rate, in bytes per second, after the first `idle`; 0 for none.
    pub min_bytes_per_sec: u64,
}

/// Reads a request body chunk by chunk, failing when it stops moving or is too slow.
pub struct BodyReader<B> {
    body: B,
    pace: BodyPace,
    started: tokio::time::Instant,
    received: u64,
}

impl<B> BodyReader<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    /// Wraps a body with the pace it must keep.
    pub fn new(body: B, pace: BodyPace) -> Self {
        Self {
            body,
            pace,
            started: tokio::time::Instant::now(),
            received: 0,
        }
    }

    /// When the body, having delivered `received` bytes, is behind the minimum rate.
    fn rate_deadline(&self) -> Option<tokio::time::Instant> {
        let rate = self.pace.min_bytes_per_sec;
        (rate > 0).then(|| {
            let millis = self.received.saturating_mul(1000) / rate;
            let earned = Duration::from_millis(millis);
            self.started + self.pace.idle + earned
        })
    }

    /// The next data chunk, or `None` at the end of the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let idle = tokio::time::Instant::now() + self.pace.idle;
            let (deadline, too_slow) = match self.rate_deadline() {
                Some(rate) if rate < idle => (rate, true),
                _ => (idle, false),
            };
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| {
                    if too_slow {
                        BodyError::TooSlow(self.pace.min_bytes_per_sec)
                    } else {
                        BodyError::Idle(self.pace.idle)
                    }
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(error)) => return Err(BodyError::Transport(error)),
                Some(Ok(frame)) => {
                    // Trailers carry nothing this service reads.
                    if let Ok(data) = frame.into_data() {
                        self.received += data.len() as u64;
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body, refused as soon as it grows past `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        let mut collected = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if collected.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(collected))
    }
}

/// A request body that counts the bytes read from it, for the request's log line and
/// metrics (what arrived, not what `Content-Length` promised).
pub struct CountedBody<B> {
    inner: B,
    received: Arc<AtomicU64>,
}

/// How many bytes a [`CountedBody`] has delivered so far.
#[derive(Clone)]
pub struct Received(Arc<AtomicU64>);

impl Received {
    /// The body's bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<B> CountedBody<B> {
    /// `inner`, counted; the count is read through the returned [`Received`].
    pub fn new(inner: B) -> (Self, Received) {
        let received = Arc::new(AtomicU64::new(0));
        (
            Self {
                inner,
                received: Arc::clone(&received),
            },
            Received(received),
        )
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
