//! Startup: reading every record back and removing what a crash left behind.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use uploads_core::ledger::{FileRecord, PartRecord, UploadRecord};
use uploads_core::types::{FileId, PartId, UploadId};

use crate::byte_store::ByteStore as _;
use crate::store::{DirStore, StoredFile, StoredUpload, in_parallel};

/// Reads every record back at startup and removes Part bytes that no record needs: Parts
/// stored by a request that died before its record was saved, and Parts a crash kept from
/// being removed after a complete or cancel. Records are parsed on several threads.
pub(super) fn recover_records(
    store: &DirStore,
) -> io::Result<(Vec<UploadRecord>, Vec<FileRecord>)> {
    let state = store.load()?;
    // Uploads whose record is set aside: the Files completed from them are set aside too
    // (see below).
    let mut set_aside_uploads: HashSet<UploadId> = HashSet::new();
    // One unreadable record must not keep everything else from being served.
    for unreadable in &state.unreadable_uploads {
        set_aside_uploads.insert(unreadable.id.clone());
        set_aside(
            &format!("Upload {}", unreadable.id),
            &unreadable.path,
            &unreadable.reason,
            store.quarantine_upload(&unreadable.id),
        );
    }
    for unreadable in &state.unreadable_files {
        set_aside(
            &format!("File {}", unreadable.id),
            &unreadable.path,
            &unreadable.reason,
            store.quarantine_file(&unreadable.id),
        );
    }
    let mut uploads = Vec::with_capacity(state.uploads.len());
    for parsed in in_parallel(state.uploads, parse_upload) {
        let (record, garbage) = match parsed {
            Ok(parsed) => parsed,
            Err((id, path, error)) => {
                let reason = error.to_string();
                let moved = store.quarantine_upload(&id);
                set_aside(&format!("Upload {id}"), &path, &reason, moved);
                set_aside_uploads.insert(id);
                continue;
            }
        };
        if !garbage.is_empty()
            && let Err(error) = store.remove_parts(&record.id, &garbage)
        {
            tracing::warn!(%error, upload = %record.id, "could not remove Parts no record needs");
        }
        uploads.push(record);
    }
    let mut files = Vec::with_capacity(state.files.len());
    for parsed in in_parallel(state.files, parse_file) {
        match parsed {
            // Without its Upload's record the ledger would take it for the trace of a
            // crashed complete and remove it: an acknowledged File is set aside for an
            // operator instead, never deleted.
            Ok(record)
                if record
                    .upload_id
                    .as_ref()
                    .is_some_and(|upload| set_aside_uploads.contains(upload)) =>
            {
                let id = record.id().clone();
                let moved = store.quarantine_file(&id);
                set_aside(
                    &format!("File {id}"),
                    Path::new(&format!("files/{id}.json")),
                    "the record of the Upload it was completed from could not be read",
                    moved,
                );
            }
            Ok(record) => files.push(record),
            Err((id, path, error)) => {
                let reason = error.to_string();
                let moved = store.quarantine_file(&id);
                set_aside(&format!("File {id}"), &path, &reason, moved);
            }
        }
    }
    Ok((uploads, files))
}

/// Logs what became of an unreadable `record` read from `path`: quarantined, or, when even
/// that failed, left where it is and not loaded.
fn set_aside(record: &str, path: &Path, reason: &str, moved: io::Result<String>) {
    let path = path.display();
    match moved {
        Ok(moved_to) => {
            tracing::error!(record = %record, path = %path, reason = %reason, moved_to = %moved_to, "an unreadable record was quarantined");
        }
        Err(error) => {
            tracing::error!(record = %record, path = %path, reason = %reason, %error, "an unreadable record could not be quarantined: it is left where it is, and not loaded");
        }
    }
}

/// An Upload's record with the Parts added since its state was saved, and the Parts on disk
/// that it does not need.
fn parse_upload(
    stored: StoredUpload,
) -> Result<(UploadRecord, Vec<PartId>), (UploadId, PathBuf, serde_json::Error)> {
    let mut record: UploadRecord = match serde_json::from_slice(&stored.state) {
        Ok(record) => record,
        Err(error) => return Err((stored.id, stored.path, error)),
    };
    let logged = stored
        .part_log
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| match serde_json::from_slice::<PartRecord>(line) {
            Ok(part) => Some(part),
            Err(error) => {
                tracing::error!(%error, upload = %record.id, "skipping an unreadable Part record");
                None
            }
        })
        .collect::<Vec<_>>();
    // The Parts added since the state file was saved.
    record.merge_part_log(logged);
    let needed = record.parts_needed();
    let garbage: Vec<PartId> = stored
        .parts
        .into_iter()
        .filter(|id| !needed.contains(id))
        .collect();
    Ok((record, garbage))
}

/// A File's record.
fn parse_file(stored: StoredFile) -> Result<FileRecord, (FileId, PathBuf, serde_json::Error)> {
    serde_json::from_slice(&stored.record).map_err(|error| (stored.id, stored.path, error))
}
