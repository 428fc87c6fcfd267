//! Reading a File's objects in order, the next ones fetched ahead.

use std::collections::VecDeque;
use std::io::{self, Read};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{Calls, READ_AHEAD};

/// An object's bytes as they arrive.
pub(super) type ObjectStream = BoxStream<'static, object_store::Result<Bytes>>;

/// Objects read in order, the GETs of the next [`READ_AHEAD`] started before they are
/// reached. Memory stays bounded: a GET started ahead holds its response's first bytes
/// only (the rest waits in the connection, under its flow control).
pub(super) struct ObjectReader {
    calls: Calls,
    handle: Handle,
    /// The objects whose GET has not started.
    keys: std::vec::IntoIter<Path>,
    /// The GETs started, in order.
    ahead: VecDeque<JoinHandle<io::Result<ObjectStream>>>,
    current: Option<ObjectStream>,
    pending: Bytes,
}

impl ObjectReader {
    /// Reads the objects of `keys` in order; the first one's GET is awaited here.
    pub(super) fn open(calls: Calls, handle: Handle, keys: Vec<Path>) -> io::Result<Self> {
        let mut reader = Self {
            calls,
            handle,
            keys: keys.into_iter(),
            ahead: VecDeque::new(),
            current: None,
            pending: Bytes::new(),
        };
        reader.current = reader.next_object()?;
        Ok(reader)
    }

    /// The next object's bytes (`None` after the last); an object that is gone is an error
    /// of kind `NotFound`.
    fn next_object(&mut self) -> io::Result<Option<ObjectStream>> {
        while self.ahead.len() <= READ_AHEAD {
            let Some(path) = self.keys.next() else { break };
            let calls = self.calls.clone();
            self.ahead.push_back(self.handle.spawn(async move {
                let limit = calls.timeout;
                let object = calls
                    .bounded(&path, "GET", limit, calls.store.get(&path))
                    .await?;
                Ok(object.into_stream())
            }));
        }
        let Some(get) = self.ahead.pop_front() else {
            return Ok(None);
        };
        self.handle
            .block_on(get)
            .map_err(io::Error::other)?
            .map(Some)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() || buf.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending.split_to(n));
                return Ok(n);
            }
            if let Some(stream) = &mut self.current {
                let limit = self.calls.timeout;
                match self
                    .handle
                    .block_on(tokio::time::timeout(limit, stream.next()))
                {
                    Ok(Some(chunk)) => {
                        self.pending = chunk.map_err(io::Error::other)?;
                        continue;
                    }
                    Ok(None) => self.current = None,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the object store {} sent no bytes within {limit:?}",
                                self.calls.name
                            ),
                        ));
                    }
                }
            }
            match self.next_object()? {
                Some(stream) => self.current = Some(stream),
                None => return Ok(0),
            }
        }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        for get in &self.ahead {
            get.abort();
        }
    }
}
