//! Writing a request's bytes (a Part, a direct File) to the store in bounded steps.

use std::io;

use bytes::Bytes;
use uploads_core::rejection::Rejection;

use super::{Answer, storage_rejection};
use crate::byte_store::DataSink;

/// Bytes of a Part gathered in memory before one blocking task writes them.
const WRITE_BATCH: usize = 256 << 10;

/// Bytes of one Part (or `POST /files` File) on their way to disk. Arriving chunks gather in
/// memory (at most [`WRITE_BATCH`] bytes) and each batch is written by one short blocking
/// task: a request holds a blocking thread only while its bytes are being written, never
/// while its client is slow, so slow bodies cannot exhaust the pool other requests need.
pub(super) struct PartWriter {
    /// `None` once a write failed or the sink was handed to a blocking task that never
    /// returned it.
    sink: Option<Box<dyn DataSink>>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

impl PartWriter {
    pub(super) async fn start(
        open: impl FnOnce() -> io::Result<Box<dyn DataSink>> + Send + 'static,
    ) -> Answer<Self> {
        let sink = blocking(open).await?;
        Ok(Self {
            sink: Some(sink),
            pending: Vec::new(),
            pending_bytes: 0,
        })
    }

    pub(super) async fn write(&mut self, bytes: Bytes) -> Answer<()> {
        self.pending_bytes += bytes.len();
        self.pending.push(bytes);
        if self.pending_bytes >= WRITE_BATCH {
            let sink = self.take_sink()?;
            let pending = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.sink = Some(
                blocking(move || {
                    let mut sink = sink;
                    sink.write_chunks(&pending)?;
                    Ok(sink)
                })
                .await?,
            );
        }
        Ok(())
    }

    pub(super) async fn commit(mut self) -> Answer<u64> {
        let mut sink = self.take_sink()?;
        let pending = std::mem::take(&mut self.pending);
        blocking(move || {
            sink.write_chunks(&pending)?;
            sink.commit()
        })
        .await
    }

    fn take_sink(&mut self) -> Answer<Box<dyn DataSink>> {
        self.sink
            .take()
            .ok_or_else(|| storage_failure(&io::Error::other("the writer failed earlier")))
    }
}

/// Runs one bounded piece of disk work on a blocking thread; a failure is a 500 that says
/// nothing was stored. If the request is dropped meanwhile, the task finishes on its own and
/// drops what it holds (an uncommitted sink removes its bytes).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Answer<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(storage_failure(&error)),
        Err(error) => Err(storage_failure(&io::Error::other(error))),
    }
}

fn storage_failure(error: &io::Error) -> Rejection {
    tracing::error!(%error, "storing bytes failed");
    storage_rejection(
        error,
        "The server could not store the data durably. Retry the request.",
    )
}
