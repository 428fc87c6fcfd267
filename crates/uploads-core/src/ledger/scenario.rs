//! Test driver: a ledger with a simulated store, run the way a server runs it (check,
//! store the bytes, plan, persist the steps, apply), so tests read as requests and answers.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::limits::Limits;
use crate::rejection::{INVALID_REQUEST_ERROR, Rejection};
use crate::types::{
    DeletedFile, ExpiresAfter, FileId, FileObject, PartId, Upload, UploadId, UploadPart,
};

use super::{
    CompletePlan, FileRecord, Ledger, NewFile, Owner, Planned, SequentialIds, Step, UploadRecord,
};

/// The first `now` of a scenario.
pub(super) const START: u64 = 1_700_000_000;

/// A ledger, its id source, a clock, and what a store would hold.
pub(super) struct Scenario {
    pub(super) ledger: Ledger,
    pub(super) ids: SequentialIds,
    pub(super) now: u64,
    /// Upload state files and File records, as persisted.
    pub(super) saved_uploads: BTreeMap<UploadId, UploadRecord>,
    pub(super) saved_files: BTreeMap<FileId, FileRecord>,
    /// Part bytes on the simulated disk.
    pub(super) disk_parts: BTreeMap<(UploadId, PartId), Vec<u8>>,
    /// The bytes of Files made by `POST /files`.
    pub(super) disk_files: BTreeMap<FileId, Vec<u8>>,
}

pub(super) fn owner_a() -> Owner {
    Owner::new("proj_a")
}

pub(super) fn owner_b() -> Owner {
    Owner::new("proj_b")
}

/// Asserts a rejection's status, `type`, `param` and message.
#[track_caller]
pub(super) fn assert_rejected(
    rejection: &Rejection,
    status: u16,
    param: Option<&str>,
    message: &str,
) {
    assert_eq!(rejection.status.as_u16(), status, "{rejection}");
    assert_eq!(rejection.body.error.kind, INVALID_REQUEST_ERROR);
    assert_eq!(rejection.param(), param, "{rejection}");
    assert_eq!(rejection.body.error.message, message);
}

/// A pending Upload of owner A declaring the 11 bytes of "hello world", with two Parts:
/// (upload, "hello " Part, "world" Part).
pub(super) fn hello_world(scenario: &mut Scenario) -> (UploadId, PartId, PartId) {
    let upload = scenario.upload(&owner_a(), 11);
    let hello = scenario.part(&owner_a(), &upload, b"hello ");
    let world = scenario.part(&owner_a(), &upload, b"world");
    (upload, hello, world)
}

impl Scenario {
    pub(super) fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub(super) fn with_limits(limits: Limits) -> Self {
        Self {
            ledger: Ledger::new(limits),
            ids: SequentialIds::new(),
            now: START,
            saved_uploads: BTreeMap::new(),
            saved_files: BTreeMap::new(),
            disk_parts: BTreeMap::new(),
            disk_files: BTreeMap::new(),
        }
    }

    /// Persists a change's steps on the simulated store, applies it, returns the response.
    pub(super) fn commit<T>(&mut self, planned: Planned<T>) -> T {
        if let Some(change) = planned.change {
            for step in change.steps() {
                self.persist(step);
            }
            self.ledger.apply(change).expect("a fresh change applies");
        }
        planned.response
    }

    fn persist(&mut self, step: &Step) {
        match step {
            Step::SaveUpload(record) => {
                self.saved_uploads.insert(record.id.clone(), record.clone());
            }
            Step::AddPart { upload_id, part } => {
                if let Some(record) = self.saved_uploads.get_mut(upload_id) {
                    record.parts.push(part.clone());
                }
            }
            Step::SaveFile(record) => {
                self.saved_files.insert(record.id().clone(), record.clone());
            }
            Step::RemoveFile(id) => {
                self.saved_files.remove(id);
                self.disk_files.remove(id);
            }
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => {
                for part_id in part_ids {
                    self.disk_parts
                        .remove(&(upload_id.clone(), part_id.clone()));
                }
            }
            Step::RemoveUpload(id) => {
                self.saved_uploads.remove(id);
                self.disk_parts.retain(|(upload_id, _), _| upload_id != id);
            }
        }
    }

    /// `POST /uploads` with a JSON body.
    pub(super) fn create(&mut self, owner: &Owner, body: &Value) -> Result<Upload, Rejection> {
        let body = serde_json::to_vec(body).expect("JSON");
        let planned = self
            .ledger
            .create_upload(owner, &body, self.now, &mut self.ids)?;
        Ok(self.commit(planned))
    }

    /// A pending `user_data` Upload declaring `bytes`.
    pub(super) fn upload(&mut self, owner: &Owner, bytes: u64) -> UploadId {
        let body = json!({"filename": "data.bin", "purpose": "user_data", "bytes": bytes,
            "mime_type": "application/octet-stream"});
        self.create(owner, &body).expect("a valid create").id
    }

