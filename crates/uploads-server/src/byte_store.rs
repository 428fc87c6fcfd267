//! The bytes seam: where the bytes of Parts and Files live, whichever backend keeps them.
//! Implemented by the directory ([`crate::store::DirStore`]) and by object storage
//! ([`crate::objects::ObjectBytes`]); the records (the ledger's state) are the other seam,
//! and the journal only the directory's records need is not part of this one.

use std::io::{self, Read};

use bytes::Bytes;
use uploads_core::types::{FileId, PartId, UploadId};

/// Where a File's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    /// The listed Parts of an Upload, in order (a completed Upload's manifest).
    Parts {
        /// The Upload holding the Parts.
        upload: UploadId,
        /// The Parts, in File order.
        parts: Vec<PartId>,
    },
    /// The bytes written through [`ByteStore::begin_file_data`].
    Direct(FileId),
}

/// Bytes being written to a temporary place; durable only after [`DataSink::commit`].
/// Dropping a sink without committing removes what it wrote.
pub trait DataSink: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Appends several chunks in order. A file sink writes them with vectored writes, so
    /// chunks that arrived separately are not first copied together.
    fn write_chunks(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        chunks.iter().try_for_each(|chunk| self.write(chunk))
    }
    /// Makes the bytes durable under their final name; returns how many were written.
    fn commit(self: Box<Self>) -> io::Result<u64>;
}

/// Durable storage of Part and File bytes. Methods block (file system or network I/O, each
/// bounded): async callers run them on a blocking thread.
pub trait ByteStore: Send + Sync + 'static {
    /// Starts writing a Part's bytes.
    fn begin_part(&self, upload: &UploadId, part: &PartId) -> io::Result<Box<dyn DataSink>>;
    /// Starts writing the bytes of a File made in one request (`POST /files`).
    fn begin_file_data(&self, file: &FileId) -> io::Result<Box<dyn DataSink>>;
    /// Opens a File's bytes for reading, in order.
    fn open(&self, source: &ContentSource) -> io::Result<Box<dyn Read + Send>>;
    /// Of an Upload's `parts`, those whose bytes are not stored (removed behind the
    /// server's back: an operator, a bucket's lifecycle rule), in the order given. A
    /// failure to find out is an error, never "all present".
    fn missing_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<Vec<PartId>>;
    /// Removes some Parts' bytes of an Upload (one already gone counts as removed).
    fn remove_parts(&self, upload: &UploadId, parts: &[PartId]) -> io::Result<()>;
    /// Removes the bytes of a File made by `POST /files` (one already gone counts as
    /// removed).
    fn remove_file_data(&self, file: &FileId) -> io::Result<()>;
    /// Whether the bytes can be written now (the health check): a cheap probe, answered
    /// within a few seconds even when the storage does not answer; the error says why not.
    /// The directory also counts a disk with almost no room left as not taking writes.
    fn probe(&self) -> io::Result<()>;
}
