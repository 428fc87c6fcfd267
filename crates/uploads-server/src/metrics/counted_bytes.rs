//! The service's bytes, with every failure counted (`uploads_backend_errors_total{backend=
//! "bytes"}`): a decorator over any [`ByteStore`], so that neither backend counts on its own.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use uploads_core::types::{FileId, PartId, UploadId};

use super::{Backend, Metrics};
use crate::byte_store::{ByteStore, ContentSource, DataSink};

/// A [`ByteStore`] that counts the failures of the one it wraps.
pub(crate) struct CountedBytes {
    inner: Arc<dyn ByteStore>,
    metrics: Arc<Metrics>,
}

impl CountedBytes {
    /// `inner`, its failures counted in `metrics`.
    pub(crate) fn new(inner: Arc<dyn ByteStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

/// Counts `result`'s error, if any, and passes it on.
fn counted<T>(metrics: &Metrics, result: io::Result<T>) -> io::Result<T> {
    if result.is_err() {
        metrics.backend_error(Backend::Bytes);
    }
    result
}

impl ByteStore for CountedBytes {
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>> {
        let sink = counted(&self.metrics, self.inner.begin_part(upload, part))?;
        Ok(Box::new(CountedSink {
            inner: sink,
            metrics: Arc::clone(&self.metrics),
        }))
    }

    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>> {
        let sink = counted(&self.metrics, self.inner.begin_file_data(file))?;
        Ok(Box::new(CountedSink {
            inner: sink,
            metrics: Arc::clone(&self.metrics),
        }))
    }

    fn open(&self, source: &ContentSource) -> io::Result<Box<dyn Read + Send>> {
        // A read failing part-way through a download is the client's cut-short body, and
        // the stream's own log line: only the open is counted here.
        counted(&self.metrics, self.inner.open(source))
    }

    fn missing_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<Vec<PartId>> {
        counted(&self.metrics, self.inner.missing_parts(upload, parts))
    }

    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()> {
        counted(&self.metrics, self.inner.remove_parts(upload, parts))
    }

    fn remove_file_data(&self, file: &FileId) -> io::Result<()> {
        counted(&self.metrics, self.inner.remove_file_data(file))
    }

    fn probe(&self) -> io::Result<()> {
        counted(&self.metrics, self.inner.probe())
    }
}

/// A [`DataSink`] whose write and commit failures are counted.
struct CountedSink {
    inner: Box<dyn DataSink>,
    metrics: Arc<Metrics>,
}

impl DataSink for CountedSink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        counted(&self.metrics, self.inner.write(data))
    }

    fn write_chunks(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        counted(&self.metrics, self.inner.write_chunks(chunks))
    }

    fn commit(self: Box<Self>) -> io::Result<u64> {
        counted(&self.metrics, self.inner.commit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DirStore;

    #[test]
    fn a_failure_of_the_bytes_is_counted_and_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new(Vec::new()));
        let bytes = CountedBytes::new(Arc::new(store), Arc::clone(&metrics));
        let failures = |metrics: &Metrics| {
            metrics
                .encode()
                .lines()
                .find_map(|line| {
                    line.strip_prefix("uploads_backend_errors_total{backend=\"bytes\"} ")
                })
                .map(str::to_owned)
        };
        bytes.probe().unwrap();
        assert_eq!(failures(&metrics), None, "a success is no failure");
        // The ledger would say this File exists; its bytes are not there.
        let missing = ContentSource::Direct(FileId::new("file-gone"));
        let error = bytes.open(&missing).err().expect("nothing to read");
        assert_eq!(
            error.kind(),
            io::ErrorKind::NotFound,
            "the error is passed on"
        );
        assert_eq!(failures(&metrics).as_deref(), Some("1"));
    }
}
