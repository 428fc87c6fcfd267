//! Startup: reading every record back and removing what a crash left behind.

use std::collections::HashSet;
use std::io;

use uploads_core::ledger::{FileRecord, PartRecord, RecordState, UploadRecord};
use uploads_core::types::PartId;

use crate::store::Store;

/// Reads every record back at startup and removes Part bytes that no record needs: Parts
/// stored by a request that died before its record was saved, and Parts a crash kept from
/// being removed after a complete or cancel.
pub(super) fn recover_records(
    store: &dyn Store,
) -> io::Result<(Vec<UploadRecord>, Vec<FileRecord>)> {
    let state = store.load()?;
    // One unreadable record must not keep everything else from being served.
    for unreadable in &state.unreadable_uploads {
        let moved_to = store.quarantine_upload(&unreadable.id)?;
        tracing::error!(upload = %unreadable.id, path = %unreadable.path.display(), reason = %unreadable.reason, %moved_to, "an unreadable Upload record was quarantined");
    }
    for unreadable in &state.unreadable_files {
        let moved_to = store.quarantine_file(&unreadable.id)?;
        tracing::error!(file = %unreadable.id, path = %unreadable.path.display(), reason = %unreadable.reason, %moved_to, "an unreadable File record was quarantined");
    }
    let mut uploads = Vec::with_capacity(state.uploads.len());
    for stored in state.uploads {
        let mut record: UploadRecord = match serde_json::from_slice(&stored.state) {
            Ok(record) => record,
            Err(error) => {
                let moved_to = store.quarantine_upload(&stored.id)?;
                tracing::error!(upload = %stored.id, %error, %moved_to, "an unreadable Upload state was quarantined");
                continue;
            }
        };
        // The Parts added since the state file was saved.
        for line in stored
            .part_log
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
        {
            match serde_json::from_slice::<PartRecord>(line) {
                Ok(part) if record.part(&part.id).is_none() => record.parts.push(part),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, upload = %record.id, "skipping an unreadable Part record");
                }
            }
        }
        let needed: HashSet<&PartId> = match &record.state {
            RecordState::Pending => record.parts.iter().map(|part| &part.id).collect(),
            RecordState::Completed(completion) => completion.part_ids.iter().collect(),
            RecordState::Cancelled { .. } => HashSet::new(),
        };
        let garbage: Vec<PartId> = stored
            .parts
            .into_iter()
            .filter(|id| !needed.contains(id))
            .collect();
        if !garbage.is_empty()
            && let Err(error) = store.remove_parts(&record.id, &garbage)
        {
            tracing::warn!(%error, upload = %record.id, "could not remove Parts no record needs");
        }
        uploads.push(record);
    }
    let mut files = Vec::with_capacity(state.files.len());
    for stored in state.files {
        match serde_json::from_slice::<FileRecord>(&stored.record) {
            Ok(record) => files.push(record),
            Err(error) => {
                let moved_to = store.quarantine_file(&stored.id)?;
                tracing::error!(file = %stored.id, %error, %moved_to, "an unreadable File record was quarantined");
            }
        }
    }
    Ok((uploads, files))
}
