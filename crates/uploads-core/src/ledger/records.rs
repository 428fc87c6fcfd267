//! The records the ledger keeps and a server persists as JSON: one [`UploadRecord`] per
//! Upload (its state file, the Upload's commit point) and one [`FileRecord`] per File.
//!
//! A record stores facts, never a status that time alone changes: an Upload is `expired`
//! when it is pending and `now >= expires_at`, computed by [`UploadRecord::status`], or
//! once its Parts were removed ([`UploadRecord::parts_removed`]), whatever the time says
//! since.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{
    ExpiresAfter, FileId, FileObject, PartId, Purpose, Upload, UploadId, UploadStatus,
};

/// The project an API key maps to. Every ledger operation acts on behalf of one owner; an
/// object of another owner is indistinguishable from a missing one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Owner {
    /// Wraps the name of a project.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The project's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything known about one Upload: its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Who created it.
    pub owner: Owner,
    /// Its id.
    pub id: UploadId,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// The File's name, as given on create.
    pub filename: String,
    /// The File's purpose, as given on create.
    pub purpose: Purpose,
    /// The number of bytes declared on create; the listed Parts must add up to it.
    pub bytes: u64,
    /// The MIME type given on create.
    pub mime_type: String,
    /// Unix seconds from which a pending Upload is expired.
    pub expires_at: u64,
    /// The expiration policy of the File the Upload will produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<ExpiresAfter>,
    /// Every Part added, in the order they were added (listed on complete or not).
    pub parts: Vec<PartRecord>,
    /// Where the Upload is in its life, apart from expiry.
    pub state: RecordState,
    /// The sweep removed the bytes of this expired Upload's Parts. Stored (before the bytes
    /// go) so that the Upload stays expired for good: a clock that later reads earlier than
    /// `expires_at` (stepped back, or another instance's) must not offer to complete an
    /// Upload whose bytes are gone, as S3 refuses to complete an aborted multipart upload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parts_removed: bool,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(value: &bool) -> bool {
    !*value
}

/// One Part of an Upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Its id.
    pub id: PartId,
    /// The length of its data.
    pub bytes: u64,
    /// Unix seconds when it was added.
    pub created_at: u64,
}

/// The stored state of an Upload. `expired` is not here: it is computed from the time.
///
/// Exhaustive on purpose: a store decides per state which Parts it keeps, so a new state is a
/// compile error there rather than a silent default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one per Upload; boxing the completion would only add an allocation"
)]
pub enum RecordState {
    /// Accepting Parts (unless expired).
    Pending,
    /// Cancelled by its owner.
    Cancelled {
        /// Unix seconds of the cancel.
        at: u64,
    },
    /// Completed: it produced a File.
    Completed(Completion),
}

/// How an Upload was completed: the request that completed it and the File it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The listed Part ids, in File order: the File's manifest.
    pub part_ids: Vec<PartId>,
    /// The md5 given on complete, lower-case hex; kept so a retry can be recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The File, as created on completion.
    pub file: FileObject,
}

impl UploadRecord {
    /// Whether the Upload is pending and its time is up (`now >= expires_at`), or its Parts
    /// were removed as an expired Upload's (then whatever `now` says).
    pub fn is_expired(&self, now: u64) -> bool {
        matches!(self.state, RecordState::Pending) && (self.parts_removed || now >= self.expires_at)
    }

    /// The status at `now`.
    pub fn status(&self, now: u64) -> UploadStatus {
        match &self.state {
            RecordState::Pending if self.is_expired(now) => UploadStatus::Expired,
            RecordState::Pending => UploadStatus::Pending,
            RecordState::Cancelled { .. } => UploadStatus::Cancelled,
            RecordState::Completed(_) => UploadStatus::Completed,
        }
    }

    /// The wire object at `now`; it carries the File once completed.
    pub fn to_upload(&self, now: u64) -> Upload {
        let file = match &self.state {
            RecordState::Completed(completion) => Some(completion.file.clone()),
            RecordState::Pending | RecordState::Cancelled { .. } => None,
        };
        Upload {
            id: self.id.clone(),
            object: "upload".to_owned(),
            bytes: self.bytes,
            created_at: self.created_at,
            filename: self.filename.clone(),
            purpose: self.purpose.clone(),
            status: self.status(now),
            expires_at: self.expires_at,
            file,
        }
    }

    /// The Part with this id, if it was added to this Upload.
    pub fn part(&self, id: &PartId) -> Option<&PartRecord> {
        self.parts.iter().find(|part| part.id == *id)
    }