    /// `POST /uploads/{id}/parts` carrying `data`.
    pub(super) fn add_part(
        &mut self,
        owner: &Owner,
        upload_id: &UploadId,
        data: &[u8],
    ) -> Result<UploadPart, Rejection> {
        let slot = self
            .ledger
            .check_add_part(owner, upload_id, self.now, &mut self.ids)?;
        let planned = self
            .ledger
            .add_part(owner, &slot, data.len() as u64, self.now)?;
        // The Part's bytes become durable before the state file that lists them.
        self.disk_parts.insert(
            (slot.upload_id().clone(), slot.part_id().clone()),
            data.to_vec(),
        );
        Ok(self.commit(planned))
    }

    /// Adds a Part and returns its id.
    pub(super) fn part(&mut self, owner: &Owner, upload_id: &UploadId, data: &[u8]) -> PartId {
        self.add_part(owner, upload_id, data)
            .expect("the Part is accepted")
            .id
    }

    /// `POST /uploads/{id}/complete`: plans, reads and hashes the listed Parts, finishes.
    pub(super) fn complete(
        &mut self,
        owner: &Owner,
        upload_id: &UploadId,
        body: &Value,
    ) -> Result<Upload, Rejection> {
        let body = serde_json::to_vec(body).expect("JSON");
        let verification = match self
            .ledger
            .plan_complete(owner, upload_id, &body, self.now)?
        {
            CompletePlan::Replay(upload) => return Ok(upload),
            CompletePlan::Verify(verification) => verification,
        };
        let md5 = verification.expected_md5().map(|_| {
            let mut hasher = Md5::new();
            for part in verification.parts() {
                let key = (upload_id.clone(), part.id.clone());
                hasher.update(&self.disk_parts[&key]);
            }
            <[u8; 16]>::from(hasher.finalize())
        });
        let planned =
            self.ledger
                .finish_complete(owner, &verification, md5, self.now, &mut self.ids)?;
        Ok(self.commit(planned))
    }

    /// Completes with these Parts and no md5.
    pub(super) fn complete_with(
        &mut self,
        owner: &Owner,
        upload_id: &UploadId,
        part_ids: &[&PartId],
    ) -> Result<Upload, Rejection> {
        self.complete(owner, upload_id, &json!({ "part_ids": part_ids }))
    }

    /// `POST /uploads/{id}/cancel`.
    pub(super) fn cancel(
        &mut self,
        owner: &Owner,
        upload_id: &UploadId,
    ) -> Result<Upload, Rejection> {
        let planned = self.ledger.cancel_upload(owner, upload_id, self.now)?;
        Ok(self.commit(planned))
    }

    /// `POST /files` carrying `data`.
    pub(super) fn create_file(
        &mut self,
        owner: &Owner,
        purpose: &str,
        data: &[u8],
        expires_after: Option<ExpiresAfter>,
    ) -> Result<FileObject, Rejection> {
        let file_id = self.ledger.new_file_id(&mut self.ids)?;
        let new = NewFile {
            purpose: purpose.to_owned(),
            filename: "notes.txt".to_owned(),
            bytes: data.len() as u64,
            expires_after,
        };
        let planned = self.ledger.create_file(owner, &file_id, new, self.now)?;
        self.disk_files.insert(file_id, data.to_vec());
        Ok(self.commit(planned))
    }

    /// `DELETE /files/{id}`.
    pub(super) fn delete_file(
        &mut self,
        owner: &Owner,
        id: &FileId,
    ) -> Result<DeletedFile, Rejection> {
        let planned = self.ledger.delete_file(owner, id, self.now)?;
        Ok(self.commit(planned))
    }

    /// Runs a sweep; returns its steps.
    pub(super) fn sweep(&mut self) -> Vec<Step> {
        let Some(change) = self.ledger.sweep(self.now) else {
            return Vec::new();
        };
        let steps = change.steps().to_vec();
        self.commit(Planned {
            change: Some(change),
            response: (),
        });
        steps
    }

    /// The bytes of a File, read through its manifest.
    pub(super) fn content(&self, owner: &Owner, id: &FileId) -> Result<Vec<u8>, Rejection> {
        let record = self.ledger.file_manifest(owner, id, self.now)?;
        Ok(match &record.upload_id {
            None => self.disk_files[id].clone(),
            Some(upload_id) => record
                .part_ids
                .iter()
                .flat_map(|part_id| self.disk_parts[&(upload_id.clone(), part_id.clone())].clone())
                .collect(),
        })
    }

    /// Every record the ledger holds, to show that a refusal changed nothing.
    pub(super) fn records(&self) -> (Vec<UploadRecord>, Vec<FileRecord>) {
        (
            self.ledger
                .uploads
                .values()
                .map(|entry| entry.record.clone())
                .collect(),
            self.ledger.files.values().cloned().collect(),
        )
    }

    /// The stored record of an Upload.
    pub(super) fn record(&self, id: &UploadId) -> &UploadRecord {
        &self.ledger.uploads[id].record
    }

    /// Restarts: a new ledger loaded from what was persisted.
    pub(super) fn restart(&mut self) {
        self.ledger = Ledger::load(
            self.ledger.limits().clone(),
            self.saved_uploads.values().cloned(),
            self.saved_files.values().cloned(),
        );
    }
}
