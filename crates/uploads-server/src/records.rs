//! What the handlers ask of the records, whichever backend keeps them: the [`Scope`] of
//! rows a request reads or locks, and the one outcome of a mutation that changed nothing.

use uploads_core::rejection::Rejection;
use uploads_core::types::{FileId, ListFilesQuery, PartId, UploadId};

/// Which rows a request needs: what to lock (for a mutation) or read.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Nothing existing (a create).
    Nothing,
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