    /// The bytes of every Part added, listed or not.
    pub fn parts_total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0, |total, part| total.saturating_add(part.bytes))
    }

    /// Every Part id, in the order they were added.
    pub fn part_ids(&self) -> Vec<PartId> {
        self.parts.iter().map(|part| part.id.clone()).collect()
    }

    /// Recovery: adds the Parts a store logged after this record was saved (a Part is
    /// recorded by appending to a log, not by rewriting the record), each once, in the
    /// order they were logged.
    pub fn merge_part_log(&mut self, logged: impl IntoIterator<Item = PartRecord>) {
        // A set: an Upload may have thousands of Parts.
        let mut known: HashSet<PartId> = self.parts.iter().map(|part| part.id.clone()).collect();
        for part in logged {
            if known.insert(part.id.clone()) {
                self.parts.push(part);
            }
        }
    }

    /// The Parts whose bytes this record still needs: every Part of a pending Upload, the
    /// listed ones of a completed Upload (its File's manifest), none of a cancelled one.
    /// Recovery removes the bytes of any other Part it finds.
    pub fn parts_needed(&self) -> HashSet<&PartId> {
        match &self.state {
            RecordState::Pending => self.parts.iter().map(|part| &part.id).collect(),
            RecordState::Completed(completion) => completion.part_ids.iter().collect(),
            RecordState::Cancelled { .. } => HashSet::new(),
        }
    }
}

/// Everything known about one File.
///
/// Where its bytes are: with `upload_id` set, the listed Parts of that Upload, in
/// `part_ids` order; without it (a File made by `POST /files`), the File's own data, stored
/// under its id, and `part_ids` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Who owns it.
    pub owner: Owner,
    /// The wire object.
    pub file: FileObject,
    /// The Upload it was completed from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<UploadId>,
    /// The manifest: the Upload's Parts holding the bytes, in File order.
    #[serde(default)]
    pub part_ids: Vec<PartId>,
}

impl FileRecord {
    /// Whether the File has expired at `now` (`expires_at <= now`); it is then gone.
    pub fn is_expired(&self, now: u64) -> bool {
        self.file.expires_at.is_some_and(|at| at <= now)
    }

    /// The File's id.
    pub fn id(&self) -> &FileId {
        &self.file.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExpiresAfter, FileStatus};
    use serde_json::json;

    #[test]
    fn an_owner_reads_and_shows_as_its_project_name() {
        let owner = Owner::new("proj_a");
        assert_eq!(owner.as_str(), "proj_a");
        assert_eq!(owner.to_string(), "proj_a");
    }

    fn record(state: RecordState) -> UploadRecord {
        UploadRecord {
            owner: Owner::new("proj_a"),
            id: UploadId::new("upload_1"),
            created_at: 100,
            filename: "train.jsonl".to_owned(),
            purpose: Purpose::FineTune,
            bytes: 3,
            mime_type: "text/jsonl".to_owned(),
            expires_at: 3700,
            expires_after: Some(ExpiresAfter::after_creation(7200)),
            parts: vec![PartRecord {
                id: PartId::new("part_1"),
                bytes: 3,
                created_at: 101,
            }],
            state,
            parts_removed: false,
        }
    }

    fn file() -> FileObject {
        FileObject {
            id: FileId::new("file-1"),
            object: "file".to_owned(),
            bytes: 3,
            created_at: 200,
            expires_at: Some(7400),
            filename: "train.jsonl".to_owned(),
            purpose: Purpose::FineTune,
            status: Some(FileStatus::Processed),
            status_details: None,
        }
    }

    fn part(id: &str) -> PartRecord {
        PartRecord {
            id: PartId::new(id),
            bytes: 1,
            created_at: 102,
        }
    }

    #[test]
    fn a_part_log_adds_each_logged_part_once_in_log_order() {
        let mut recovered = record(RecordState::Pending);
        // part_1 is in the saved record already; part_3 was logged twice.
        recovered.merge_part_log([
            part("part_3"),
            part("part_1"),
            part("part_2"),
            part("part_3"),
        ]);
        assert_eq!(
            recovered.part_ids(),
            ["part_1", "part_3", "part_2"].map(PartId::new)
        );
    }

