//! The server ledger: the service's state machine. It decides every status code and error
//! body of the Uploads and Files endpoints; a server authenticates, stores bytes durably and
//! writes the ledger's answers.
//!
//! ```text
//!                create
//!                  │
//!                  ▼        add part (Parts beyond `bytes` are fine: only listed ones count)
//!    cancel   ┌─────────┐ ◀──┐
//!  ┌───────── │ pending │ ───┘
//!  │          └─────────┘
//!  │            │     │ complete: listed Parts add up to `bytes`, md5 matches
//!  │            │     ▼
//!  │  now >=    │   completed ──▶ File (processed) ──▶ gone (deleted, or its expires_at)
//!  │  expires_at│
//!  ▼            ▼
//! cancelled   expired          (terminal: parts, complete and cancel answer 400, never 409;
//!                               a retried cancel or complete answers 200 with the same Upload)
//! ```
//!
//! `expired` is computed (pending and `now >= expires_at`), never stored.
//!
//! Pure transitions: the time (`now`, unix seconds) and an [`IdSource`] come in as
//! parameters; nothing here reads a clock, draws randomness or touches a disk. Every
//! operation reads the ledger (`&self`) and either refuses with a
//! [`Rejection`], changing nothing, or returns a [`Planned`]:
//! a [`Change`] to persist and then [`apply`](Ledger::apply), and the response to send after.
//!
//! Two operations are split because the server handles bytes in between:
//! * add part: [`Ledger::check_add_part`] before the body is read (it also names the Part),
//!   [`Ledger::add_part`] once its length is known;
//! * complete: [`Ledger::plan_complete`] validates the request and lists the Parts to read,
//!   [`Ledger::finish_complete`] takes the md5 the server computed over them.
//!
//! Concurrency contract: a server MUST NOT let two mutations of the same Upload interleave
//! between planning and applying (hold a lock across plan → persist → apply); the md5 phase of
//! a complete is outside that window, because `finish_complete` checks everything again.
//! Changes of different Uploads may be persisted concurrently.
//!
//! ```
//! use md5::{Digest, Md5};
//! use uploads_core::ledger::{ApplyError, CompletePlan, Ledger, Owner, Planned, SequentialIds};
//! use uploads_core::limits::Limits;
//! use uploads_core::types::UploadStatus;
//!
//! /// What a server does with every accepted operation: persist, apply, answer.
//! fn commit<T>(ledger: &mut Ledger, planned: Planned<T>) -> Result<T, ApplyError> {
//!     if let Some(change) = planned.change {
//!         for step in change.steps() {
//!             let _ = step; // write it durably, in order
//!         }
//!         ledger.apply(change)?;
//!     }
//!     Ok(planned.response)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut ledger = Ledger::new(Limits::default());
//! let mut ids = SequentialIds::new();
//! let me = Owner::new("proj_a");
//! let now = 1_719_184_911;
//!
//! // POST /uploads
//! let body = br#"{"filename":"hi.txt","purpose":"user_data","bytes":5,"mime_type":"text/plain"}"#;
//! let planned = ledger.create_upload(&me, body, now, &mut ids)?;
//! let upload = commit(&mut ledger, planned)?;
//! assert_eq!((upload.id.as_str(), upload.status), ("upload_1", UploadStatus::Pending));
//! assert_eq!(upload.expires_at, now + 3600);
//!
//! // POST /uploads/upload_1/parts: check, stream the data to the slot's place, then record.
//! let slot = ledger.check_add_part(&me, &upload.id, now, &mut ids)?;
//! let data = b"hello";
//! let planned = ledger.add_part(&me, &slot, data.len() as u64, now)?;
//! let part = commit(&mut ledger, planned)?;
//! assert_eq!(part.id.as_str(), "part_1");
//!
//! // POST /uploads/upload_1/complete: read the listed Parts, hash them, finish.
//! let body = br#"{"part_ids":["part_1"],"md5":"5d41402abc4b2a76b9719d911017c592"}"#;
//! let CompletePlan::Verify(verification) = ledger.plan_complete(&me, &upload.id, body, now)? else {
//!     unreachable!("not completed yet")
//! };
//! assert_eq!(verification.parts().len(), 1);
//! let md5: [u8; 16] = Md5::digest(data).into();
//! let done = ledger.finish_complete(&me, &verification, Some(md5), now + 1, &mut ids)?;
//! let completed = commit(&mut ledger, done)?;
//! assert_eq!(completed.status, UploadStatus::Completed);
//! let file = completed.file.expect("a completed Upload carries its File");
//! assert_eq!((file.id.as_str(), file.bytes), ("file-1", 5));
//!
//! // A retried complete is answered with the same Upload, and nothing to persist.
//! let CompletePlan::Replay(again) = ledger.plan_complete(&me, &upload.id, body, now + 2)? else {
//!     unreachable!("already completed")
//! };
//! assert_eq!(again.file.map(|file| file.id), Some(file.id.clone()));
//!
//! // GET /files/file-1 and its content's manifest.
//! assert_eq!(ledger.retrieve_file(&me, &file.id, now + 3)?.filename, "hi.txt");
//! assert_eq!(ledger.file_manifest(&me, &file.id, now + 3)?.part_ids, vec![part.id]);
//! // Another project sees nothing.
//! let other = Owner::new("proj_b");
//! assert_eq!(ledger.retrieve_file(&other, &file.id, now + 3).unwrap_err().status, 404);
//! # Ok(())
//! # }
//! ```

