//! The md5 chains of the PostgreSQL + object storage backend: kept in the database (see
//! [`crate::pg`]'s chain rows), extended by whichever instance records a Part, one Part at
//! a time under a lease, from the bytes in the bucket. A complete extends the chain itself
//! as far as it can, waits (bounded) for a Part another instance is hashing, and reads the
//! rest.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uploads_core::buffer::AlignedBuffer;
use uploads_core::digest::{Md5Hasher, Md5Resume};
use uploads_core::types::{PartId, UploadId};

use super::{HashAhead, MAX_WAIT, PartHashing, finish_digest};
use crate::byte_store::{ByteStore, ContentSource};
use crate::clock::Clock;
use crate::pg::{ChainClaim, Now, PgRecords, decision_time};
use crate::stats::ServerStats;

/// How often a complete looks again at a chain another instance holds.
const POLL: Duration = Duration::from_millis(20);

/// Chains in the database, shared by every instance.
pub(crate) struct InDatabase {
    records: Arc<PgRecords>,
    store: Arc<dyn ByteStore>,
    stats: Arc<ServerStats>,
    /// The clock every instance is given (tests that move time); `None`: the database's.
    clock: Option<Arc<dyn Clock>>,
}

impl InDatabase {
    pub(crate) fn new(
        records: Arc<PgRecords>,
        store: Arc<dyn ByteStore>,
        stats: Arc<ServerStats>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        Self {
            records,
            store,
            stats,
            clock,
        }
    }

    fn now(&self) -> Now {
        decision_time(self.clock.as_deref())
    }

    /// Extends `upload`'s chain while a Part is ready and no other instance holds it. A
    /// failure (logged) stops it: the chain is only ever a shortcut.
    async fn advance(&self, upload: &UploadId) {
        loop {
            let claim = match self.records.claim_next_to_hash(upload, self.now()).await {
                Ok(Some(claim)) => claim,
                Ok(None) => return,
                Err(rejection) => {
                    tracing::warn!(%upload, error = %rejection, "claiming the md5 chain failed; complete will read the rest");
                    return;
                }
            };
            if !self.hash_claimed(&claim).await {
                return;
            }
        }
    }

    /// Hashes the claimed Parts in one pass and saves the state after each; whether the
    /// whole claim was hashed and saved (the chain moved on past it).
    async fn hash_claimed(&self, claim: &ChainClaim) -> bool {
        let store = Arc::clone(&self.store);
        let source = ContentSource::Parts {
            upload: claim.upload.clone(),
            parts: claim.parts.iter().map(|(part, _)| part.clone()).collect(),
        };
        let lengths: Vec<u64> = claim.parts.iter().map(|(_, bytes)| *bytes).collect();
        let state = claim.state.clone();
        let (states, failure) =
            tokio::task::spawn_blocking(move || hash_each(&*store, &source, &lengths, state))
                .await
                .unwrap_or_else(|error| (Vec::new(), Some(io::Error::other(error))));
        let upload = &claim.upload;
        if let Some(error) = &failure {
            tracing::warn!(%upload, %error, hashed = states.len(), "hashing ahead stopped; complete will read the rest");
        }
        // What was hashed is saved, and the chain released, even when the read failed.
        match self.records.save_hashed(claim, &states).await {
            Ok(saved) => saved && failure.is_none(),
            Err(rejection) => {
                tracing::warn!(%upload, error = %rejection, "saving the md5 chain failed; its lease lapses");
                false
            }
        }
    }
}

/// Hashes the Parts of `source`, of `lengths` bytes each, from `state`: the state after each
/// Part, up to the first that could not be read whole (and why).
fn hash_each(
    store: &dyn ByteStore,
    source: &ContentSource,
    lengths: &[u64],
    mut state: Md5Hasher,
) -> (Vec<Md5Hasher>, Option<io::Error>) {
    let mut states = Vec::with_capacity(lengths.len());
    let mut reader = match store.open(source) {
        Ok(reader) => reader,
        Err(error) => return (states, Some(error)),
    };
    let mut buffer = AlignedBuffer::zeroed(1 << 20);
    for &length in lengths {
        let mut left = length;
        while left > 0 {
            let want = usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
            match reader.read(&mut buffer[..want]) {
                Ok(0) => {
                    let short = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a Part's bytes ended before its recorded length",
                    );
                    return (states, Some(short));
                }
                Ok(read) => {
                    state.update(&buffer[..read]);
                    left -= read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (states, Some(error)),
            }
        }
        states.push(state.clone());
    }
    (states, None)
}

impl HashAhead for InDatabase {
    fn started(
        self: Arc<Self>,
        upload: &UploadId,
        _part: &PartId,
        _position: Option<u32>,
    ) -> PartHashing {
        // The position is recorded with the Part's row; a failed Part has no row.
        let upload = upload.clone();
        PartHashing::new(move |committed| {
            if !committed {
                return;
            }
            // A Part recorded while the runtime shuts down has no chain worth extending.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { self.advance(&upload).await });
            }
        })
    }

    fn digest<'a>(
        &'a self,
        upload: &'a UploadId,
        listed: Vec<PartId>,
    ) -> BoxFuture<'a, io::Result<[u8; 16]>> {
        Box::pin(async move {
            // Extend the chain here as far as it goes; a Part another instance is hashing
            // is waited for (it is done sooner than read again), then the chain may go on.
            let waited = tokio::time::timeout(MAX_WAIT, async {
                loop {
                    self.advance(upload).await;
                    match self.records.chain_held(upload, self.now()).await {
                        Ok(true) => tokio::time::sleep(POLL).await,
                        Ok(false) | Err(_) => return,
                    }
                }
            })
            .await;
            if waited.is_err() {
                tracing::warn!(%upload, "hashing ahead fell behind; reading the rest");
            }
            let resume = match self.records.resume_chain(upload, &listed).await {
                Ok(resume) => resume,
                Err(rejection) => {
                    tracing::warn!(%upload, error = %rejection, "reading the md5 chain failed; reading every Part");
                    Md5Resume::from_saved(&listed, |_, _| None)
                }
            };
            finish_digest(&self.store, &self.stats, upload, resume).await
        })
    }

    fn forget(&self, _upload: &UploadId) {
        // The chain's rows go with the Upload's; a chain of an Upload that is no longer
        // pending is never claimed again.
    }
}
