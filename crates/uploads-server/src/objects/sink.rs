//! A Part's bytes on their way to the bucket.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::budget::{MemoryBudget, Reservation};
use super::stale::LiveUploads;
use super::{Calls, PIECES_IN_FLIGHT, SMALL_OBJECT};
use crate::byte_store::DataSink;

/// The bytes of the piece (or small object) being gathered.
pub(super) enum Gathered {
    /// In memory, under their reservation: chunks of exactly their size (a growing
    /// buffer would hold up to twice what the budget counts).
    Memory(Vec<Bytes>, Reservation),
    /// In an unnamed temp file (the budget had no room), and how many.
    Disk(std::fs::File, usize),
}

impl Gathered {
    fn len(&self) -> usize {
        match self {
            Self::Memory(_, reservation) => reservation.bytes,
            Self::Disk(_, len) => *len,
        }
    }
}

/// A Part's bytes on their way to the bucket: gathered up to a small object (one `put`),
/// past that sent as multipart pieces of exactly [`SMALL_OBJECT`] bytes (the last one may
/// be shorter), [`PIECES_IN_FLIGHT`] at once.
pub(super) struct ObjectSink {
    calls: Calls,
    path: Path,
    handle: Handle,
    budget: Arc<MemoryBudget>,
    /// Where this sink's multipart upload is listed while it is under way.
    live: Arc<LiveUploads>,
    gathered: Gathered,
    /// The multipart upload, from the first piece on.
    upload: Option<Box<dyn MultipartUpload>>,
    /// The pieces being sent, oldest first; each holds its bytes' reservation.
    in_flight: VecDeque<JoinHandle<io::Result<()>>>,
    written: u64,
    /// Committed or failed: nothing more may be written.
    done: bool,
}

impl ObjectSink {
    pub(super) fn new(
        calls: Calls,
        path: Path,
        handle: Handle,
        budget: Arc<MemoryBudget>,
        live: Arc<LiveUploads>,
    ) -> Self {
        Self {
            live,
            gathered: Gathered::Memory(Vec::new(), Reservation::empty(&budget)),
            calls,
            path,
            handle,
            budget,
            upload: None,
            in_flight: VecDeque::new(),
            written: 0,
            done: false,
        }
    }

    /// Appends to the gathered bytes (at most up to a piece), in memory while the budget
    /// has room, on disk from then on.
    fn gather(&mut self, data: &[u8]) -> io::Result<()> {
        if let Gathered::Memory(held, reservation) = &mut self.gathered {
            if let Some(more) = self.budget.try_gather(data.len()) {
                reservation.merge(more);
                held.push(Bytes::copy_from_slice(data));
                return Ok(());
            }
            let mut file = tempfile::tempfile()?;
            for chunk in held.iter() {
                file.write_all(chunk)?;
            }
            self.gathered = Gathered::Disk(file, reservation.bytes);
        }
        if let Gathered::Disk(file, len) = &mut self.gathered {
            file.write_all(data)?;
            *len += data.len();
        }
        Ok(())
    }

    /// The gathered bytes in memory under their reservation (read back from disk once the
    /// budget has room), and a fresh, empty gathering.
    fn take_gathered(&mut self) -> io::Result<(PutPayload, Reservation)> {
        let empty = Gathered::Memory(Vec::new(), Reservation::empty(&self.budget));
        match std::mem::replace(&mut self.gathered, empty) {
            Gathered::Memory(held, reservation) => Ok((held.into_iter().collect(), reservation)),
            Gathered::Disk(mut file, len) => {
                let limit = self.calls.send_limit(SMALL_OBJECT);
                let reservation = self.handle.block_on(self.budget.send(len, limit))?;
                let mut held = vec![0; len];
                file.seek(SeekFrom::Start(0))?;
                file.read_exact(&mut held)?;
                Ok((PutPayload::from(held), reservation))
            }
        }
    }

    /// Waits for the oldest piece in flight; its failure is this sink's.
    fn wait_oldest(&mut self) -> io::Result<()> {
        match self.in_flight.pop_front() {
            Some(piece) => self.handle.block_on(piece).map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Sends the gathered bytes as the next piece (starting the multipart upload first).
    fn send_piece(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= PIECES_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let (piece, reservation) = self.take_gathered()?;
        let calls = self.calls.clone();
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self.upload.insert({
                // Listed before it exists: a sweep never sees it unlisted.
                self.live.set().insert(self.path.to_string());
                self.handle.block_on(calls.bounded(
                    &self.path,
                    "multipart create",
                    calls.timeout,
                    calls.store.put_multipart(&self.path),
                ))?
            }),
        };
        let limit = calls.send_limit(piece.content_length());
        let sending = upload.put_part(piece);
        let path = self.path.clone();
        self.in_flight.push_back(self.handle.spawn(async move {
            let _held = reservation;
            calls
                .bounded(&path, "multipart piece", limit, sending)
                .await
        }));
        Ok(())
    }

    fn write_piecewise(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.gathered.len() == SMALL_OBJECT {
                // More bytes follow a full piece: it is not the last one, send it.
                self.send_piece()?;
            }
            let (now, later) = data.split_at(data.len().min(SMALL_OBJECT - self.gathered.len()));
            self.gather(now)?;
            data = later;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let (object, _held) = self.take_gathered()?;
            let limit = self.calls.send_limit(object.content_length());
            let calls = &self.calls;
            return self
                .handle
                .block_on(calls.bounded(
                    &self.path,
                    "PUT",
                    limit,
                    calls.store.put(&self.path, object),
                ))
                .map(drop);
        }
        if self.gathered.len() > 0 {
            self.send_piece()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let calls = self.calls.clone();
        if let Some(upload) = &mut self.upload {
            self.handle.block_on(calls.bounded(
                &self.path,
                "multipart completion",
                calls.timeout,
                upload.complete(),
            ))?;
        }
        self.upload = None;
        Ok(())
    }
}

impl DataSink for ObjectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.done {
            return Err(io::Error::other("sink already committed or failed"));
        }
        self.written += data.len() as u64;
        let written = self.write_piecewise(data);
        self.done = written.is_err();
        written
    }

    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        if self.done {
            return Err(io::Error::other("sink already committed or failed"));
        }
        self.done = true;
        self.finish()?;
        Ok(self.written)
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        self.live.set().remove(self.path.as_ref());
        // Not committed: the pieces in flight stop and the multipart upload's pieces go
        // (without blocking: a sink may be dropped on the runtime).
        for piece in &self.in_flight {
            piece.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let (calls, path) = (self.calls.clone(), self.path.clone());
            self.handle.spawn(async move {
                let limit = calls.timeout;
                let _ = calls
                    .bounded(&path, "multipart abort", limit, upload.abort())
                    .await;
            });
        }
    }
}
