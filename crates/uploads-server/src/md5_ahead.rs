//! The md5 of a pending Upload computed while its Parts arrive, so that a complete whose
//! listed order matches the order Parts were sent in (what a client sending a file front to
//! back causes) needs no second pass over gigabytes. The ordering rules are the core's
//! [`Md5Chain`]; this module reads the bytes, on blocking threads, one Part at a time.
//!
//! The chains live in memory only: after a restart, a complete reads every listed Part.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use uploads_core::buffer::AlignedBuffer;
use uploads_core::digest::{Md5Chain, Md5Hasher};
use uploads_core::types::{PartId, UploadId};

use crate::stats::ServerStats;
use crate::store::{ContentSource, Store};

type Chain = Arc<Mutex<Md5Chain>>;

/// The longest a complete waits for hashing under way before reading the Parts itself: far
/// more than hashing a few 64 MiB Parts takes, so it only guards against a stuck chain.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Every pending Upload's chain.
pub(crate) struct Md5Ahead {
    chains: Mutex<HashMap<UploadId, Chain>>,
    /// Woken whenever a chain may have stopped being busy (a Part hashed, hashing given up,
    /// a chain forgotten): what a waiting complete re-checks on.
    changed: tokio::sync::Notify,
    store: Arc<dyn Store>,
    stats: Arc<ServerStats>,
}

impl Md5Ahead {
    pub(crate) fn new(store: Arc<dyn Store>, stats: Arc<ServerStats>) -> Self {
        Self {
            chains: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            store,
            stats,
        }
    }

    fn chains(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Chain>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn chain(&self, upload: &UploadId) -> Chain {
        Arc::clone(self.chains().entry(upload.clone()).or_default())
    }

    /// A Part's request started, naming its position in the file or not (see
    /// [`uploads_core::api::PART_INDEX_HEADER`]); the returned slot marks it failed when
    /// dropped uncommitted.
    pub(crate) fn started(
        self: &Arc<Self>,
        upload: &UploadId,
        part: &PartId,
        position: Option<u32>,
    ) -> Slot {
        let chain = self.chain(upload);
        lock(&chain).slot_started_at(part.clone(), position);
        Slot {
            ahead: Arc::clone(self),
            upload: upload.clone(),
            part: part.clone(),
            chain,
            committed: false,
        }
    }

    /// Forgets an Upload's chain (it was cancelled, or completed).
    pub(crate) fn forget(&self, upload: &UploadId) {
        self.chains().remove(upload);
        self.changed.notify_waiters();
    }

    /// Whether `chain` is still the one registered for `upload` (not forgotten).
    fn is_current(&self, upload: &UploadId, chain: &Chain) -> bool {
        self.chains()
            .get(upload)
            .is_some_and(|live| Arc::ptr_eq(live, chain))
    }

    /// Hashes committed Parts in chain order until the chain has to wait, on a blocking
    /// thread. Only one Part of a chain is hashed at a time.
    fn advance(self: &Arc<Self>, upload: UploadId, chain: Chain) {
        // A slot dropped while the runtime shuts down has no chain worth advancing.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ahead = Arc::clone(self);
        runtime.spawn_blocking(move || {
            loop {
                // A chain forgotten (completed or cancelled) is not worth hashing further.
                if !ahead.is_current(&upload, &chain) {
                    return;
                }
                let Some((part, mut state)) = lock(&chain).next_to_hash() else {
                    ahead.changed.notify_waiters();
                    return;
                };
                let source = ContentSource::Parts {
                    upload: upload.clone(),
                    parts: vec![part.clone()],
                };
                let hashed = hash_into(&*ahead.store, &source, &mut state);
                match hashed {
                    Ok(()) => lock(&chain).hashed(part, state),
                    Err(error) => {
                        tracing::warn!(%error, %upload, %part, "hashing ahead stopped; complete will read the rest");
                        lock(&chain).abandon();
                        ahead.changed.notify_waiters();
                        return;
                    }
                }
                ahead.changed.notify_waiters();
            }
        });
    }

    /// The md5 of `listed` (a complete's Parts, in order): the Upload's chain covers what it
    /// hashed in that order, and the rest is read from disk. The chain is forgotten once it
    /// has nothing under way.
    pub(crate) async fn digest(
        &self,
        upload: &UploadId,
        listed: Vec<PartId>,
    ) -> io::Result<[u8; 16]> {
        let chain = self.chains().get(upload).cloned();
        let resume = match &chain {
            Some(chain) => {
                // Parts being hashed, or ready to be, are done sooner than read again. The
                // chain stays registered meanwhile: its hashing stops once it is forgotten.
                // A chain forgotten meanwhile (a cancel or complete won) is never finished:
                // stop waiting for it.
                let waited = tokio::time::timeout(MAX_WAIT, async {
                    loop {
                        let changed = self.changed.notified();
                        if !lock(chain).is_busy() || !self.is_current(upload, chain) {
                            return;
                        }
                        changed.await;
                    }
                })
                .await;
                self.forget(upload);
                if waited.is_ok() {
                    lock(chain).resume_for(&listed)
                } else {
                    tracing::warn!(%upload, "hashing ahead fell behind; reading every Part");
                    Md5Chain::new().resume_for(&listed)
                }
            }
            None => Md5Chain::new().resume_for(&listed),
        };
        self.stats.count_reread(resume.remaining.len());
        let store = Arc::clone(&self.store);
        let source = ContentSource::Parts {
            upload: upload.clone(),
            parts: resume.remaining,
        };
        let mut state = resume.state;
        tokio::task::spawn_blocking(move || {
            hash_into(&*store, &source, &mut state)?;
            Ok(state.finish())
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// A Part on its way: committed with [`Slot::committed`], or failed when dropped.
pub(crate) struct Slot {
    ahead: Arc<Md5Ahead>,
    upload: UploadId,
    part: PartId,
    chain: Chain,
    committed: bool,
}

impl Slot {
    /// The Part is durable and recorded: the chain may hash it.
    pub(crate) fn committed(mut self) {
        self.committed = true;
        lock(&self.chain).slot_committed(&self.part);
        self.ahead
            .advance(self.upload.clone(), Arc::clone(&self.chain));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.committed {
            lock(&self.chain).slot_failed(&self.part);
            // A later committed Part may have been waiting behind this one.
            self.ahead
                .advance(self.upload.clone(), Arc::clone(&self.chain));
        }
    }
}

fn lock(chain: &Chain) -> std::sync::MutexGuard<'_, Md5Chain> {
    chain.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Feeds the bytes of `source` into `state`.
fn hash_into(store: &dyn Store, source: &ContentSource, state: &mut Md5Hasher) -> io::Result<()> {
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
