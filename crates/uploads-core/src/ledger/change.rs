//! What a mutating ledger operation asks the server to make durable, and the protocol for
//! doing it:
//!
//! ```text
//! ledger.op(..) --Planned{change, response}--> server persists change.steps() in order
//!                                              --> ledger.apply(change) --> answer response
//! ```
//!
//! An operation only reads the ledger (`&self`): a refused request returns a
//! [`Rejection`](crate::rejection::Rejection) and there is nothing to undo. A [`Change`]
//! remembers what it was planned against; [`Ledger::apply`](super::Ledger::apply) refuses it
//! with an [`ApplyError`] when the records it touches changed in between, so a server that
//! let two mutations of one Upload interleave finds out instead of losing a Part.

use crate::types::{FileId, PartId, UploadId};

use super::records::{FileRecord, PartRecord, UploadRecord};

/// The outcome of a mutating operation that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "persist the change (if any), apply it, then send the response"]
pub struct Planned<T> {
    /// What to persist and then [`apply`](super::Ledger::apply); `None` for a replay (an
    /// idempotent retry) that changes nothing.
    pub change: Option<Change>,
    /// The answer to send once the change is durable and applied (200).
    pub response: T,
}

/// One durable action. The server performs a change's steps in order; the order puts each
/// commit point (an Upload's state file) where a crash in between leaves nothing that points
/// at missing bytes.
///
/// Exhaustive on purpose: a store MUST perform every step, so its `match` names each one and
/// a new step is a compile error in every store, never a runtime failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create or replace the Upload's state file with this record.
    SaveUpload(UploadRecord),
    /// Record one more Part of a pending Upload, in O(1) bytes (e.g. a line appended to a
    /// log beside the state file): reading the Upload back MUST yield the state file's Parts
    /// followed by every Part recorded this way since, in order, each once.
    AddPart {
        /// The Upload the Part belongs to.
        upload_id: UploadId,
        /// The Part.
        part: PartRecord,
    },
    /// Create the File's record.
    SaveFile(FileRecord),
    /// Remove the File's record and any bytes of its own (a `POST /files` File's data);
    /// not the Upload Parts it lists (see [`Step::RemoveParts`]).
    RemoveFile(FileId),
    /// Delete these Parts' bytes of the Upload. Parts already gone count as deleted.
    RemoveParts {
        /// The Upload holding the Parts.
        upload_id: UploadId,
        /// The Parts to delete.
        part_ids: Vec<PartId>,
    },
    /// Remove the Upload entirely: its state file and every Part's bytes. Later requests
    /// naming it get 404.
    RemoveUpload(UploadId),
}

/// The records a change was planned against, checked again when it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Guard {
    /// The Upload is at this revision (`None`: it does not exist).
    Upload { id: UploadId, revision: Option<u64> },
    /// The File exists (`true`) or does not (`false`).
    File { id: FileId, exists: bool },
}

/// Records to persist, and the bookkeeping to do once they are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "persist the steps in order, then pass the change to Ledger::apply"]
pub struct Change {
    pub(super) steps: Vec<Step>,
    pub(super) guards: Vec<Guard>,
    /// Expired Uploads whose Parts' bytes this change deletes, so the sweep stops reporting
    /// them.
    pub(super) expired_parts_removed: Vec<UploadId>,
}

impl Change {
    /// A change of these steps, planned against these guards.
    pub(super) fn new(steps: Vec<Step>, guards: Vec<Guard>) -> Self {
        Self {
            steps,
            guards,
            expired_parts_removed: Vec::new(),
        }
    }

    /// The durable actions, in the order to perform them.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// Why [`Ledger::apply`](super::Ledger::apply) refused a change; nothing was applied.
///
/// Either is a bug in the caller: the change was applied twice, or another mutation of the
/// same record was applied between planning and applying this one. The persisted state may
/// then differ from the ledger's; reloading from the store is the way back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The Upload was created, changed or removed after the change was planned.
    #[error("upload {0} changed after the change was planned")]
    UploadChanged(UploadId),
    /// The File was created or removed after the change was planned.
    #[error("file {0} changed after the change was planned")]
    FileChanged(FileId),
}
