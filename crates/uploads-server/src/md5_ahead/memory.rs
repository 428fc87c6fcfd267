//! The md5 chains of the directory backend: in memory, where every Part of an Upload arrives.
//! The ordering rules are the core's [`Md5Chain`]; this module reads the bytes, on blocking
//! threads, one Part at a time.
//!
//! The chains live in memory only: after a restart, a complete reads every listed Part.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use uploads_core::digest::Md5Chain;
use uploads_core::types::{PartId, UploadId};

use super::{HashAhead, MAX_WAIT, PartHashing, finish_digest, hash_into};
use crate::byte_store::{ByteStore, ContentSource};
use crate::stats::ServerStats;

type Chain = Arc<Mutex<Md5Chain>>;

/// Every pending Upload's chain.
pub(crate) struct InMemory {
    chains: Mutex<HashMap<UploadId, Chain>>,
    /// Woken whenever a chain may have stopped being busy (a Part hashed, hashing given up,
    /// a chain forgotten): what a waiting complete re-checks on.
    changed: tokio::sync::Notify,
    store: Arc<dyn ByteStore>,
    stats: Arc<ServerStats>,
}

impl InMemory {
    pub(crate) fn new(store: Arc<dyn ByteStore>, stats: Arc<ServerStats>) -> Self {
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
}

impl HashAhead for InMemory {
    fn started(
        self: Arc<Self>,
        upload: &UploadId,
        part: &PartId,
        position: Option<u32>,
    ) -> PartHashing {
        let chain = self.chain(upload);
        lock(&chain).slot_started_at(part.clone(), position);
        let (upload, part) = (upload.clone(), part.clone());
        PartHashing::new(move |committed| {
            if committed {
                lock(&chain).slot_committed(&part);
            } else {
                lock(&chain).slot_failed(&part);
            }
            // A failed Part may have held up a later committed one.
            self.advance(upload, chain);
        })
    }

    fn digest<'a>(
        &'a self,
        upload: &'a UploadId,
        listed: Vec<PartId>,
    ) -> BoxFuture<'a, io::Result<[u8; 16]>> {
        Box::pin(async move {
            let chain = self.chains().get(upload).cloned();
            let resume = match &chain {
                Some(chain) => {
                    // Parts being hashed, or ready to be, are done sooner than read again.
                    // The chain stays registered meanwhile: its hashing stops once it is
                    // forgotten. A chain forgotten meanwhile (a cancel or complete won) is
                    // never finished: stop waiting for it.
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
            finish_digest(&self.store, &self.stats, upload, resume).await
        })
    }

    fn forget(&self, upload: &UploadId) {
        self.chains().remove(upload);
        self.changed.notify_waiters();
    }
}

fn lock(chain: &Chain) -> std::sync::MutexGuard<'_, Md5Chain> {
    chain.lock().unwrap_or_else(PoisonError::into_inner)
}
