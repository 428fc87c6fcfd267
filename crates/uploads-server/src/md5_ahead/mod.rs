//! The md5 of a pending Upload computed while its Parts arrive, so that a complete whose
//! listed order matches the order Parts were sent in (what a client sending a file front to
//! back causes) needs no second pass over gigabytes. A capability of the server with one
//! implementation per backend: [`InMemory`] chains where every Part reaches one process (the
//! directory), [`InDatabase`] chains that the instances sharing a database extend between
//! them. The handlers only say when a Part started, was recorded or failed, and ask for the
//! digest.

mod database;
mod memory;

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uploads_core::buffer::AlignedBuffer;
use uploads_core::digest::{Md5Hasher, Md5Resume};
use uploads_core::types::{PartId, UploadId};

pub(crate) use database::InDatabase;
pub(crate) use memory::InMemory;

use crate::byte_store::{ByteStore, ContentSource};
use crate::stats::ServerStats;

/// The longest a complete waits for hashing under way before reading the Parts itself: far
/// more than hashing a few 64 MiB Parts takes, so it only guards against a stuck chain.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Hashing the Parts of pending Uploads ahead of their complete.
pub(crate) trait HashAhead: Send + Sync {
    /// A Part's request started, naming its 0-based position in the file or not (see
    /// [`uploads_core::api::PART_INDEX_HEADER`]): tell the returned [`PartHashing`] when the
    /// Part is recorded; dropped before, the Part failed.
    fn started(
        self: Arc<Self>,
        upload: &UploadId,
        part: &PartId,
        position: Option<u32>,
    ) -> PartHashing;

    /// The md5 of `listed` (a complete's Parts, in order): what the chain hashed in that
    /// order is reused, the rest is read from the store.
    fn digest<'a>(
        &'a self,
        upload: &'a UploadId,
        listed: Vec<PartId>,
    ) -> BoxFuture<'a, io::Result<[u8; 16]>>;

    /// The Upload was cancelled, completed or swept: its chain is of no more use.
    fn forget(&self, upload: &UploadId);
}

/// A Part on its way to its Upload's chain: [`PartHashing::committed`] once recorded;
/// dropped before that, the Part failed and the chain skips it.
pub(crate) struct PartHashing {
    /// Told whether the Part was recorded, once.
    ended: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl PartHashing {
    fn new(ended: impl FnOnce(bool) + Send + 'static) -> Self {
        Self {
            ended: Some(Box::new(ended)),
        }
    }

    /// The Part is durable and recorded: the chain may hash it.
    pub(crate) fn committed(mut self) {
        if let Some(ended) = self.ended.take() {
            ended(true);
        }
    }
}

impl Drop for PartHashing {
    fn drop(&mut self) {
        if let Some(ended) = self.ended.take() {
            ended(false);
        }
    }
}

/// Hashes what `resume` leaves of an Upload's listed Parts, from its state, on a blocking
/// thread; counts the Parts read again.
async fn finish_digest(
    store: &Arc<dyn ByteStore>,
    stats: &ServerStats,
    upload: &UploadId,
    resume: Md5Resume,
) -> io::Result<[u8; 16]> {
    stats.count_reread(resume.remaining.len());
    let store = Arc::clone(store);
    let source = ContentSource::Parts {
        upload: upload.clone(),
        parts: resume.remaining,
    };
    let mut hasher = resume.state;
    tokio::task::spawn_blocking(move || {
        hash_into(&*store, &source, &mut hasher)?;
        Ok(hasher.finish())
    })
    .await
    .map_err(io::Error::other)?
}

/// Feeds the bytes of `source` into `state`.
fn hash_into(
    store: &dyn ByteStore,
    source: &ContentSource,
    state: &mut Md5Hasher,
) -> io::Result<()> {
    let mut reader = store.open(source)?;
    let mut buffer = AlignedBuffer::zeroed(1 << 20);
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        state.update(&buffer[..n]);
    }
}
