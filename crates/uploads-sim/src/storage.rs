//! What the simulated servers keep: the directory backend's disk (what is durable, step by
//! step, as the real store fsyncs each), the team backend's shared record store (rows, and
//! the row locks of open transactions), and the bytes of Parts.

use std::collections::{BTreeMap, BTreeSet};

use uploads_core::ledger::{FileRecord, Ledger, PartRecord, RecordState, Step, UploadRecord};
use uploads_core::limits::Limits;
use uploads_core::types::{FileId, PartId, UploadId};

/// An Upload's files on the directory backend's disk: its state file and its Part log.
#[derive(Debug, Clone)]
pub struct DiskUpload {
    /// The state file (the record as last saved).
    pub state: UploadRecord,
    /// Parts recorded since, one appended line each.
    pub part_log: Vec<PartRecord>,
}

/// The records on the directory backend's disk: what survives a crash.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// Each Upload's state file and Part log.
    pub uploads: BTreeMap<UploadId, DiskUpload>,
    /// Each File's record.
    pub files: BTreeMap<FileId, FileRecord>,
}

impl Disk {
    /// Makes one step durable (the bytes of `RemoveParts` and `RemoveUpload` are the
    /// caller's: they live in [`Bytes`]).
    pub fn write(&mut self, step: &Step) {
        match step {
            Step::SaveUpload(record) => {
                let log = self
                    .uploads
                    .remove(&record.id)
                    .map(|upload| upload.part_log)
                    .unwrap_or_default();
                self.uploads.insert(
                    record.id.clone(),
                    DiskUpload {
                        state: record.clone(),
                        part_log: log,
                    },
                );
            }
            Step::AddPart { upload_id, part } => {
                if let Some(upload) = self.uploads.get_mut(upload_id) {
                    upload.part_log.push(part.clone());
                }
            }
            Step::SaveFile(record) => {
                self.files.insert(record.id().clone(), record.clone());
            }
            Step::RemoveFile(id) => {
                self.files.remove(id);
            }
            Step::RemoveUpload(id) => {
                self.uploads.remove(id);
            }
            Step::RemoveParts { .. } => {}
        }
    }

    /// Recovery, with the rules the real server's recovery uses
    /// ([`UploadRecord::merge_part_log`], [`UploadRecord::parts_needed`]): each Upload's
    /// record with its logged Parts, and the bytes no record needs removed.
    pub fn recover(&self, bytes: &mut Bytes) -> (Vec<UploadRecord>, Vec<FileRecord>) {
        let mut uploads = Vec::new();
        for upload in self.uploads.values() {
            let mut record = upload.state.clone();
            record.merge_part_log(upload.part_log.iter().cloned());
            let needed: BTreeSet<PartId> = record.parts_needed().into_iter().cloned().collect();
            bytes.retain_upload(&record.id, |part| needed.contains(part));
            uploads.push(record);
        }
        // Bytes of Uploads with no state file at all (created, then crashed) go too.
        let known: BTreeSet<UploadId> = self.uploads.keys().cloned().collect();
        bytes.parts.retain(|(upload, _), _| known.contains(upload));
        (uploads, self.files.values().cloned().collect())
    }

    /// What a restart would load: the ledger recovery builds, without touching bytes.
    pub fn restart_view(&self, limits: &Limits) -> Ledger {
        let (uploads, files) = self.merged();
        Ledger::load(limits.clone(), uploads, files)
    }

    /// The records as recovery reads them (logs merged), and the committed Files.
    pub fn merged(&self) -> (Vec<UploadRecord>, Vec<FileRecord>) {
        let uploads = self
            .uploads
            .values()
            .map(|upload| {
                let mut record = upload.state.clone();
                record.merge_part_log(upload.part_log.iter().cloned());
                record
            })
            .collect();
        (uploads, self.files.values().cloned().collect())
    }
}

/// The team backend's records, shared by every instance, with PostgreSQL's semantics: a
/// change is one transaction, written whole at its commit or not at all; a transaction
/// that locks an Upload's row keeps every other off it until it ends.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Upload rows (the record, with its Parts).
    pub uploads: BTreeMap<UploadId, UploadRecord>,
    /// File rows.
    pub files: BTreeMap<FileId, FileRecord>,
    /// Upload rows locked by an open transaction, and which.
    pub locks: BTreeMap<UploadId, u64>,
}

