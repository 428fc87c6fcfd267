//! What the server may delete from disk, decided by the ledger.
//!
//! [`Ledger::sweep`] returns one [`Change`] of these steps (a server runs it every minute or
//! so, and at startup; it is a change like any other: persist, then apply):
//!
//! * [`Step::RemoveFile`] then [`Step::RemoveParts`] for each File that has expired
//!   (`expires_at <= now`): its record and its bytes. (A deleted File's are removed by
//!   [`Ledger::delete_file`] itself.)
//! * [`Step::RemoveFile`] for each File record a crashed complete left behind (see
//!   [`Ledger::load`]); only the record: its Parts belong to a pending Upload.
//! * [`Step::SaveUpload`] with [`UploadRecord::parts_removed`] set, then
//!   [`Step::RemoveParts`], for each expired Upload: the bytes of all its Parts, once. Its
//!   record stays, so requests naming it still get 400 `expired`, not 404, and it stays
//!   expired even if a later `now` is earlier than its `expires_at` (a clock stepped back).
//! * [`Step::RemoveUpload`] for each Upload that is finished and past its retention: it
//!   is cancelled or expired, or completed with a File that is gone, and `now` is at least
//!   `expires_at + upload_ttl_secs`. Until then a retried cancel or complete is still
//!   answered as before; after, the Upload is unknown (404).
//!
//! Cancelled Uploads' Parts and completed Uploads' unlisted Parts are removed by
//! [`Ledger::cancel_upload`] and [`Ledger::finish_complete`]. Nothing a live File lists, and
//! nothing of a pending Upload that has not expired, is ever reported.

use super::change::Guard;
use super::files::removal_steps;
use super::{Change, Ledger, RecordState, Step, UploadRecord};

impl Ledger {
    /// Everything that may be removed at `now` (see the module docs), as one change, or
    /// `None` when there is nothing.
    pub fn sweep(&self, now: u64) -> Option<Change> {
        let changes = self.sweep_records(now, true);
        if changes.is_empty() {
            return None;
        }
        let mut merged = Change::new(Vec::new(), Vec::new());
        for change in changes {
            merged.steps.extend(change.steps);
            merged.guards.extend(change.guards);
            merged
                .expired_parts_removed
                .extend(change.expired_parts_removed);
        }
        Some(merged)
    }

    /// The same removals as [`Ledger::sweep`], one change per record (File or Upload), so a
    /// server can persist and apply them in small batches, never holding the ledger across
    /// the disk work, and log and skip one that fails without blocking the others. An Upload
    /// whose File is removed by this sweep is left for the next one (its record goes only
    /// after its File's removal is applied).
    pub fn sweep_each(&self, now: u64) -> Vec<Change> {
        self.sweep_records(now, false)
    }

    fn sweep_records(&self, now: u64, file_goes_first: bool) -> Vec<Change> {
        let mut changes = Vec::new();
        // Files first: an Upload whose File expires now is forgotten after its File.
        for record in self.files.values().filter(|record| record.is_expired(now)) {
            changes.push(Change::new(
                removal_steps(record),
                vec![Guard::File {
                    id: record.id().clone(),
                    exists: true,
                }],
            ));
        }
        for id in &self.orphan_files {
            changes.push(Change::new(vec![Step::RemoveFile(id.clone())], Vec::new()));
        }
        for entry in self.uploads.values() {
            // Only a record with all its Parts can be swept (its Parts' bytes go by id).
            let Ok(record) = entry.whole_record() else {
                continue;
            };
            let mut expired_parts_removed = Vec::new();
            let steps = if self.is_forgotten(record, now, file_goes_first) {
                vec![Step::RemoveUpload(record.id.clone())]
            } else if record.is_expired(now)
                && !entry.expired_parts_removed
                && !record.parts.is_empty()
            {
                expired_parts_removed.push(record.id.clone());
                let remove = Step::RemoveParts {
                    upload_id: record.id.clone(),
                    part_ids: record.part_ids(),
                };
                if record.parts_removed {
                    // Decided before a restart; the bytes may not all be gone yet.
                    vec![remove]
                } else {
                    // The record says so first: whatever a clock reads later, an Upload
                    // whose bytes are going is never completed.
                    let mut marked = record.clone();
                    marked.parts_removed = true;
                    vec![Step::SaveUpload(marked), remove]
                }
            } else {
                continue;
            };
            let mut change = Change::new(steps, vec![entry.guard()]);
            change.expired_parts_removed = expired_parts_removed;
            changes.push(change);
        }
        changes
    }