mod change;
mod complete_request;
mod files;
mod ids;
mod quota;
mod records;
mod sweep;
mod uploads;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tally_tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::Limits;
use crate::rejection::Rejection;
use crate::types::{FileId, UploadId};

use change::Guard;
use quota::UsageIndex;

pub use change::{ApplyError, Change, Planned, Step};
pub use complete_request::max_complete_request_bytes;
pub use files::NewFile;
pub use ids::{IdSource, RANDOM_ID_LEN, RandomIds, SequentialIds};
pub use quota::{
    FILE_COUNT_QUOTA_EXCEEDED, STORAGE_QUOTA_EXCEEDED, Usage, is_over_quota, parts_room,
    quota_rejection,
};
pub use records::{Completion, FileRecord, Owner, PartRecord, RecordState, UploadRecord};
pub use uploads::{CompletePlan, PartSlot, Verification};

/// The state of every Upload and File of the service, and the rules that change it.
#[derive(Debug, Clone)]
pub struct Ledger {
    limits: Limits,
    uploads: BTreeMap<UploadId, UploadEntry>,
    files: BTreeMap<FileId, FileRecord>,
    /// File records left by a complete that crashed before its Upload's state file was
    /// saved: invisible, reported by the sweep for removal.
    orphan_files: BTreeSet<FileId>,
    /// The revision the next saved Upload record gets; never reused, so a change planned
    /// against a record that was removed and re-created is still caught.
    next_revision: u64,
    /// Each owner's running totals, for its quotas.
    usage: UsageIndex,
}

/// An Upload record and the in-memory bookkeeping about it.
#[derive(Debug, Clone)]
struct UploadEntry {
    record: UploadRecord,
    /// Identifies this version of the record, for the guards of changes.
    revision: u64,
    /// Whether the bytes of this expired Upload's Parts were reported and removed.
    expired_parts_removed: bool,
    /// Set when the record was loaded without all its Parts (see [`Ledger::load_tallied`]):
    /// their count and total; `record.parts` then holds only the Parts loaded with it.
    tally: Option<PartTally>,
}

/// The count and total bytes of an Upload's Parts, as a store that keeps them beside the
/// record reads them: enough to decide on adding a Part without loading every Part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartTally {
    /// How many Parts were added.
    pub count: u64,
    /// Their bytes, added up.
    pub bytes: u64,
}

impl UploadEntry {
    /// A guard that holds while this version of the record is current.
    fn guard(&self) -> Guard {
        Guard::Upload {
            id: self.record.id.clone(),
            revision: Some(self.revision),
        }
    }

