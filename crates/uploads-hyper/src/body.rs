//! Request bodies: whole bodies in memory, and a part's body streamed from its source one
//! chunk at a time (head, data, tail), so a part in flight holds one chunk, not the part.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;
use uploads_core::multipart::MultipartBody;

use uploads_client_io::Source;
use uploads_core::buffer::BufferPool;

/// How many bytes a part sender reads at a time (one blocking read each): what one part in
/// flight holds in memory.
pub(crate) const CHUNK_BYTES: u64 = 1024 * 1024;

/// The body of every request this client sends.
pub(crate) type RequestBody = BoxBody<Bytes, io::Error>;

/// A body held whole in memory.
pub(crate) fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Told how many more data bytes went to the connection. It runs
/// inside `poll_frame`: it MUST be quick and take no lock another part may hold.
pub(crate) type OnSent = Arc<dyn Fn(u64) + Send + Sync>;

/// Where a part body leaves the error of a failed source read, so the sender can tell it
/// from a network failure (hyper only passes on that the body failed).
pub(crate) type SourceErrorSlot = Arc<Mutex<Option<io::Error>>>;

/// At most this many chunk buffers wait unused in a [`ChunkSource`]; more are freed.
const MAX_IDLE_CHUNKS: usize = 32;

/// An upload's source and the chunk buffers its part bodies take turns with: a chunk's
/// buffer goes back to the pool once hyper has written it, so sending does not allocate,
/// zero and fault in a fresh megabyte per chunk, and the reads land on a cache line (see
/// [`uploads_core::buffer`]). The pool lives as long as the upload.
#[derive(Clone)]
pub(crate) struct ChunkSource {
    source: Arc<Source<'static>>,
    chunks: BufferPool,
}

impl ChunkSource {
    pub(crate) fn new(source: Source<'static>) -> Self {
        Self {
            source: Arc::new(source),
            chunks: BufferPool::new(CHUNK_BYTES as usize, MAX_IDLE_CHUNKS),
        }
    }

    /// The bytes being sent.
    pub(crate) fn source(&self) -> &Source<'static> {
        &self.source
    }

    /// `len` (at most [`CHUNK_BYTES`]) bytes from `offset`, in a pooled buffer. Blocks.
    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        self.chunks.fill(|buffer| {
            self.source
                .read_exact_at(offset, &mut buffer[..len])
                .map(|()| len)
        })
    }
}

/// `head`, `len` bytes of `source` from `offset`, then `tail`. Each chunk is read on the
/// blocking pool when the connection asks for it, so reading keeps pace with sending.
pub(crate) struct SourceBody {
    head: Option<Bytes>,
    tail: Option<Bytes>,
    source: ChunkSource,
    offset: u64,
    remaining: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    on_sent: Option<OnSent>,
    /// Cleared once the request is over: the connection may hold on to the body a little
    /// longer, and its late chunks must not count for the next attempt.
    live: Arc<AtomicBool>,
    source_error: SourceErrorSlot,
}

impl SourceBody {
    /// The body of `multipart` with its data read from `source`.
    pub(crate) fn new(
        multipart: &MultipartBody,
        source: ChunkSource,
        offset: u64,
        len: u64,
        on_sent: Option<OnSent>,
        live: Arc<AtomicBool>,
        source_error: SourceErrorSlot,
    ) -> Self {
        Self {
            head: Some(multipart.head.clone()),
            tail: Some(multipart.tail.clone()),
            source,
            offset,
            remaining: len,
            reading: None,
            on_sent,
            live,
            source_error,
        }
    }

    /// Keeps the source's error for the sender and hands hyper a stand-in.
    fn fail(&self, error: io::Error) -> io::Error {
        let stand_in = io::Error::new(error.kind(), error.to_string());
        *self
            .source_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
        stand_in
    }
}

impl Body for SourceBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.remaining > 0 {
            let len = this.remaining.min(CHUNK_BYTES);
            let reading = this.reading.get_or_insert_with(|| {
                let source = this.source.clone();
                let offset = this.offset;
                tokio::task::spawn_blocking(move || source.read(offset, len as usize))
            });
            let read = ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            let chunk = match read {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(error)) => return Poll::Ready(Some(Err(this.fail(error)))),
                Err(join_error) => {
                    return Poll::Ready(Some(Err(this.fail(io::Error::other(join_error)))));
                }
            };
            this.offset += len;
            this.remaining -= len;
            if let Some(on_sent) = &this.on_sent
                && this.live.load(Ordering::Acquire)
            {
                on_sent(len);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(this.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.remaining == 0 && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let framing =
            self.head.as_ref().map_or(0, Bytes::len) + self.tail.as_ref().map_or(0, Bytes::len);
        SizeHint::with_exact(framing as u64 + self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::atomic::AtomicU64;
    use uploads_core::multipart::Boundary;

    #[tokio::test]
    async fn a_part_body_is_head_data_tail_and_reports_what_it_sent() {
        let data: Vec<u8> = (0..CHUNK_BYTES * 2 + 10).map(|i| (i % 251) as u8).collect();
        let len = data.len() as u64;
        let source = ChunkSource::new(Source::new(Cursor::new(data.clone()), len + 7));
        let multipart = MultipartBody::upload_part(&Boundary::new("b").unwrap(), len - 3);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let on_sent: OnSent = Arc::new(move |bytes| {
            counter.fetch_add(bytes, Ordering::Relaxed);
        });
        let body = SourceBody::new(
            &multipart,
            source,
            3,
            len - 3,
            Some(on_sent),
            Arc::new(AtomicBool::new(true)),
            SourceErrorSlot::default(),
        );
        assert_eq!(body.size_hint().exact(), Some(multipart.content_length));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.as_ref(), multipart.assemble(&data[3..]).as_slice());
        assert_eq!(sent.load(Ordering::Relaxed), len - 3);
    }

    #[tokio::test]
    async fn a_short_source_fails_the_body_and_leaves_its_error() {
        let source = ChunkSource::new(Source::new(Cursor::new(vec![1; 4]), 10));
        let multipart = MultipartBody::upload_part(&Boundary::new("b").unwrap(), 10);
        let slot = SourceErrorSlot::default();
        let body = SourceBody::new(
            &multipart,
            source,
            0,
            10,
            None,
            Arc::new(AtomicBool::new(true)),
            Arc::clone(&slot),
        );
        let error = body.collect().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        let kept = slot.lock().unwrap().take().unwrap();
        assert_eq!(kept.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_chunk_written_by_the_connection_lends_its_buffer_to_the_next() {
        let data: Vec<u8> = (0..3 * CHUNK_BYTES).map(|i| (i % 251) as u8).collect();
        let len = data.len() as u64;
        let source = ChunkSource::new(Source::new(Cursor::new(data.clone()), len));
        let chunk = CHUNK_BYTES as usize;
        let first = source.read(0, chunk).unwrap();
        let held = source.read(len - 10, 10).unwrap();
        assert_eq!(first.as_ref(), &data[..chunk]);
        assert_eq!(held.as_ref(), &data[data.len() - 10..]);
        let first_buffer = first.as_ptr();
        drop(first);
        let second = source.read(CHUNK_BYTES, chunk).unwrap();
        assert_eq!(
            second.as_ptr(),
            first_buffer,
            "the written chunk's buffer is reused"
        );
        assert_eq!(second.as_ref(), &data[chunk..2 * chunk]);
        assert!((second.as_ptr() as usize).is_multiple_of(uploads_core::buffer::BUFFER_ALIGN));
        assert_eq!(
            held.as_ref(),
            &data[data.len() - 10..],
            "a chunk in flight is untouched"
        );
    }
}