    /// Whether an Upload's record may go: finished, and retained long enough. With
    /// `file_goes_first`, a completed Upload whose File expires now counts (the File's
    /// removal comes first in the same change).
    fn is_forgotten(&self, record: &UploadRecord, now: u64, file_goes_first: bool) -> bool {
        let retained_until = record
            .expires_at
            .saturating_add(self.limits.upload_ttl_secs);
        if now < retained_until {
            return false;
        }
        match &record.state {
            // Past `expires_at`, a pending Upload is expired.
            RecordState::Pending | RecordState::Cancelled { .. } => true,
            RecordState::Completed(completion) => self
                .files
                .get(&completion.file.id)
                .is_none_or(|file| file_goes_first && file.is_expired(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::super::scenario::{START, Scenario, owner_a};
    use super::*;
    use crate::types::{ExpiresAfter, FileId, PartId, UploadId};

    const TTL: u64 = 3600;

    fn remove_parts(upload: &UploadId, parts: &[&PartId]) -> Step {
        Step::RemoveParts {
            upload_id: upload.clone(),
            part_ids: parts.iter().map(|&part| part.clone()).collect(),
        }
    }

    /// What sweeping an expired Upload's Parts persists: its record marked first, then the
    /// bytes.
    fn expired_parts(scenario: &Scenario, upload: &UploadId, parts: &[&PartId]) -> Vec<Step> {
        let mut marked = scenario.record(upload).clone();
        marked.parts_removed = true;
        vec![Step::SaveUpload(marked), remove_parts(upload, parts)]
    }

    #[test]
    fn nothing_to_sweep_is_none() {
        let mut scenario = Scenario::new();
        assert_eq!(scenario.ledger.sweep(START), None);
        let upload = scenario.upload(&owner_a(), 1);
        scenario.part(&owner_a(), &upload, b"x");
        assert_eq!(
            scenario.ledger.sweep(START + TTL - 1),
            None,
            "pending, not expired"
        );
    }

    #[test]
    fn an_expired_uploads_parts_go_once_and_its_record_after_the_retention() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 2);
        let a = scenario.part(&owner_a(), &upload, b"a");
        let b = scenario.part(&owner_a(), &upload, b"b");
        scenario.now = START + TTL;
        let expected = expired_parts(&scenario, &upload, &[&a, &b]);
        assert_eq!(scenario.sweep(), expected);
        assert!(scenario.disk_parts.is_empty());
        assert!(scenario.saved_uploads[&upload].parts_removed, "persisted");
        assert_eq!(scenario.sweep(), vec![], "reported once");
        // The record stays: the Upload is still answered as expired.
        let rejection = scenario.add_part(&owner_a(), &upload, b"c").unwrap_err();
        assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        scenario.now = START + 2 * TTL - 1;
        assert_eq!(scenario.sweep(), vec![]);
        scenario.now = START + 2 * TTL;
        assert_eq!(scenario.sweep(), vec![Step::RemoveUpload(upload.clone())]);
        assert!(scenario.saved_uploads.is_empty());
        let rejection = scenario.add_part(&owner_a(), &upload, b"c").unwrap_err();
        assert_eq!(
            rejection,
            crate::rejection::Rejection::no_such_upload(&upload)
        );
    }

    #[test]
    fn sweep_each_is_the_sweep_one_record_at_a_time() {
        let mut scenario = Scenario::new();
        let first = scenario.upload(&owner_a(), 1);
        let a = scenario.part(&owner_a(), &first, b"a");
        let second = scenario.upload(&owner_a(), 1);
        let b = scenario.part(&owner_a(), &second, b"b");
        let now = START + TTL;
        let each = scenario.ledger.sweep_each(now);
        assert_eq!(each.len(), 2);
        let steps: Vec<Step> = each
            .iter()
            .flat_map(|change| change.steps().to_vec())
            .collect();
        let mut expected = expired_parts(&scenario, &first, &[&a]);
        expected.extend(expired_parts(&scenario, &second, &[&b]));
        assert_eq!(steps, expected);
        assert_eq!(scenario.ledger.sweep(now).unwrap().steps(), steps);
        // Each applies on its own; the second is not reported again.
        let mut each = each.into_iter();
        scenario.ledger.apply(each.next().unwrap()).unwrap();
        assert_eq!(scenario.ledger.sweep_each(now).len(), 1);
    }

    #[test]
    fn after_a_restart_expired_parts_are_reported_again() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        let a = scenario.part(&owner_a(), &upload, b"a");
        scenario.now = START + TTL;
        assert_eq!(scenario.sweep().len(), 2);
        scenario.restart();
        // Removing bytes already gone counts as done, so reporting again is safe; the
        // record already says so.
        assert_eq!(scenario.sweep(), vec![remove_parts(&upload, &[&a])]);
        assert_eq!(scenario.sweep(), vec![], "once per run");
    }

    #[test]
    fn a_clock_stepped_back_never_revives_an_upload_whose_parts_were_removed() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        let a = scenario.part(&owner_a(), &upload, b"a");
        // A clock an hour and more ahead (jumped, or another instance's) sweeps it ...
        scenario.now = START + TTL + 100;
        assert_eq!(scenario.sweep().len(), 2);
        assert!(scenario.disk_parts.is_empty());
        // ... then reads the right time again: the Upload stays expired, before and after a
        // restart, and a complete is refused rather than answered with a File of no bytes.
        for restarted in [false, true] {
            if restarted {
                scenario.restart();
            }
            scenario.now = START + 10;
            let before = scenario.records();
            let rejection = scenario
                .complete_with(&owner_a(), &upload, &[&a])
                .unwrap_err();
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                rejection.body.error.message,
                "Cannot complete an Upload that is already expired."
            );
            let rejection = scenario.add_part(&owner_a(), &upload, b"b").unwrap_err();
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                scenario.record(&upload).to_upload(scenario.now).status,
                crate::types::UploadStatus::Expired
            );
            assert_eq!(scenario.records(), before);
        }
    }

    #[test]
    fn a_cancelled_upload_is_answered_until_the_retention_ends() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        scenario.part(&owner_a(), &upload, b"a");
        scenario.cancel(&owner_a(), &upload).unwrap();
        scenario.now = START + 2 * TTL - 1;
        assert_eq!(scenario.sweep(), vec![], "its bytes went with the cancel");
        assert!(scenario.cancel(&owner_a(), &upload).is_ok());
        scenario.now = START + 2 * TTL;
        assert_eq!(scenario.sweep(), vec![Step::RemoveUpload(upload.clone())]);
        assert_eq!(
            scenario.cancel(&owner_a(), &upload).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_completed_upload_stays_while_its_file_lives() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        let a = scenario.part(&owner_a(), &upload, b"a");
        let file = scenario
            .complete_with(&owner_a(), &upload, &[&a])
            .unwrap()
            .file
            .unwrap();
        scenario.now = START + 100 * TTL;
        assert_eq!(scenario.sweep(), vec![], "the File lists the Part");
        assert_eq!(scenario.content(&owner_a(), &file.id).unwrap(), b"a");
        scenario.delete_file(&owner_a(), &file.id).unwrap();
        assert_eq!(scenario.sweep(), vec![Step::RemoveUpload(upload)]);
        assert!(scenario.saved_uploads.is_empty() && scenario.disk_parts.is_empty());
    }

    #[test]
    fn an_expired_file_goes_with_its_parts_then_its_upload() {
        let mut scenario = Scenario::new();
        let body = serde_json::json!({"filename": "a", "purpose": "batch", "bytes": 1,
            "mime_type": "text/jsonl", "expires_after": {"anchor": "created_at", "seconds": 7200}});
        let upload = scenario.create(&owner_a(), &body).unwrap().id;
        let a = scenario.part(&owner_a(), &upload, b"a");
        let file = scenario
            .complete_with(&owner_a(), &upload, &[&a])
            .unwrap()
            .file
            .unwrap();
        let direct = scenario
            .create_file(
                &owner_a(),
                "batch",
                b"d",
                Some(ExpiresAfter::after_creation(7200)),
            )
            .unwrap();
        scenario.now = START + 7200 - 1;
        assert_eq!(scenario.sweep(), vec![]);
        scenario.now = START + 7200;
        assert_eq!(
            scenario.sweep(),
            vec![
                Step::RemoveFile(FileId::new("file-1")),
                remove_parts(&upload, &[&a]),
                Step::RemoveFile(direct.id.clone()),
                // Past its retention, and its File went just before.
                Step::RemoveUpload(upload),
            ]
        );
        assert!(scenario.saved_files.is_empty() && scenario.disk_files.is_empty());
        assert!(scenario.saved_uploads.is_empty() && scenario.disk_parts.is_empty());
        assert_eq!(file.id.as_str(), "file-1");
    }

    #[test]
    fn a_sweep_planned_before_a_complete_is_no_longer_current() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        let a = scenario.part(&owner_a(), &upload, b"a");
        // Planned by a sweep whose clock read past the expiry ...
        let sweep = scenario.ledger.sweep(START + TTL).unwrap();
        assert!(scenario.ledger.is_current(&sweep));
        // ... while a complete, at the right time, won the record first.
        scenario.complete_with(&owner_a(), &upload, &[&a]).unwrap();
        assert!(
            !scenario.ledger.is_current(&sweep),
            "persisting it would write the stale pending record over the completed one"
        );
    }

    #[test]
    fn a_sweep_applies_once_it_is_persisted_and_not_twice() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        scenario.part(&owner_a(), &upload, b"a");
        scenario.now = START + 2 * TTL;
        let sweep = scenario.ledger.sweep(scenario.now).unwrap();
        assert_eq!(sweep.steps(), [Step::RemoveUpload(upload.clone())]);
        scenario.ledger.apply(sweep.clone()).unwrap();
        assert_eq!(scenario.ledger.sweep(scenario.now), None);
        assert_eq!(
            scenario.ledger.apply(sweep),
            Err(super::super::ApplyError::UploadChanged(upload))
        );
    }
}