    /// How many Parts the Upload has.
    fn part_count(&self) -> u64 {
        self.tally
            .map_or(self.record.parts.len() as u64, |tally| tally.count)
    }

    /// The bytes of every Part added, listed or not.
    fn parts_total(&self) -> u64 {
        self.tally
            .map_or_else(|| self.record.parts_total(), |tally| tally.bytes)
    }

    /// The record with every one of its Parts: refused (500, a server bug) for one loaded
    /// with only a tally, which only adding a Part may be decided on.
    fn whole_record(&self) -> Result<&UploadRecord, Rejection> {
        if self.tally.is_some() {
            return Err(Rejection::server_error(format!(
                "Upload {} was loaded without its Parts for a request that needs them.",
                self.record.id
            )));
        }
        Ok(&self.record)
    }
}

impl Ledger {
    /// An empty ledger enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            uploads: BTreeMap::new(),
            files: BTreeMap::new(),
            orphan_files: BTreeSet::new(),
            next_revision: 0,
            usage: UsageIndex::default(),
        }
    }

    /// Rebuilds the ledger from persisted records (at startup).
    ///
    /// Only what a commit point says exists is loaded. A File record that names an Upload
    /// which was not completed with that File, or which no longer exists, is the trace of a
    /// complete that failed (a crash, a full disk) between saving the File's record and the
    /// Upload's state file (the commit point): it is not loaded, and [`Ledger::sweep`]
    /// reports it for removal.
    pub fn load(
        limits: Limits,
        uploads: impl IntoIterator<Item = UploadRecord>,
        files: impl IntoIterator<Item = FileRecord>,
    ) -> Self {
        let mut ledger = Self::with_uploads(limits, uploads);
        for record in files {
            // An Upload's record is removed only after its File's, so a File whose Upload
            // is gone was never committed either.
            let uncommitted = record.upload_id.as_ref().is_some_and(|upload_id| {
                ledger
                    .uploads
                    .get(upload_id)
                    .is_none_or(|entry| !completed_with(&entry.record, record.id()))
            });
            if uncommitted {
                ledger.orphan_files.insert(record.id().clone());
            } else {
                ledger.insert_file(record);
            }
        }
        ledger
    }

    /// Builds a ledger over some records of a store whose every change is atomic (one
    /// database transaction writes a complete's File and its Upload's new state together):
    /// a File record there was committed, so it is loaded as it is, even without its
    /// Upload's record (a request about one File needs only that File's).
    pub fn load_atomic(
        limits: Limits,
        uploads: impl IntoIterator<Item = UploadRecord>,
        files: impl IntoIterator<Item = FileRecord>,
    ) -> Self {
        let mut ledger = Self::with_uploads(limits, uploads);
        for record in files {
            ledger.insert_file(record);
        }
        ledger
    }

    /// Builds a ledger over one Upload loaded for adding a Part, by a store that keeps its
    /// Parts' count and total beside the record (adding a Part then reads O(1) rows, however
    /// many Parts the Upload has): `record.parts` holds only the Parts loaded with it (the
    /// slot's, to catch an id used twice), `tally` counts them all.
    ///
    /// Such a ledger decides [`Ledger::check_add_part`] and [`Ledger::add_part`] exactly as
    /// one holding every Part; a request that needs the Parts themselves (complete, cancel,
    /// the sweep) is refused with a 500 rather than decided on a partial record.
    pub fn load_tallied(limits: Limits, record: UploadRecord, tally: PartTally) -> Self {
        let mut ledger = Self::new(limits);
        let mut entry = ledger.entry(record);
        entry.tally = Some(tally);
        ledger.insert_upload(entry);
        ledger
    }

    fn with_uploads(limits: Limits, uploads: impl IntoIterator<Item = UploadRecord>) -> Self {
        let mut ledger = Self::new(limits);
        for record in uploads {
            let entry = ledger.entry(record);
            ledger.insert_upload(entry);
        }
        ledger
    }

    /// Holds an Upload's entry, in place of any earlier one, and counts it for its owner.
    fn insert_upload(&mut self, entry: UploadEntry) {
        if let Some(before) = self.uploads.remove(&entry.record.id) {
            self.usage.remove_upload(&before.record);
        }
        self.usage.add_upload(&entry.record);
        self.uploads.insert(entry.record.id.clone(), entry);
    }

    /// Holds a File's record, in place of any earlier one, and counts it for its owner.
    fn insert_file(&mut self, record: FileRecord) {
        if let Some(before) = self.files.remove(record.id()) {
            self.usage.remove_file(&before);
        }
        self.usage.add_file(&record);
        self.files.insert(record.id().clone(), record);
    }

    /// Forgets a File's record, and its share of its owner's usage.
    fn remove_file_record(&mut self, id: &FileId) {
        if let Some(before) = self.files.remove(id) {
            self.usage.remove_file(&before);
        }
    }

    /// The limits this ledger enforces (a server stops reading a Part's body once it is
    /// over `max_part_bytes`).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies a change whose steps the server has made durable.
    ///
    /// Refused, with nothing applied, when a record the change was planned against changed
    /// since (see [`ApplyError`]).
    pub fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        for guard in &change.guards {
            self.check_guard(guard)?;
        }
        for step in change.steps {
            match step {
                Step::SaveUpload(record) => {
                    let entry = self.entry(record);
                    self.insert_upload(entry);
                }
                Step::AddPart { upload_id, part } => {
                    let revision = self.next_revision;
                    if let Some(entry) = self.uploads.get_mut(&upload_id) {
                        if let Some(tally) = &mut entry.tally {
                            tally.count += 1;
                            tally.bytes = tally.bytes.saturating_add(part.bytes);
                        }
                        entry.record.parts.push(part);
                        entry.revision = revision;
                        self.next_revision += 1;
                    }
                }
                Step::SaveFile(record) => self.insert_file(record),
                Step::RemoveFile(id) => {
                    self.remove_file_record(&id);
                    self.orphan_files.remove(&id);
                }
                Step::RemoveUpload(id) => {
                    if let Some(before) = self.uploads.remove(&id) {
                        self.usage.remove_upload(&before.record);
                    }
                }
                // Bytes only: the records that listed them say what they need to.
                Step::RemoveParts { .. } => {}
            }
        }
        for id in change.expired_parts_removed {
            if let Some(entry) = self.uploads.get_mut(&id) {
                entry.expired_parts_removed = true;
            }
        }
        Ok(())
    }

    /// Whether every record `change` was planned against is still as it was: then it may
    /// be persisted. A server that plans outside a record's lock (a sweep) MUST check this
    /// under the lock before persisting, or it could write a stale record over a newer one.
    pub fn is_current(&self, change: &Change) -> bool {
        change
            .guards
            .iter()
            .all(|guard| self.check_guard(guard).is_ok())
    }

    fn check_guard(&self, guard: &Guard) -> Result<(), ApplyError> {
        match guard {
            Guard::Upload { id, revision } => {
                let current = self.uploads.get(id).map(|entry| entry.revision);
                if current == *revision {
                    Ok(())
                } else {
                    Err(ApplyError::UploadChanged(id.clone()))
                }
            }
            Guard::File { id, exists } => {
                if self.files.contains_key(id) == *exists {
                    Ok(())
                } else {
                    Err(ApplyError::FileChanged(id.clone()))
                }
            }
        }
    }

    /// A fresh entry for a record, at a new revision.
    fn entry(&mut self, record: UploadRecord) -> UploadEntry {
        let revision = self.next_revision;
        self.next_revision += 1;
        UploadEntry {
            record,
            revision,
            expired_parts_removed: false,
            tally: None,
        }
    }

    /// Mints an unused File id (for a complete, or for a `POST /files` whose bytes the
    /// server stores under it before calling [`Ledger::create_file`]).
    pub fn new_file_id(&self, ids: &mut impl IdSource) -> Result<FileId, Rejection> {
        mint(
            || ids.file_id(),
            |id| self.file_id_taken(id),
            self.files.len() + self.orphan_files.len(),
        )
    }

    fn file_id_taken(&self, id: &FileId) -> bool {
        self.files.contains_key(id) || self.orphan_files.contains(id)
    }
}