    #[test]
    fn the_parts_a_record_needs_follow_its_state() {
        let mut pending = record(RecordState::Pending);
        pending.parts.push(part("part_2"));
        let ids = |record: &UploadRecord| {
            let mut needed: Vec<String> = record
                .parts_needed()
                .into_iter()
                .map(ToString::to_string)
                .collect();
            needed.sort();
            needed
        };
        assert_eq!(ids(&pending), ["part_1", "part_2"]);
        let completed = UploadRecord {
            state: RecordState::Completed(Completion {
                part_ids: vec![PartId::new("part_2")],
                md5: None,
                file: file(),
            }),
            ..pending.clone()
        };
        // Only the File's manifest: the unlisted part_1 may go.
        assert_eq!(ids(&completed), ["part_2"]);
        let cancelled = UploadRecord {
            state: RecordState::Cancelled { at: 150 },
            ..pending
        };
        assert!(cancelled.parts_needed().is_empty());
    }

    #[test]
    fn a_pending_upload_expires_exactly_at_expires_at() {
        let pending = record(RecordState::Pending);
        assert_eq!(pending.status(3699), UploadStatus::Pending);
        assert_eq!(pending.status(3700), UploadStatus::Expired);
        assert!(pending.is_expired(3700));
        // Terminal states do not expire.
        let cancelled = record(RecordState::Cancelled { at: 150 });
        assert_eq!(cancelled.status(9999), UploadStatus::Cancelled);
        assert!(!cancelled.is_expired(9999));
    }

    #[test]
    fn an_upload_whose_parts_were_removed_stays_expired_whatever_the_clock_says() {
        let mut swept = record(RecordState::Pending);
        swept.parts_removed = true;
        // Earlier than expires_at: a clock stepped back, or another instance's.
        assert_eq!(swept.status(100), UploadStatus::Expired);
        assert!(swept.is_expired(0));
        let json = serde_json::to_value(&swept).unwrap();
        assert_eq!(json["parts_removed"], true);
        assert_eq!(serde_json::from_value::<UploadRecord>(json).unwrap(), swept);
        // Records stored before the flag existed read as not removed.
        let mut json = serde_json::to_value(record(RecordState::Pending)).unwrap();
        assert!(json.get("parts_removed").is_none(), "omitted while false");
        json.as_object_mut().unwrap().remove("parts_removed");
        assert!(
            !serde_json::from_value::<UploadRecord>(json)
                .unwrap()
                .parts_removed
        );
    }

    #[test]
    fn the_wire_object_carries_the_file_only_when_completed() {
        let upload = record(RecordState::Pending).to_upload(5000);
        assert_eq!(upload.status, UploadStatus::Expired);
        assert_eq!(upload.file, None);
        assert_eq!(upload.object, "upload");
        let completed = record(RecordState::Completed(Completion {
            part_ids: vec![PartId::new("part_1")],
            md5: None,
            file: file(),
        }))
        .to_upload(5000);
        assert_eq!(completed.status, UploadStatus::Completed);
        assert_eq!(completed.file, Some(file()));
    }

    #[test]
    fn records_persist_as_json_and_come_back_equal() {
        let completed = record(RecordState::Completed(Completion {
            part_ids: vec![PartId::new("part_1")],
            md5: Some("900150983cd24fb0d6963f7d28e17f72".to_owned()),
            file: file(),
        }));
        let json = serde_json::to_value(&completed).unwrap();
        assert_eq!(json["owner"], "proj_a");
        assert_eq!(json["state"]["status"], "completed");
        assert_eq!(json["state"]["file"]["id"], "file-1");
        assert_eq!(
            json["parts"][0],
            json!({"id": "part_1", "bytes": 3, "created_at": 101})
        );
        let back: UploadRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, completed);

        let cancelled = record(RecordState::Cancelled { at: 150 });
        let json = serde_json::to_value(&cancelled).unwrap();
        assert_eq!(json["state"], json!({"status": "cancelled", "at": 150}));
        assert_eq!(
            serde_json::from_value::<UploadRecord>(json).unwrap(),
            cancelled
        );

        let direct = FileRecord {
            owner: Owner::new("proj_a"),
            file: file(),
            upload_id: None,
            part_ids: Vec::new(),
        };
        let json = serde_json::to_value(&direct).unwrap();
        assert!(json.get("upload_id").is_none());
        assert_eq!(serde_json::from_value::<FileRecord>(json).unwrap(), direct);
    }

    #[test]
    fn a_file_is_gone_from_its_expires_at() {
        let record = FileRecord {
            owner: Owner::new("proj_a"),
            file: file(),
            upload_id: Some(UploadId::new("upload_1")),
            part_ids: vec![PartId::new("part_1")],
        };
        assert!(!record.is_expired(7399));
        assert!(record.is_expired(7400));
        let mut forever = record;
        forever.file.expires_at = None;
        assert!(!forever.is_expired(u64::MAX));
    }
}