impl Rows {
    /// Commits a transaction's steps. `keep_mark` is false for the schema before the mark
    /// had a column (issue 21's migration 0002): the mark is lost on the way in.
    pub fn commit(&mut self, steps: &[Step], keep_mark: bool) {
        for step in steps {
            match step {
                Step::SaveUpload(record) => {
                    let mut record = record.clone();
                    record.parts_removed &= keep_mark;
                    self.uploads.insert(record.id.clone(), record);
                }
                Step::AddPart { upload_id, part } => {
                    if let Some(record) = self.uploads.get_mut(upload_id)
                        && record.part(&part.id).is_none()
                    {
                        record.parts.push(part.clone());
                    }
                }
                Step::SaveFile(record) => {
                    self.files.insert(record.id().clone(), record.clone());
                }
                Step::RemoveFile(id) => {
                    self.files.remove(id);
                }
                Step::RemoveUpload(id) => {
                    self.uploads.remove(id);
                }
                Step::RemoveParts { .. } => {}
            }
        }
    }

    /// A ledger over the committed rows (`skip`: rows another transaction holds, as
    /// `SKIP LOCKED` leaves them out), as the team backend loads one per transaction.
    pub fn ledger(&self, limits: &Limits, skip_locked: bool) -> Ledger {
        let uploads = self
            .uploads
            .values()
            .filter(|record| !(skip_locked && self.locks.contains_key(&record.id)))
            .cloned();
        Ledger::load_atomic(limits.clone(), uploads, self.files.values().cloned())
    }
}

/// The bytes of every Part stored (on the disk or in the bucket).
#[derive(Debug, Clone, Default)]
pub struct Bytes {
    /// Each Part's bytes.
    pub parts: BTreeMap<(UploadId, PartId), Vec<u8>>,
}

impl Bytes {
    /// Removes the bytes a step says go; returns the Parts removed.
    pub fn remove_for(&mut self, step: &Step) {
        match step {
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => {
                for part in part_ids {
                    self.parts.remove(&(upload_id.clone(), part.clone()));
                }
            }
            Step::RemoveUpload(upload_id) => self.retain_upload(upload_id, |_| false),
            _ => {}
        }
    }

    /// Keeps only the Parts of `upload` that `keep` keeps.
    pub fn retain_upload(&mut self, upload: &UploadId, keep: impl Fn(&PartId) -> bool) {
        self.parts
            .retain(|(owner, part), _| owner != upload || keep(part));
    }

    /// A File's bytes, read through its manifest; the first Part missing, if one is.
    pub fn read(&self, upload: &UploadId, manifest: &[PartId]) -> Result<Vec<u8>, PartId> {
        let mut data = Vec::new();
        for part in manifest {
            match self.parts.get(&(upload.clone(), part.clone())) {
                Some(bytes) => data.extend_from_slice(bytes),
                None => return Err(part.clone()),
            }
        }
        Ok(data)
    }
}

/// The durable truth of either backend, as invariants read it.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Every Upload record (logs merged).
    pub uploads: BTreeMap<UploadId, UploadRecord>,
    /// Every committed File (an orphan left by a crashed complete is not one).
    pub files: BTreeMap<FileId, FileRecord>,
}

impl Truth {
    /// From the directory backend's disk: Files count only once their Upload's state says
    /// it was completed with them (the commit point), as [`Ledger::load`] decides.
    pub fn of_disk(disk: &Disk) -> Self {
        let (uploads, files) = disk.merged();
        let uploads: BTreeMap<UploadId, UploadRecord> = uploads
            .into_iter()
            .map(|record| (record.id.clone(), record))
            .collect();
        let files = files
            .into_iter()
            .filter(|file| match &file.upload_id {
                None => true,
                Some(upload) => uploads.get(upload).is_some_and(|record| {
                    matches!(&record.state, RecordState::Completed(completion) if completion.file.id == *file.id())
                }),
            })
            .map(|file| (file.id().clone(), file))
            .collect();
        Self { uploads, files }
    }

    /// From the shared rows: every row is committed.
    pub fn of_rows(rows: &Rows) -> Self {
        Self {
            uploads: rows.uploads.clone(),
            files: rows.files.clone(),
        }
    }
}