/// Whether the Upload was completed and produced this File.
fn completed_with(record: &UploadRecord, file_id: &FileId) -> bool {
    matches!(&record.state, RecordState::Completed(completion) if completion.file.id == *file_id)
}

/// Draws ids until one is not `taken`. Gives up (500) after `known + 1` draws: at most
/// `known` ids are taken, so that many draws suffice for any source that does not repeat
/// itself, and a broken source cannot loop forever.
fn mint<T>(
    mut draw: impl FnMut() -> T,
    taken: impl Fn(&T) -> bool,
    known: usize,
) -> Result<T, Rejection> {
    for _ in 0..=known {
        let id = draw();
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(Rejection::server_error(
        "The server could not mint an unused id.",
    ))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::scenario::{START, Scenario, hello_world, owner_a, owner_b};
    use super::*;
    use crate::types::{PartId, UploadStatus};

    #[test]
    fn a_change_applies_once_and_only_to_what_it_was_planned_against() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 2);
        let slot_a = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap();
        let slot_b = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap();
        let a = scenario
            .ledger
            .add_part(&owner_a(), &slot_a, 1, START)
            .unwrap();
        let b = scenario
            .ledger
            .add_part(&owner_a(), &slot_b, 1, START)
            .unwrap();
        let change_a = a.change.unwrap();
        scenario.ledger.apply(change_a.clone()).unwrap();
        // Planned before `a` was applied: applying it would drop Part a.
        assert_eq!(
            scenario.ledger.apply(b.change.unwrap()),
            Err(ApplyError::UploadChanged(upload.clone()))
        );
        assert_eq!(
            scenario.ledger.apply(change_a),
            Err(ApplyError::UploadChanged(upload.clone()))
        );
        assert_eq!(
            scenario.record(&upload).part_ids(),
            vec![slot_a.part_id().clone()]
        );
        // Planned again, it applies.
        let b = scenario
            .ledger
            .add_part(&owner_a(), &slot_b, 1, START)
            .unwrap();
        scenario.ledger.apply(b.change.unwrap()).unwrap();
        assert_eq!(scenario.record(&upload).parts.len(), 2);
        // A used slot is refused rather than recorded twice.
        let reused = scenario.ledger.add_part(&owner_a(), &slot_b, 1, START);
        assert_eq!(
            reused.unwrap_err().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    /// An id source that always returns the same ids.
    struct Stuck;
    impl IdSource for Stuck {
        fn upload_id(&mut self) -> UploadId {
            UploadId::new("upload_1")
        }
        fn part_id(&mut self) -> PartId {
            PartId::new("part_1")
        }
        fn file_id(&mut self) -> FileId {
            FileId::new("file-1")
        }
    }

    #[test]
    fn ids_in_use_are_never_minted_again() {
        let mut scenario = Scenario::new();
        let first = scenario.upload(&owner_a(), 1);
        // A source that starts over (a restarted sequence) skips what exists.
        scenario.ids = SequentialIds::new();
        let second = scenario.upload(&owner_a(), 1);
        assert_eq!((first.as_str(), second.as_str()), ("upload_1", "upload_2"));
        // A source stuck on one id gives up with a 500 instead of looping.
        let body = br#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#;
        let rejection = scenario
            .ledger
            .create_upload(&owner_a(), body, START, &mut Stuck)
            .unwrap_err();
        assert_eq!(rejection.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// An id source that hands out these File ids, in order.
    struct Scripted(Vec<&'static str>);
    impl IdSource for Scripted {
        fn upload_id(&mut self) -> UploadId {
            unreachable!("only File ids are drawn")
        }
        fn part_id(&mut self) -> PartId {
            unreachable!("only File ids are drawn")
        }
        fn file_id(&mut self) -> FileId {
            FileId::new(self.0.remove(0))
        }
    }

    #[test]
    fn a_file_id_is_drawn_until_one_is_free_as_often_as_ids_are_taken() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        // The Upload's record is gone (a failed complete, then the sweep): its File, file-1,
        // is an orphan, which is still taken.
        scenario.saved_uploads.remove(&upload);
        scenario.restart();
        for _ in 0..2 {
            scenario
                .create_file(&owner_a(), "user_data", b"x", None)
                .unwrap();
        }
        // Three ids are taken (two Files and the orphan): a fourth draw may still find one.
        assert_eq!(
            scenario
                .ledger
                .new_file_id(&mut Scripted(vec!["file-1", "file-2", "file-3", "file-9"])),
            Ok(FileId::new("file-9"))
        );
        // Beyond that the source repeats itself: a 500 rather than a loop.
        let rejection = scenario
            .ledger
            .new_file_id(&mut Scripted(vec![
                "file-3", "file-2", "file-1", "file-2", "file-9",
            ]))
            .unwrap_err();
        assert_eq!(rejection.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_restarted_ledger_answers_as_before() {
        let mut scenario = Scenario::new();
        let (done, hello, world) = hello_world(&mut scenario);
        let completed = scenario
            .complete_with(&owner_a(), &done, &[&hello, &world])
            .unwrap();
        let pending = scenario.upload(&owner_a(), 1);
        let cancelled = scenario.upload(&owner_b(), 1);
        scenario.cancel(&owner_b(), &cancelled).unwrap();
        let before = scenario.records();
        scenario.restart();
        assert_eq!(scenario.records(), before);
        assert_eq!(
            scenario
                .complete_with(&owner_a(), &done, &[&hello, &world])
                .unwrap(),
            completed
        );
        assert_eq!(
            scenario.cancel(&owner_b(), &cancelled).unwrap().status,
            UploadStatus::Cancelled
        );
        // A sequence that starts over after the restart skips the ids in use.
        scenario.ids = SequentialIds::new();
        assert_eq!(scenario.upload(&owner_a(), 1).as_str(), "upload_4");
        // Part ids only need to be unique within their Upload (the store keeps them there).
        assert_eq!(scenario.part(&owner_a(), &pending, b"z").as_str(), "part_1");
        assert_eq!(scenario.part(&owner_a(), &pending, b"z").as_str(), "part_2");
    }

    #[test]
    fn a_file_record_whose_upload_is_gone_is_not_loaded_and_is_swept() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let done = scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        let file_id = done.file.unwrap().id;
        // What a failed complete followed by the Upload's sweep leaves: the record alone.
        scenario.saved_uploads.remove(&upload);
        scenario.restart();
        assert_eq!(
            scenario
                .ledger
                .retrieve_file(&owner_a(), &file_id, START)
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(scenario.sweep(), vec![Step::RemoveFile(file_id)]);
    }

    #[test]
    fn a_file_record_of_a_complete_that_crashed_is_not_loaded_and_is_swept() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [&hello, &world]}).to_string();
        let CompletePlan::Verify(verification) = scenario
            .ledger
            .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
            .unwrap()
        else {
            panic!("pending")
        };
        let planned = scenario
            .ledger
            .finish_complete(&owner_a(), &verification, None, START, &mut scenario.ids)
            .unwrap();
        // The crash: only the first step (the File's record) reached the disk.
        let change = planned.change.unwrap();
        let Step::SaveFile(record) = &change.steps()[0] else {
            panic!("the File's record is saved first: {:?}", change.steps())
        };
        scenario
            .saved_files
            .insert(record.id().clone(), record.clone());
        scenario.restart();
        let file_id = record.id().clone();
        assert_eq!(
            scenario
                .ledger
                .retrieve_file(&owner_a(), &file_id, START)
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(scenario.sweep(), vec![Step::RemoveFile(file_id)]);
        assert!(scenario.saved_files.is_empty());
        assert_eq!(scenario.sweep(), vec![]);
        // The Upload is still pending, with its Parts, and completes.
        assert_eq!(scenario.disk_parts.len(), 2);
        let done = scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        assert_eq!(
            scenario
                .content(&owner_a(), &done.file.unwrap().id)
                .unwrap(),
            b"hello world"
        );
    }
}
