//! The records seam: the ledger's state, whichever backend keeps it. The handlers ask the
//! [`Records`] to run a read of the ledger or a mutation over the records of a [`Scope`];
//! every decision is the ledger's ([`uploads_core::ledger`]), and each implementation keeps
//! the ledger's persistence contract its own way:
//!
//! * [`LocalRecords`] (the directory backend, one process): the ledger in memory, a lock per
//!   record from planning to applying, the steps made durable in the directory's journal
//!   before they are applied; recovery at startup; the sweep.
//! * [`PostgresRecords`] (several instances): a ledger loaded per transaction with the rows
//!   of the scope, locked, planned over and written back in one transaction.
//!
//! The bytes are the other seam ([`crate::byte_store::ByteStore`]).

mod buckets;
mod local;
mod locks;
mod postgres;
mod recovery;

use std::future::Future;
use std::sync::Arc;

use uploads_core::auth::KeyDigest;
use uploads_core::ledger::{Ledger, Owner, Planned, RandomIds};
use uploads_core::rate::{RateDecision, RateLimit};
use uploads_core::rejection::Rejection;
use uploads_core::types::{FileId, ListFilesQuery, PartId, UploadId};

pub(crate) use local::LocalRecords;
pub(crate) use postgres::PostgresRecords;

use crate::byte_store::ByteStore;
use crate::md5_ahead::HashAhead;
use crate::metrics::ScrapedGauge;
use crate::readers::ReadGuard;
use crate::stats::ServerStats;

/// A request refused on its way in, or a failure answered as 500 (or 503).
pub(crate) type Answer<T> = Result<T, Rejection>;

/// The ids the ledger mints: random, from the server's entropy.
pub(crate) type Ids = RandomIds<Box<dyn FnMut(&mut [u8]) + Send>>;

/// The bytes a request is about to write, named before they are (see [`Records::intend`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewBytes<'a> {
    /// A Part's.
    Part(&'a UploadId, &'a PartId),
    /// A File's made by `POST /files`.
    File(&'a FileId),
}

/// Where the ledger's records live, and how a decision over them is made durable.
pub(crate) trait Records: Send + Sync + 'static {
    /// Runs a read of the ledger over the records of `scope`, at the records' time.
    fn read<T, F>(&self, scope: &Scope, read: F) -> impl Future<Output = Answer<T>> + Send
    where
        T: Send,
        F: FnOnce(&Ledger, u64) -> Answer<T> + Send;

    /// Plans a mutation over the records of `scope` (minting ids from `ids`), makes it
    /// durable and applies it, or changes nothing. The caller runs it on a task of its own,
    /// so that a request dropped half-way cannot stop it between persisting and applying.
    fn mutate<T, F>(
        &self,
        scope: Scope,
        ids: Ids,
        plan: F,
    ) -> impl Future<Output = Result<T, MutationError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Ledger, u64, &mut Ids) -> Answer<Planned<T>> + Send + 'static;

    /// Before `bytes` are written: records the intent where bytes could outlive a request
    /// that dies before recording them (shared storage, which no restart walks), so that
    /// they are collected.
    fn intend(&self, bytes: NewBytes<'_>) -> impl Future<Output = Answer<()>> + Send;

    /// Removes what the ledger says may go (expired and cancelled data).
    fn sweep(&self) -> impl Future<Output = Answer<Swept>> + Send;

    /// Waits until this instance's mutation of `record` (an Upload or File id) under way,
    /// if any, is applied: what a complete that lost a race waits for before asking again.
    fn settled(&self, record: &str) -> impl Future<Output = ()> + Send;

    /// What keeps the records from being used now, as the end of a sentence (`" the
    /// database is unreachable"`), or `None`.
    fn health(&self) -> impl Future<Output = Option<String>> + Send;

    /// A download of `upload`'s Parts starts: the guard keeps them (until it is dropped)
    /// where removals would otherwise cut the download short; `None` where removals wait
    /// out a grace period instead.
    fn enter_download(&self, upload: &UploadId) -> Option<ReadGuard>;

    /// Takes a token from the request-rate bucket of `key` (an API key's digest), at the
    /// records' time: one bucket per key however many instances share the records.
    fn take_request(
        &self,
        key: &KeyDigest,
        limit: RateLimit,
    ) -> impl Future<Output = Answer<RateDecision>> + Send;

    /// What an operator graphs about these records, read when the metrics are scraped
    /// (the data directory's free space; the database pool's connections).
    fn gauges(&self) -> Vec<ScrapedGauge>;

    /// The md5 chains of pending Uploads, kept where these records are.
    fn hash_ahead(&self, bytes: Arc<dyn ByteStore>, stats: Arc<ServerStats>) -> Arc<dyn HashAhead>;
}

/// What one sweep did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Uploads whose Parts went, whose md5 chains are of no more use (none where the chains
    /// are rows of the Uploads and went with them).
    pub uploads: Vec<UploadId>,
    /// Uploads that had expired pending, whose Parts this sweep removed.
    pub expired: usize,
}

/// Which rows a request needs: what to lock (for a mutation) or read.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Nothing existing (a create).
    Nothing,
    /// A create by this owner while quotas are configured: the owner's usage (the ledger's
    /// own totals, or counted by the store, see [`Ledger::set_usage`]); a mutation keeps
    /// the owner's other creates out until it is durable, on every instance.
    Quota(Owner),
    /// One Upload and its Parts.
    Upload(UploadId),
    /// One Upload to add a Part to: its record with its Parts' count and total (O(1) rows,
    /// however many Parts it has), and the named Part's row (a slot's: an id used twice).
    NewPart {
        /// The Upload.
        upload: UploadId,
        /// The slot's Part, once it has one.
        part: Option<PartId>,
        /// The Part's 0-based position in the file, when its request named one: kept on its
        /// row for the md5 chain.
        position: Option<u32>,
    },
    /// One File.
    File(FileId),
    /// A page of an owner's Files (a list).
    List {
        /// Whose.
        owner: String,
        /// The page asked for.
        query: ListFilesQuery,
    },
}

impl Scope {
    /// The record a mutation of this scope changes (its lock's key); for a create under a
    /// quota its owner's usage (the owner's creates take turns); `None` for another create.
    fn record(&self) -> Option<String> {
        match self {
            Self::Upload(id) | Self::NewPart { upload: id, .. } => Some(id.to_string()),
            Self::File(id) => Some(id.to_string()),
            // Not an id (ids have no space): an owner's creates take turns.
            Self::Quota(owner) => Some(format!("quota of {owner}")),
            Self::Nothing | Self::List { .. } => None,
        }
    }

    /// The position a new Part's row records, for the md5 chain.
    pub(crate) fn position_of(&self, upload_id: &UploadId, part_id: &PartId) -> Option<i32> {
        match self {
            Self::NewPart {
                upload,
                part: Some(part),
                position: Some(position),
            } if upload == upload_id && part == part_id => i32::try_from(*position).ok(),
            _ => None,
        }
    }
}

/// Why a mutation changed nothing.
#[derive(Debug)]
pub(crate) enum MutationError {
    /// The ledger refused it: nothing was persisted.
    Refused(Rejection),
    /// Persisting or applying it failed (a 500, or a 503 for a store that did not answer):
    /// the client retries, it is never told that a write worked.
    Failed(Rejection),
}

impl From<MutationError> for Rejection {
    fn from(error: MutationError) -> Self {
        match error {
            MutationError::Refused(rejection) | MutationError::Failed(rejection) => rejection,
        }
    }
}
