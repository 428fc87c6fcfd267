//! Property test of the whole ledger against a reference model written independently here
//! (plain vectors, its own decisions): random sequences of create / add part / complete (with
//! shuffled, duplicated, foreign and unknown ids, right and wrong md5s and byte totals) /
//! cancel / clock advance / file create and delete / sweep / restart, over two owners.
//!
//! Every answer's status and `param`, and every accepted answer's object, must agree. After
//! every step: a refused request changed nothing; what was persisted is what the ledger
//! holds; every live File reads back as the bytes of its listed Parts in order; every
//! pending Upload's Parts are still on disk; the file list is the model's.

use std::fmt::Write as _;

use md5::{Digest, Md5};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use crate::limits::Limits;
use crate::rejection::Rejection;
use crate::types::{
    ExpiresAfter, FileId, FileObject, FileStatus, ListFilesQuery, PartId, Purpose, Upload,
    UploadId, UploadPart, UploadStatus,
};

use super::scenario::{START, Scenario};
use super::{Owner, Step};

const MAX_PART: u64 = 5;
const MAX_UPLOAD: u64 = 12;
const TTL: u64 = 100;
const FILE_TTL: std::ops::RangeInclusive<u64> = 10..=50;
/// How long a `batch` File lives when no `expires_after` was given.
const BATCH_FILE_TTL: u64 = 30;

fn limits() -> Limits {
    Limits {
        max_part_bytes: MAX_PART,
        max_upload_bytes: MAX_UPLOAD,
        upload_ttl_secs: TTL,
        expires_after_secs: FILE_TTL,
        default_file_expiry: vec![(Purpose::Batch, BATCH_FILE_TTL)],
        ..Limits::default()
    }
}

fn owner(index: usize) -> Owner {
    Owner::new(["proj_a", "proj_b"][index])
}

/// A status and `param`: what the two sides must agree on when a request is refused.
type Refusal = (u16, Option<String>);

fn refusal(status: u16, param: Option<&str>) -> Refusal {
    (status, param.map(str::to_owned))
}

fn verdict<T>(result: Result<T, Rejection>) -> Result<T, Refusal> {
    result.map_err(|rejection| {
        (
            rejection.status.as_u16(),
            rejection.param().map(str::to_owned),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Operations

/// Which Upload a request names.
#[derive(Debug, Clone)]
struct Target {
    upload: UploadChoice,
    /// Sent by the other owner.
    stranger: bool,
}

#[derive(Debug, Clone)]
enum UploadChoice {
    /// The Upload created last (most requests are about the one in progress).
    Latest,
    /// Any Upload created so far.
    Any(Index),
    /// An id that never existed.
    Unknown,
}

#[derive(Debug, Clone)]
enum PartSize {
    Fixed(u64),
    /// What is missing to reach the declared bytes.
    Remainder,
}

#[derive(Debug, Clone)]
enum PartRef {
    /// One of the Upload's own Parts.
    Own(Index),
    /// A Part of some other Upload.
    Foreign(Index, Index),
    Unknown,
}

#[derive(Debug, Clone)]
enum PartList {
    AllInOrder,
    AllReversed,
    Refs(Vec<PartRef>),
}

#[derive(Debug, Clone, Copy)]
enum Md5Choice {
    Absent,
    Right,
    RightUpperCase,
    Wrong,
    Malformed,
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        owner: usize,
        bytes: u64,
        expires_after: Option<u64>,
    },
    AddPart {
        target: Target,
        size: PartSize,
    },
    Complete {
        target: Target,
        list: PartList,
        md5: Md5Choice,
    },
    Cancel {
        target: Target,
    },
    Advance(u64),
    /// The clock steps back (NTP after a jump, or another instance's clock).
    StepBack(u64),
    CreateFile {
        owner: usize,
        known_purpose: bool,
        expires_after: Option<u64>,
    },
    DeleteFile {
        file: Index,
        stranger: bool,
    },
    Sweep,
    Restart,
}

fn target() -> impl Strategy<Value = Target> {
    (
        prop_oneof![
            6 => Just(UploadChoice::Latest),
            3 => any::<Index>().prop_map(UploadChoice::Any),
            1 => Just(UploadChoice::Unknown),
        ],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(upload, stranger)| Target { upload, stranger })
}

fn expires_after() -> impl Strategy<Value = Option<u64>> {
    // In range, on its bounds, and out of it.
    prop::option::of(prop_oneof![
        Just(5_u64),
        Just(10),
        Just(30),
        Just(50),
        Just(51)
    ])
}

fn part_list() -> impl Strategy<Value = PartList> {
    let part_ref = prop_oneof![
        6 => any::<Index>().prop_map(PartRef::Own),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(u, p)| PartRef::Foreign(u, p)),
        1 => Just(PartRef::Unknown),
    ];
    prop_oneof![
        6 => Just(PartList::AllInOrder),
        1 => Just(PartList::AllReversed),
        3 => prop::collection::vec(part_ref, 0..4).prop_map(PartList::Refs),
    ]
}

fn md5_choice() -> impl Strategy<Value = Md5Choice> {
    prop_oneof![
        3 => Just(Md5Choice::Absent),
        3 => Just(Md5Choice::Right),
        1 => Just(Md5Choice::RightUpperCase),
        1 => Just(Md5Choice::Wrong),
        1 => Just(Md5Choice::Malformed),
    ]
}

fn create() -> impl Strategy<Value = Op> {
    (0..2_usize, 0..=MAX_UPLOAD + 2, expires_after()).prop_map(|(owner, bytes, expires_after)| {
        Op::Create {
            owner,
            bytes,
            expires_after,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => create(),
        6 => (
            target(),
            prop_oneof![3 => (0..=MAX_PART + 1).prop_map(PartSize::Fixed), 3 => Just(PartSize::Remainder)],
        )
            .prop_map(|(target, size)| Op::AddPart { target, size }),
        4 => (target(), part_list(), md5_choice())
            .prop_map(|(target, list, md5)| Op::Complete { target, list, md5 }),
        1 => target().prop_map(|target| Op::Cancel { target }),
        2 => prop_oneof![
            6 => prop_oneof![Just(1_u64), Just(9), Just(10)],
            2 => prop_oneof![Just(49), Just(99), Just(100), Just(101), Just(250)],
        ]
        .prop_map(Op::Advance),
        1 => prop_oneof![Just(1_u64), Just(100), Just(250)].prop_map(Op::StepBack),
        1 => (0..2_usize, prop::bool::weighted(0.8), expires_after()).prop_map(
            |(owner, known_purpose, expires_after)| Op::CreateFile { owner, known_purpose, expires_after }
        ),
        1 => (any::<Index>(), prop::bool::weighted(0.1))
            .prop_map(|(file, stranger)| Op::DeleteFile { file, stranger }),
        2 => Just(Op::Sweep),
        1 => Just(Op::Restart),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, PartialEq)]
enum ModelState {
    Pending,
    Cancelled,
    Completed {
        part_ids: Vec<PartId>,
        md5: Option<String>,
        file: usize,
    },
}

#[derive(Debug, Clone)]
struct ModelUpload {
    id: UploadId,
    owner: usize,
    bytes: u64,
    created_at: u64,
    expires_at: u64,
    expires_after: Option<u64>,
    parts: Vec<(PartId, Vec<u8>)>,
    state: ModelState,
    forgotten: bool,
    /// A sweep removed its Parts' bytes while it was expired: expired for good.
    swept: bool,
}

#[derive(Debug, Clone)]
struct ModelFile {
    owner: usize,
    object: FileObject,
    content: Vec<u8>,
    /// The Upload and its listed Parts, for a completed Upload's File.
    manifest: Option<(UploadId, Vec<PartId>)>,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    uploads: Vec<ModelUpload>,
    files: Vec<ModelFile>,
    /// Parts sent so far; seeds each Part's synthetic content.
    parts_sent: u64,
}

impl ModelUpload {
    fn status(&self, now: u64) -> UploadStatus {
        match self.state {
            ModelState::Pending if now < self.expires_at && !self.swept => UploadStatus::Pending,
            ModelState::Pending => UploadStatus::Expired,
            ModelState::Cancelled => UploadStatus::Cancelled,
            ModelState::Completed { .. } => UploadStatus::Completed,
        }
    }
}

impl ModelFile {
    fn live(&self, now: u64) -> bool {
        !self.deleted && self.object.expires_at.is_none_or(|at| now < at)
    }
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

impl Model {
    fn wire(&self, upload: &ModelUpload) -> Upload {
        Upload {
            id: upload.id.clone(),
            object: "upload".to_owned(),
            bytes: upload.bytes,
            created_at: upload.created_at,
            filename: "data.bin".to_owned(),
            purpose: Purpose::UserData,
            status: upload.status(self.now),
            expires_at: upload.expires_at,
            file: match &upload.state {
                ModelState::Completed { file, .. } => Some(self.files[*file].object.clone()),
                _ => None,
            },
        }
    }

    /// The Upload a target names, whoever may see it.
    fn named(&self, target: &Target) -> Option<&ModelUpload> {
        match &target.upload {
            UploadChoice::Latest => self.uploads.last(),
            UploadChoice::Any(index) if !self.uploads.is_empty() => {
                self.uploads.get(index.index(self.uploads.len()))
            }
            UploadChoice::Any(_) | UploadChoice::Unknown => None,
        }
    }

    /// The position of the Upload a target names, if the sender may see it.
    fn visible(&self, target: &Target) -> Option<usize> {
        let upload = self.named(target)?;
        if target.stranger || upload.forgotten {
            return None;
        }
        self.uploads.iter().position(|known| known.id == upload.id)
    }

    /// The owner sending a request about a target.
    fn sender(&self, target: &Target) -> usize {
        self.named(target).map_or(0, |upload| {
            if target.stranger {
                1 - upload.owner
            } else {
                upload.owner
            }
        })
    }

    fn target_id(&self, target: &Target) -> UploadId {
        self.named(target).map_or_else(
            || UploadId::new("upload_unknown"),
            |upload| upload.id.clone(),
        )
    }

    fn create(
        &mut self,
        owner: usize,
        bytes: u64,
        expires_after: Option<u64>,
        minted: Option<UploadId>,
    ) -> Result<Upload, Refusal> {
        if bytes > MAX_UPLOAD {
            return Err(refusal(400, Some("bytes")));
        }
        if expires_after.is_some_and(|seconds| !FILE_TTL.contains(&seconds)) {
            return Err(refusal(400, Some("expires_after.seconds")));
        }
        self.uploads.push(ModelUpload {
            id: minted.unwrap_or_else(|| UploadId::new("upload_expected")),
            owner,
            bytes,
            created_at: self.now,
            expires_at: self.now + TTL,
            expires_after,
            parts: Vec::new(),
            state: ModelState::Pending,
            forgotten: false,
            swept: false,
        });
        Ok(self.wire(&self.uploads[self.uploads.len() - 1]))
    }

    /// The size and synthetic content of the next Part sent to a target.
    fn next_part(&mut self, target: &Target, size: &PartSize) -> Vec<u8> {
        self.parts_sent += 1;
        let size = match size {
            PartSize::Fixed(size) => *size,
            PartSize::Remainder => self.visible(target).map_or(1, |index| {
                let upload = &self.uploads[index];
                let sent: u64 = upload.parts.iter().map(|(_, data)| data.len() as u64).sum();
                upload.bytes.saturating_sub(sent)
            }),
        };
        (0..size)
            .map(|i| (self.parts_sent * 31 + i) as u8)
            .collect()
    }

    fn add_part(
        &mut self,
        target: &Target,
        data: Vec<u8>,
        minted: Option<PartId>,
    ) -> Result<UploadPart, Refusal> {
        let Some(index) = self.visible(target) else {
            return Err(refusal(404, Some("upload_id")));
        };
        let now = self.now;
        let upload = &mut self.uploads[index];
        if upload.status(now) != UploadStatus::Pending {
            return Err(refusal(400, None));
        }
        if data.len() as u64 > MAX_PART {
            return Err(refusal(413, Some("data")));
        }
        let sent: u64 = upload.parts.iter().map(|(_, data)| data.len() as u64).sum();
        if sent + data.len() as u64 > MAX_UPLOAD {
            return Err(refusal(400, Some("data")));
        }
        let id = minted.unwrap_or_else(|| PartId::new("part_expected"));
        upload.parts.push((id.clone(), data));
        Ok(UploadPart {
            id,
            object: "upload.part".to_owned(),
            created_at: now,
            upload_id: upload.id.clone(),
        })
    }

    /// The `part_ids` a list recipe names for a target.
    fn part_ids(&self, target: &Target, list: &PartList) -> Vec<PartId> {
        let own: Vec<PartId> = self
            .named(target)
            .map(|upload| upload.parts.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        match list {
            PartList::AllInOrder => own,
            PartList::AllReversed => own.into_iter().rev().collect(),
            PartList::Refs(refs) => refs
                .iter()
                .map(|part| match part {
                    PartRef::Own(index) if !own.is_empty() => own[index.index(own.len())].clone(),
                    PartRef::Foreign(upload, index) if !self.uploads.is_empty() => {
                        let other = &self.uploads[upload.index(self.uploads.len())];
                        if other.parts.is_empty() || other.id == self.target_id(target) {
                            PartId::new("part_unknown")
                        } else {
                            other.parts[index.index(other.parts.len())].0.clone()
                        }
                    }
                    _ => PartId::new("part_unknown"),
                })
                .collect(),
        }
    }

    /// The bytes the listed Parts of a target hold, in order (unknown ones skipped).
    fn content(&self, target: &Target, part_ids: &[PartId]) -> Vec<u8> {
        let Some(upload) = self.named(target) else {
            return Vec::new();
        };
        part_ids
            .iter()
            .filter_map(|id| upload.parts.iter().find(|(part, _)| part == id))
            .flat_map(|(_, data)| data.clone())
            .collect()
    }

    fn complete(
        &mut self,
        target: &Target,
        part_ids: &[PartId],
        md5: Option<&str>,
        minted: Option<FileId>,
    ) -> Result<Upload, Refusal> {
        if md5.is_some_and(|md5| md5.len() != 32) {
            return Err(refusal(400, Some("md5")));
        }
        let md5 = md5.map(str::to_ascii_lowercase);
        let Some(index) = self.visible(target) else {
            return Err(refusal(404, Some("upload_id")));
        };
        let now = self.now;
        let upload = &self.uploads[index];
        if let ModelState::Completed {
            part_ids: listed,
            md5: given,
            ..
        } = &upload.state
        {
            return if listed != part_ids {
                Err(refusal(400, Some("part_ids")))
            } else if *given != md5 {
                Err(refusal(400, Some("md5")))
            } else {
                Ok(self.wire(upload))
            };
        }
        if upload.status(now) != UploadStatus::Pending {
            return Err(refusal(400, None));
        }
        let mut total = 0;
        let mut content = Vec::new();
        for (position, id) in part_ids.iter().enumerate() {
            let Some((_, data)) = upload.parts.iter().find(|(part, _)| part == id) else {
                return Err(refusal(400, Some("part_ids")));
            };
            if part_ids[..position].contains(id) {
                return Err(refusal(400, Some("part_ids")));
            }
            total += data.len() as u64;
            content.extend_from_slice(data);
        }
        if part_ids.is_empty() || total != upload.bytes {
            return Err(refusal(400, Some("part_ids")));
        }
        if md5.as_ref().is_some_and(|md5| *md5 != md5_hex(&content)) {
            return Err(refusal(400, Some("md5")));
        }
        let object = FileObject {
            id: minted.unwrap_or_else(|| FileId::new("file-expected")),
            object: "file".to_owned(),
            bytes: upload.bytes,
            created_at: now,
            expires_at: upload.expires_after.map(|seconds| now + seconds),
            filename: "data.bin".to_owned(),
            purpose: Purpose::UserData,
            status: Some(FileStatus::Processed),
            status_details: None,
        };
        self.files.push(ModelFile {
            owner: upload.owner,
            object,
            content,
            manifest: Some((upload.id.clone(), part_ids.to_vec())),
            deleted: false,
        });
        self.uploads[index].state = ModelState::Completed {
            part_ids: part_ids.to_vec(),
            md5,
            file: self.files.len() - 1,
        };
        Ok(self.wire(&self.uploads[index]))
    }

    fn cancel(&mut self, target: &Target) -> Result<Upload, Refusal> {
        let Some(index) = self.visible(target) else {
            return Err(refusal(404, Some("upload_id")));
        };
        let upload = &mut self.uploads[index];
        match upload.status(self.now) {
            UploadStatus::Pending => upload.state = ModelState::Cancelled,
            UploadStatus::Cancelled => {}
            _ => return Err(refusal(400, None)),
        }
        Ok(self.wire(&self.uploads[index]))
    }

    fn create_file(
        &mut self,
        owner: usize,
        known_purpose: bool,
        expires_after: Option<u64>,
        content: Vec<u8>,
        minted: Option<FileId>,
    ) -> Result<FileObject, Refusal> {
        if !known_purpose {
            return Err(refusal(400, Some("purpose")));
        }
        if expires_after.is_some_and(|seconds| !FILE_TTL.contains(&seconds)) {
            return Err(refusal(400, Some("expires_after.seconds")));
        }
        let object = FileObject {
            id: minted.unwrap_or_else(|| FileId::new("file-expected")),
            object: "file".to_owned(),
            bytes: content.len() as u64,
            created_at: self.now,
            // Batch Files expire by default.
            expires_at: Some(self.now + expires_after.unwrap_or(BATCH_FILE_TTL)),
            filename: "notes.txt".to_owned(),
            purpose: Purpose::Batch,
            status: Some(FileStatus::Processed),
            status_details: None,
        };
        self.files.push(ModelFile {
            owner,
            object: object.clone(),
            content,
            manifest: None,
            deleted: false,
        });
        Ok(object)
    }

    /// The File a delete names and the owner sending it.
    fn delete_target(&self, file: Index, stranger: bool) -> (FileId, usize) {
        self.files
            .get(file.index(self.files.len().max(1)))
            .map_or_else(
                || (FileId::new("file-unknown"), 0),
                |file| {
                    (
                        file.object.id.clone(),
                        if stranger { 1 - file.owner } else { file.owner },
                    )
                },
            )
    }

    fn delete_file(&mut self, id: &FileId, sender: usize) -> Result<FileId, Refusal> {
        let now = self.now;
        let Some(file) = self
            .files
            .iter_mut()
            .find(|file| file.object.id == *id && file.owner == sender && file.live(now))
        else {
            return Err(refusal(404, Some("file_id")));
        };
        file.deleted = true;
        Ok(id.clone())
    }

    /// Finished Uploads past their retention (`expires_at` + TTL) are forgotten, unless
    /// completed with a File still alive.
    fn sweep(&mut self) {
        let now = self.now;
        for index in 0..self.uploads.len() {
            let upload = &self.uploads[index];
            let file_alive = match upload.state {
                ModelState::Completed { file, .. } => self.files[file].live(now),
                _ => false,
            };
            if now >= upload.expires_at + TTL && !file_alive {
                self.uploads[index].forgotten = true;
            } else if upload.status(now) == UploadStatus::Expired && !upload.parts.is_empty() {
                self.uploads[index].swept = true;
            }
        }
        // A swept File is gone for good, whatever the clock says later.
        for file in &mut self.files {
            if !file.live(now) {
                file.deleted = true;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run

fn md5_for(choice: Md5Choice, content: &[u8]) -> Option<String> {
    match choice {
        Md5Choice::Absent => None,
        Md5Choice::Right => Some(md5_hex(content)),
        Md5Choice::RightUpperCase => Some(md5_hex(content).to_uppercase()),
        Md5Choice::Wrong => Some(md5_hex(b"something else")),
        Md5Choice::Malformed => Some("d41d8cd98f00".to_owned()),
    }
}

/// Both answers agree; `true` when they are a refusal.
fn agree<T: PartialEq + std::fmt::Debug>(
    real: &Result<T, Refusal>,
    expected: &Result<T, Refusal>,
) -> Result<bool, TestCaseError> {
    prop_assert_eq!(real, expected);
    Ok(real.is_err())
}

/// The ledger (driven as a server drives it) and the model, in lockstep.
struct Run {
    scenario: Scenario,
    model: Model,
}

impl Run {
    fn new() -> Self {
        let scenario = Scenario::with_limits(limits());
        let model = Model {
            now: scenario.now,
            ..Model::default()
        };
        Self { scenario, model }
    }

    /// Runs one operation on both sides; `true` when it was refused.
    fn step(&mut self, op: &Op) -> Result<bool, TestCaseError> {
        match op {
            Op::Create {
                owner,
                bytes,
                expires_after,
            } => self.create(*owner, *bytes, *expires_after),
            Op::AddPart { target, size } => self.add_part(target, size),
            Op::Complete { target, list, md5 } => self.complete(target, list, *md5),
            Op::Cancel { target } => {
                let sender = owner(self.model.sender(target));
                let id = self.model.target_id(target);
                let real = verdict(self.scenario.cancel(&sender, &id));
                agree(&real, &self.model.cancel(target))
            }
            Op::Advance(seconds) => {
                self.scenario.now += seconds;
                self.model.now += seconds;
                Ok(false)
            }
            Op::StepBack(seconds) => {
                let now = self.model.now.saturating_sub(*seconds).max(START);
                self.scenario.now = now;
                self.model.now = now;
                Ok(false)
            }
            Op::CreateFile {
                owner,
                known_purpose,
                expires_after,
            } => self.create_file(*owner, *known_purpose, *expires_after),
            Op::DeleteFile { file, stranger } => {
                let (id, sender) = self.model.delete_target(*file, *stranger);
                let real = verdict(self.scenario.delete_file(&owner(sender), &id));
                prop_assert!(real.as_ref().ok().is_none_or(|deleted| deleted.deleted));
                let real = real.map(|deleted| deleted.id);
                agree(&real, &self.model.delete_file(&id, sender))
            }
            Op::Sweep => self.sweep(),
            Op::Restart => {
                self.scenario.restart();
                Ok(false)
            }
        }
    }

    fn create(
        &mut self,
        who: usize,
        bytes: u64,
        expires_after: Option<u64>,
    ) -> Result<bool, TestCaseError> {
        let policy =
            expires_after.map(|seconds| json!({"anchor": "created_at", "seconds": seconds}));
        let body = json!({"filename": "data.bin", "purpose": "user_data", "bytes": bytes,
            "mime_type": "application/octet-stream", "expires_after": policy});
        let real = verdict(self.scenario.create(&owner(who), &body));
        let minted = real.as_ref().ok().map(|upload| upload.id.clone());
        if let Some(id) = &minted {
            prop_assert!(
                self.model.uploads.iter().all(|upload| upload.id != *id),
                "fresh id"
            );
        }
        let expected = self.model.create(who, bytes, expires_after, minted);
        agree(&real, &expected)
    }

    fn add_part(&mut self, target: &Target, size: &PartSize) -> Result<bool, TestCaseError> {
        let data = self.model.next_part(target, size);
        let sender = owner(self.model.sender(target));
        let id = self.model.target_id(target);
        let real = verdict(self.scenario.add_part(&sender, &id, &data));
        let minted = real.as_ref().ok().map(|part| part.id.clone());
        let expected = self.model.add_part(target, data, minted);
        agree(&real, &expected)
    }

    fn complete(
        &mut self,
        target: &Target,
        list: &PartList,
        md5: Md5Choice,
    ) -> Result<bool, TestCaseError> {
        let part_ids = self.model.part_ids(target, list);
        let md5 = md5_for(md5, &self.model.content(target, &part_ids));
        let sender = owner(self.model.sender(target));
        let id = self.model.target_id(target);
        let body = json!({"part_ids": &part_ids, "md5": md5});
        let real = verdict(self.scenario.complete(&sender, &id, &body));
        let minted = real
            .as_ref()
            .ok()
            .and_then(|upload| upload.file.as_ref())
            .map(|file| file.id.clone());
        let files_before = self.model.files.len();
        let expected = self
            .model
            .complete(target, &part_ids, md5.as_deref(), minted);
        self.check_new_file_id(files_before)?;
        agree(&real, &expected)
    }

    fn create_file(
        &mut self,
        who: usize,
        known_purpose: bool,
        expires_after: Option<u64>,
    ) -> Result<bool, TestCaseError> {
        self.model.parts_sent += 1;
        let content = vec![self.model.parts_sent as u8; 3];
        let purpose = if known_purpose { "batch" } else { "moderation" };
        let policy = expires_after.map(ExpiresAfter::after_creation);
        let real = verdict(
            self.scenario
                .create_file(&owner(who), purpose, &content, policy),
        );
        let minted = real.as_ref().ok().map(|file| file.id.clone());
        let files_before = self.model.files.len();
        let expected = self
            .model
            .create_file(who, known_purpose, expires_after, content, minted);
        self.check_new_file_id(files_before)?;
        agree(&real, &expected)
    }

    /// A File the model just added has an id no earlier File had.
    fn check_new_file_id(&self, files_before: usize) -> Result<(), TestCaseError> {
        let (earlier, added) = self.model.files.split_at(files_before);
        for file in added {
            prop_assert!(
                earlier
                    .iter()
                    .all(|known| known.object.id != file.object.id),
                "file id {} minted twice",
                file.object.id
            );
        }
        Ok(())
    }

    fn sweep(&mut self) -> Result<bool, TestCaseError> {
        let steps = self.scenario.sweep();
        check_sweep(&steps, &self.model)?;
        self.model.sweep();
        let kept: Vec<&UploadId> = self.scenario.ledger.uploads.keys().collect();
        let mut expected: Vec<&UploadId> = self
            .model
            .uploads
            .iter()
            .filter(|upload| !upload.forgotten)
            .map(|upload| &upload.id)
            .collect();
        expected.sort();
        prop_assert_eq!(kept, expected);
        Ok(false)
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        let before = run.scenario.records();
        if run.step(op)? {
            prop_assert_eq!(
                &run.scenario.records(),
                &before,
                "a refused request changed nothing"
            );
        }
        check_invariants(&run.scenario, &run.model)?;
    }
    Ok(())
}

/// A sweep never touches a live File's Parts or a pending Upload that has not expired.
fn check_sweep(steps: &[Step], model: &Model) -> Result<(), TestCaseError> {
    let now = model.now;
    for step in steps {
        let (upload_id, part_ids) = match step {
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => (upload_id, part_ids.clone()),
            Step::RemoveUpload(upload_id) => (upload_id, Vec::new()),
            // Marking an expired Upload's Parts removed, before they go: nothing else.
            Step::SaveUpload(record) => {
                let upload = model.uploads.iter().find(|upload| upload.id == record.id);
                prop_assert!(
                    record.parts_removed
                        && upload.is_some_and(|upload| upload.status(now) == UploadStatus::Expired),
                    "a sweep saves only the mark of an expired Upload: {:?}",
                    record
                );
                continue;
            }
            Step::RemoveFile(id) => {
                let file = model.files.iter().find(|file| file.object.id == *id);
                prop_assert!(
                    file.is_none_or(|file| !file.live(now)),
                    "removes live {}",
                    id
                );
                continue;
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "a sweep saves nothing: {other:?}"
                )));
            }
        };
        let upload = model.uploads.iter().find(|upload| upload.id == *upload_id);
        prop_assert!(
            upload.is_none_or(|upload| upload.status(now) != UploadStatus::Pending),
            "touches pending {}",
            upload_id
        );
        for file in model.files.iter().filter(|file| file.live(now)) {
            if let Some((holder, listed)) = &file.manifest {
                prop_assert!(holder != upload_id || part_ids.iter().all(|id| !listed.contains(id)));
                prop_assert!(
                    holder != upload_id || !matches!(step, Step::RemoveUpload(_)),
                    "removes the Upload of live {}",
                    file.object.id
                );
            }
        }
    }
    Ok(())
}

fn check_invariants(scenario: &Scenario, model: &Model) -> Result<(), TestCaseError> {
    let now = model.now;
    // What was persisted is what the ledger holds.
    let (uploads, files) = scenario.records();
    prop_assert_eq!(
        uploads,
        scenario.saved_uploads.values().cloned().collect::<Vec<_>>()
    );
    prop_assert_eq!(
        files,
        scenario.saved_files.values().cloned().collect::<Vec<_>>()
    );
    // Pending Parts are still on disk.
    for upload in model
        .uploads
        .iter()
        .filter(|upload| !upload.forgotten && upload.status(now) == UploadStatus::Pending)
    {
        for (part, data) in &upload.parts {
            let stored = scenario.disk_parts.get(&(upload.id.clone(), part.clone()));
            prop_assert_eq!(
                stored,
                Some(data),
                "bytes of {} of pending {}",
                part,
                upload.id
            );
        }
    }
    // Live Files read back whole, through the listed Parts in order.
    for file in model.files.iter().filter(|file| file.live(now)) {
        let who = owner(file.owner);
        let id = &file.object.id;
        let record = scenario.ledger.file_manifest(&who, id, now);
        prop_assert!(record.is_ok(), "live {} is found", id);
        if let (Ok(record), Some((upload_id, listed))) = (record, &file.manifest) {
            prop_assert_eq!(record.upload_id.as_ref(), Some(upload_id));
            prop_assert_eq!(&record.part_ids, listed);
        }
        prop_assert_eq!(scenario.content(&who, id).ok(), Some(file.content.clone()));
        prop_assert_eq!(
            scenario.ledger.retrieve_file(&who, id, now).ok(),
            Some(file.object.clone())
        );
    }
    // Each owner's list is the model's live Files, newest first (ties by id).
    for index in 0..2 {
        let list = scenario
            .ledger
            .list_files(&owner(index), &ListFilesQuery::default(), now)
            .map_err(|rejection| TestCaseError::fail(rejection.to_string()))?;
        let mut expected: Vec<&FileObject> = model
            .files
            .iter()
            .filter(|file| file.owner == index && file.live(now))
            .map(|file| &file.object)
            .collect();
        expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let listed: Vec<&FileObject> = list.data.iter().collect();
        prop_assert_eq!(listed, expected);
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_ledger_agrees_with_the_reference_model(
        first in create(),
        rest in prop::collection::vec(op(), 0..60),
    ) {
        let ops: Vec<Op> = std::iter::once(first).chain(rest).collect();
        run(&ops)?;
    }
}
