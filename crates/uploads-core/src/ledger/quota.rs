//! Per-owner quotas ([`Limits::quota_bytes`], [`Limits::quota_files`]): what an owner keeps
//! ([`Usage`]) and the refusal of a create that would take it over.
//!
//! An owner's usage is its Files (their real size) plus its pending Uploads (their declared
//! `bytes`, each counting as the File it will become). A completed Upload's File replaces
//! its pending share; cancelled and expired Uploads, and deleted or expired Files, free theirs.
//! Under a bytes quota an Upload's Parts may hold at most its declared `bytes` and one
//! retried Part ([`parts_room`]): the Part that would take them past it is refused, so Parts
//! cannot store what the quota never counted (at most one Part more than declared per
//! pending Upload, a retried Part's copy, is stored uncounted).
//!
//! The ledger keeps running totals per owner, updated as changes are applied, so a create is
//! decided without scanning the records: its cost is the owner's pending Uploads that have
//! not expired (at most those created within `upload_ttl_secs`) plus its expired Files not
//! swept yet. A store that loads only some records for a request (the PostgreSQL backend)
//! counts the owner's usage itself and gives it with [`Ledger::set_usage`].
//!
//! Over a quota: 400 `invalid_request_error`, `code` null, as OpenAI's service answers when
//! an organization's file storage is full ("You have exceeded your file storage quota ...
//! Please delete old files or attempt with a smaller file size."); `param` names the field
//! that asks for the room: `bytes` on `POST /uploads`, `file` on `POST /files`.

use std::collections::BTreeMap;

use crate::limits::Limits;
use crate::rejection::Rejection;
use crate::types::{FileId, UploadId};

use super::{FileRecord, Ledger, Owner, RecordState, UploadRecord};

/// What one owner keeps, as its quotas count it: its Files (their real size) plus its pending
/// Uploads (their declared `bytes`, each counting as the File it will become). A completed
/// Upload's File replaces its pending share; cancelled and expired Uploads, and deleted or
/// expired Files, free theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Its Files' bytes plus its pending Uploads' declared `bytes`.
    pub bytes: u64,
    /// Its Files plus its pending Uploads.
    pub files: u64,
}

/// The running totals of every owner whose records a ledger holds.
#[derive(Debug, Clone, Default)]
pub(super) struct UsageIndex {
    owners: BTreeMap<Owner, OwnerTotals>,
    /// Usage a store counted itself (see [`Ledger::set_usage`]): it replaces the totals.
    given: BTreeMap<Owner, Usage>,
}

/// One owner's totals.
#[derive(Debug, Clone, Default)]
struct OwnerTotals {
    files: u64,
    file_bytes: u64,
    /// Files with an `expires_at`, by it: those past it are gone but counted in the totals
    /// until the sweep removes them.
    expiring_files: BTreeMap<(u64, FileId), u64>,
    /// Uploads pending in their record, by `expires_at`, with their declared bytes: those
    /// past it have expired and count for nothing.
    pending: BTreeMap<(u64, UploadId), u64>,
}

impl OwnerTotals {
    fn usage(&self, now: u64) -> Usage {
        let mut usage = Usage {
            bytes: self.file_bytes,
            files: self.files,
        };
        // Expired, not swept yet: at most a sweep interval's worth.
        for bytes in self
            .expiring_files
            .range(..(now.saturating_add(1), FileId::new("")))
            .map(|(_, bytes)| bytes)
        {
            usage.bytes = usage.bytes.saturating_sub(*bytes);
            usage.files = usage.files.saturating_sub(1);
        }
        // Pending and not expired (`expires_at > now`).
        for bytes in self
            .pending
            .range((now.saturating_add(1), UploadId::new(""))..)
            .map(|(_, bytes)| bytes)
        {
            usage.bytes = usage.bytes.saturating_add(*bytes);
            usage.files = usage.files.saturating_add(1);
        }
        usage
    }

    fn is_empty(&self) -> bool {
        self.files == 0 && self.pending.is_empty()
    }
}

impl UsageIndex {
    /// Counts an Upload record the ledger now holds.
    pub(super) fn add_upload(&mut self, record: &UploadRecord) {
        if counts_as_pending(record) {
            self.owners
                .entry(record.owner.clone())
                .or_default()
                .pending
                .insert((record.expires_at, record.id.clone()), record.bytes);
        }
    }

    /// Stops counting an Upload record the ledger no longer holds (or replaces).
    pub(super) fn remove_upload(&mut self, record: &UploadRecord) {
        if let Some(totals) = self.owners.get_mut(&record.owner) {
            totals
                .pending
                .remove(&(record.expires_at, record.id.clone()));
            if totals.is_empty() {
                self.owners.remove(&record.owner);
            }
        }
    }

    /// Counts a File record the ledger now holds.
    pub(super) fn add_file(&mut self, record: &FileRecord) {
        let totals = self.owners.entry(record.owner.clone()).or_default();
        totals.files += 1;
        totals.file_bytes = totals.file_bytes.saturating_add(record.file.bytes);
        if let Some(at) = record.file.expires_at {
            totals
                .expiring_files
                .insert((at, record.id().clone()), record.file.bytes);
        }
    }

    /// Stops counting a File record the ledger no longer holds (or replaces).
    pub(super) fn remove_file(&mut self, record: &FileRecord) {
        if let Some(totals) = self.owners.get_mut(&record.owner) {
            totals.files = totals.files.saturating_sub(1);
            totals.file_bytes = totals.file_bytes.saturating_sub(record.file.bytes);
            if let Some(at) = record.file.expires_at {
                totals.expiring_files.remove(&(at, record.id().clone()));
            }
            if totals.is_empty() {
                self.owners.remove(&record.owner);
            }
        }
    }
}

/// Whether an Upload's declared bytes count while it has not expired: pending in its record,
/// and not marked expired by the sweep.
fn counts_as_pending(record: &UploadRecord) -> bool {
    matches!(record.state, RecordState::Pending) && !record.parts_removed
}

impl Ledger {
    /// What `owner` keeps at `now` (see [`Usage`]): the usage a store gave
    /// with [`Ledger::set_usage`], else the ledger's own totals over the records it holds.
    pub fn usage(&self, owner: &Owner, now: u64) -> Usage {
        if let Some(given) = self.usage.given.get(owner) {
            return *given;
        }
        self.usage
            .owners
            .get(owner)
            .map(|totals| totals.usage(now))
            .unwrap_or_default()
    }

    /// Tells the ledger what `owner` keeps, for a store that loaded only the records of one
    /// request (the ledger's totals would count only those): counted by the store over all
    /// of the owner's records, at the `now` the request is decided at, under a lock that
    /// keeps the owner's other creates out until this one is made durable.
    pub fn set_usage(&mut self, owner: &Owner, usage: Usage) {
        self.usage.given.insert(owner.clone(), usage);
    }

    /// Refuses (400, see [`quota_rejection`]) a new File or Upload of `bytes` that would
    /// take `owner` over a quota; `param` names the field asking for the room.
    pub(super) fn check_quota(
        &self,
        owner: &Owner,
        bytes: u64,
        param: &str,
        now: u64,
    ) -> Result<(), Rejection> {
        if self.limits.quota_bytes.is_none() && self.limits.quota_files.is_none() {
            return Ok(());
        }
        quota_rejection(&self.limits, self.usage(owner, now), bytes, param).map_or(Ok(()), Err)
    }

    /// `POST /files`, before its body is read: refuses (400 `file`) when `owner` already
    /// keeps as many Files as its quota allows, or when the body's declared length
    /// (`Content-Length`) leaves more data than the bytes quota has room for, whatever the
    /// form's framing ([`crate::forms::min_file_bytes`]). A File that may fit is read; its
    /// exact size is checked again by [`Ledger::create_file`].
    pub fn check_create_file(
        &self,
        owner: &Owner,
        declared_length: Option<u64>,
        now: u64,
    ) -> Result<(), Rejection> {
        let least = declared_length.map_or(0, crate::forms::min_file_bytes);
        self.check_quota(owner, least, "file", now)
    }
}

/// Under a bytes quota, the most an Upload declaring `declared` bytes may hold in Parts: the
/// declared bytes, and one retried Part (a Part stored twice because its answer was lost) of
/// at most a Part's size. See [`Ledger::add_part`].
pub fn parts_room(limits: &Limits, declared: u64) -> u64 {
    declared.saturating_add(declared.min(limits.max_part_bytes))
}

/// How the message of a refusal over the bytes quota begins (OpenAI's words).
pub const STORAGE_QUOTA_EXCEEDED: &str = "You have exceeded your file storage quota.";
/// How the message of a refusal over the files quota begins.
pub const FILE_COUNT_QUOTA_EXCEEDED: &str = "You have exceeded your file count quota.";

/// Whether `rejection` is a refusal over a quota (for a server's counters and logs).
pub fn is_over_quota(rejection: &Rejection) -> bool {
    rejection.status == http::StatusCode::BAD_REQUEST
        && [STORAGE_QUOTA_EXCEEDED, FILE_COUNT_QUOTA_EXCEEDED]
            .iter()
            .any(|start| rejection.body.error.message.starts_with(start))
}

/// The refusal of a new File (or pending Upload) of `bytes` for an owner keeping `usage`, if
/// it would go over one of `limits`' quotas: 400 `invalid_request_error`, `code` null, as
/// OpenAI's service answers when a file storage is full, `param` naming the field that asks
/// for the room (`bytes` on `POST /uploads`, `file` on `POST /files`).
pub fn quota_rejection(
    limits: &Limits,
    usage: Usage,
    bytes: u64,
    param: &str,
) -> Option<Rejection> {
    if let Some(quota) = limits.quota_files
        && usage.files.saturating_add(1) > quota
    {
        return Some(Rejection::invalid(
            Some(param),
            format!(
                "{FILE_COUNT_QUOTA_EXCEEDED} Projects are limited to {quota} \
                 files, counting pending Uploads, and {} are in use. Please delete old files \
                 or cancel pending Uploads.",
                usage.files
            ),
        ));
    }
    if let Some(quota) = limits.quota_bytes
        && usage.bytes.saturating_add(bytes) > quota
    {
        return Some(Rejection::invalid(
            Some(param),
            format!(
                "{STORAGE_QUOTA_EXCEEDED} Projects are limited to {quota} \
                 bytes of files, counting pending Uploads; {} are in use and this request \
                 needs {bytes} more. Please delete old files or attempt with a smaller file \
                 size.",
                usage.bytes
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use proptest::prelude::*;

    use super::super::scenario::{Scenario, owner_a, owner_b};
    use super::*;
    use crate::types::ExpiresAfter;

    fn scenario(bytes: u64, files: u64) -> Scenario {
        Scenario::with_limits(
            Limits::default()
                .with_quota_bytes(bytes)
                .with_quota_files(files),
        )
    }

    /// The usage counted by walking every record: what the running totals must equal.
    fn scanned(ledger: &Ledger, owner: &Owner, now: u64) -> Usage {
        let mut usage = Usage::default();
        for entry in ledger.uploads.values() {
            let record = &entry.record;
            if record.owner == *owner
                && !record.is_expired(now)
                && matches!(record.state, RecordState::Pending)
            {
                usage.bytes += record.bytes;
                usage.files += 1;
            }
        }
        for record in ledger.files.values() {
            if record.owner == *owner && !record.is_expired(now) {
                usage.bytes += record.file.bytes;
                usage.files += 1;
            }
        }
        usage
    }

    #[track_caller]
    fn assert_over_quota(rejection: &Rejection, param: &str, starts: &str) {
        assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        assert_eq!(rejection.body.error.kind, "invalid_request_error");
        assert_eq!(rejection.param(), Some(param));
        assert_eq!(rejection.body.error.code, None);
        assert!(
            rejection.body.error.message.starts_with(starts),
            "{}",
            rejection.body.error.message
        );
    }

    #[test]
    fn under_a_bytes_quota_parts_hold_the_declared_bytes_and_one_retried_part_no_more() {
        let mut scenario = scenario(1000, 10);
        let upload = scenario.upload(&owner_a(), 10);
        let owner = owner_a();
        // The Part, and the same Part again (its first answer lost): 20 bytes.
        scenario.part(&owner, &upload, &[1; 10]);
        scenario.part(&owner, &upload, &[1; 10]);
        let before = scenario.records();
        let refused = scenario.add_part(&owner, &upload, &[1]).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.param(), Some("data"));
        assert!(
            refused.body.error.message.contains("at most 20"),
            "{}",
            refused.body.error.message
        );
        assert_eq!(scenario.records(), before, "nothing stored");
        // Without a bytes quota, Parts are bounded by the Upload limit alone.
        let mut unlimited = Scenario::with_limits(Limits::default().with_quota_files(10));
        let upload = unlimited.upload(&owner, 10);
        for _ in 0..3 {
            unlimited.part(&owner, &upload, &[1; 10]);
        }
        // The retried Part's room is at most a Part.
        let limits = Limits::default().with_max_part_bytes(64);
        assert_eq!(parts_room(&limits, 10), 20);
        assert_eq!(parts_room(&limits, 1000), 1064);
        assert_eq!(parts_room(&limits, u64::MAX), u64::MAX);
    }

    #[test]
    fn either_quota_alone_is_enforced() {
        let body = |bytes: u64| {
            serde_json::json!({"filename": "b", "purpose": "user_data", "bytes": bytes,
                "mime_type": "text/plain"})
        };
        let mut bytes_only = Scenario::with_limits(Limits::default().with_quota_bytes(10));
        let refused = bytes_only.create(&owner_a(), &body(11)).unwrap_err();
        assert!(is_over_quota(&refused), "{refused:?}");
        let mut files_only = Scenario::with_limits(Limits::default().with_quota_files(1));
        files_only.upload(&owner_a(), 1);
        let refused = files_only.create(&owner_a(), &body(1)).unwrap_err();
        assert!(is_over_quota(&refused), "{refused:?}");
    }

    #[test]
    fn an_owner_with_nothing_left_is_not_kept_in_the_totals() {
        let mut scenario = scenario(1000, 10);
        let owner = owner_a();
        let upload = scenario.upload(&owner, 10);
        assert!(scenario.ledger.usage.owners.contains_key(&owner));
        scenario.cancel(&owner, &upload).unwrap();
        // Keys come and go: an owner whose records no longer count costs no memory.
        assert!(!scenario.ledger.usage.owners.contains_key(&owner));
    }

    #[test]
    fn a_create_over_the_bytes_quota_is_refused_and_changes_nothing() {
        let mut scenario = scenario(100, 10);
        scenario.upload(&owner_a(), 60);
        let before = scenario.records();
        let body = serde_json::json!({"filename": "b", "purpose": "user_data", "bytes": 41,
            "mime_type": "text/plain"});
        let rejection = scenario.create(&owner_a(), &body).unwrap_err();
        assert_over_quota(
            &rejection,
            "bytes",
            "You have exceeded your file storage quota.",
        );
        assert_eq!(
            rejection.body.error.message,
            "You have exceeded your file storage quota. Projects are limited to 100 bytes of \
             files, counting pending Uploads; 60 are in use and this request needs 41 more. \
             Please delete old files or attempt with a smaller file size."
        );
        assert_eq!(scenario.records(), before);
        assert!(is_over_quota(&rejection));
        assert!(!is_over_quota(&Rejection::invalid(Some("bytes"), "x")));
        // What fits exactly is taken; another owner has a quota of its own.
        scenario.upload(&owner_a(), 40);
        scenario.upload(&owner_b(), 100);
        assert_eq!(
            scenario.ledger.usage(&owner_a(), scenario.now),
            Usage {
                bytes: 100,
                files: 2
            }
        );
        // A File by `POST /files` is refused on its real size.
        let rejection = scenario
            .create_file(&owner_a(), "user_data", b"x", None)
            .unwrap_err();
        assert_over_quota(
            &rejection,
            "file",
            "You have exceeded your file storage quota.",
        );
        scenario
            .create_file(&owner_a(), "user_data", b"", None)
            .unwrap();
    }

    #[test]
    fn a_create_over_the_files_quota_is_refused() {
        let mut scenario = scenario(1000, 2);
        scenario.upload(&owner_a(), 1);
        scenario
            .create_file(&owner_a(), "user_data", b"x", None)
            .unwrap();
        let before = scenario.records();
        let rejection = scenario
            .create_file(&owner_a(), "user_data", b"", None)
            .unwrap_err();
        assert_over_quota(
            &rejection,
            "file",
            "You have exceeded your file count quota.",
        );
        let body = serde_json::json!({"filename": "b", "purpose": "user_data", "bytes": 1,
            "mime_type": "text/plain"});
        let rejection = scenario.create(&owner_a(), &body).unwrap_err();
        assert_over_quota(
            &rejection,
            "bytes",
            "You have exceeded your file count quota.",
        );
        assert_eq!(scenario.records(), before);
        let head = scenario
            .ledger
            .check_create_file(&owner_a(), Some(10), scenario.now);
        assert_over_quota(
            &head.unwrap_err(),
            "file",
            "You have exceeded your file count quota.",
        );
    }

    #[test]
    fn cancelling_expiring_completing_and_deleting_move_the_usage() {
        let mut scenario = scenario(20, 3);
        let (a, b) = (owner_a(), owner_b());
        let cancelled = scenario.upload(&a, 10);
        scenario.cancel(&a, &cancelled).unwrap();
        assert_eq!(scenario.ledger.usage(&a, scenario.now), Usage::default());
        // Completed: its File counts its real size, in place of the declared bytes.
        let upload = scenario.upload(&a, 11);
        let hello = scenario.part(&a, &upload, b"hello ");
        let world = scenario.part(&a, &upload, b"world");
        // A retried Part past the declared size is taken (one Part's room), and the usage
        // still counts the declared bytes.
        scenario.part(&a, &upload, &[0; 11]);
        assert_eq!(
            scenario.ledger.usage(&a, scenario.now),
            Usage {
                bytes: 11,
                files: 1
            }
        );
        let done = scenario
            .complete_with(&a, &upload, &[&hello, &world])
            .unwrap();
        assert_eq!(
            scenario.ledger.usage(&a, scenario.now),
            Usage {
                bytes: 11,
                files: 1
            }
        );
        // Expired: frees its share at `expires_at`, before any sweep.
        scenario.upload(&a, 9);
        assert_eq!(
            scenario.ledger.usage(&a, scenario.now),
            Usage {
                bytes: 20,
                files: 2
            }
        );
        scenario.now += scenario.ledger.limits().upload_ttl_secs;
        assert_eq!(
            scenario.ledger.usage(&a, scenario.now),
            Usage {
                bytes: 11,
                files: 1
            }
        );
        scenario.sweep();
        assert_eq!(
            scenario.ledger.usage(&a, scenario.now),
            Usage {
                bytes: 11,
                files: 1
            }
        );
        // Deleted: frees its share.
        scenario.delete_file(&a, &done.file.unwrap().id).unwrap();
        assert_eq!(scenario.ledger.usage(&a, scenario.now), Usage::default());
        // A File that expires frees its share at its `expires_at`.
        let policy = ExpiresAfter {
            anchor: crate::types::ExpiresAfterAnchor::CreatedAt,
            seconds: 3600,
        };
        scenario
            .create_file(&b, "user_data", b"12345", Some(policy))
            .unwrap();
        assert_eq!(
            scenario.ledger.usage(&b, scenario.now),
            Usage { bytes: 5, files: 1 }
        );
        scenario.now += 3600;
        assert_eq!(scenario.ledger.usage(&b, scenario.now), Usage::default());
        // A restart counts the same.
        let now = scenario.now;
        let before = (
            scanned(&scenario.ledger, &a, now),
            scanned(&scenario.ledger, &b, now),
        );
        scenario.restart();
        assert_eq!(
            (
                scenario.ledger.usage(&a, now),
                scenario.ledger.usage(&b, now)
            ),
            before
        );
    }

    #[test]
    fn a_files_head_is_refused_only_when_no_file_of_its_length_can_fit() {
        let mut scenario = scenario(1_000_000, 10);
        scenario.upload(&owner_a(), 600_000);
        let now = scenario.now;
        let framing = crate::multipart::DecoderLimits::default().max_body_bytes(0);
        // 400,000 data bytes fit, whatever the framing.
        assert!(
            scenario
                .ledger
                .check_create_file(&owner_a(), Some(400_000 + framing), now)
                .is_ok()
        );
        assert!(
            scenario
                .ledger
                .check_create_file(&owner_a(), None, now)
                .is_ok()
        );
        let rejection = scenario
            .ledger
            .check_create_file(&owner_a(), Some(400_001 + framing), now)
            .unwrap_err();
        assert_over_quota(
            &rejection,
            "file",
            "You have exceeded your file storage quota.",
        );
        // Without quotas nothing is refused.
        let free = Scenario::new();
        assert!(
            free.ledger
                .check_create_file(&owner_a(), Some(u64::MAX), now)
                .is_ok()
        );
    }

    #[test]
    fn a_usage_given_by_the_store_replaces_the_totals() {
        let mut scenario = scenario(100, 10);
        scenario.upload(&owner_a(), 10);
        scenario.ledger.set_usage(
            &owner_a(),
            Usage {
                bytes: 95,
                files: 1,
            },
        );
        let body = serde_json::json!({"filename": "b", "purpose": "user_data", "bytes": 6,
            "mime_type": "text/plain"});
        assert_over_quota(
            &scenario.create(&owner_a(), &body).unwrap_err(),
            "bytes",
            "You have exceeded your file storage quota.",
        );
    }

    /// One step of the property test below.
    #[derive(Debug, Clone)]
    enum Op {
        Create {
            owner_b: bool,
            bytes: u64,
        },
        Part {
            index: usize,
        },
        Complete {
            index: usize,
        },
        Cancel {
            index: usize,
        },
        File {
            owner_b: bool,
            bytes: u8,
            expires: bool,
        },
        Delete {
            index: usize,
        },
        Advance {
            secs: u64,
        },
        Sweep,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<bool>(), 0u64..40).prop_map(|(owner_b, bytes)| Op::Create { owner_b, bytes }),
            any::<usize>().prop_map(|index| Op::Part { index }),
            any::<usize>().prop_map(|index| Op::Complete { index }),
            any::<usize>().prop_map(|index| Op::Cancel { index }),
            (any::<bool>(), any::<u8>(), any::<bool>()).prop_map(|(owner_b, bytes, expires)| {
                Op::File {
                    owner_b,
                    bytes: bytes % 30,
                    expires,
                }
            }),
            any::<usize>().prop_map(|index| Op::Delete { index }),
            (0u64..5000).prop_map(|secs| Op::Advance { secs }),
            Just(Op::Sweep),
            Just(Op::Restart),
        ]
    }

    proptest! {
        /// Whatever happens, the running totals equal a walk over every record, and no owner
        /// is ever taken over its quotas.
        #[test]
        fn the_totals_are_a_walk_over_the_records(ops in prop::collection::vec(op(), 1..60)) {
            let (quota_bytes, quota_files) = (100, 4);
            let mut scenario = scenario(quota_bytes, quota_files);
            let mut uploads: Vec<(Owner, UploadId)> = Vec::new();
            let mut files: Vec<(Owner, FileId)> = Vec::new();
            for op in ops {
                match op {
                    Op::Create { owner_b: b, bytes } => {
                        let owner = if b { owner_b() } else { owner_a() };
                        let body = serde_json::json!({"filename": "b", "purpose": "user_data",
                            "bytes": bytes, "mime_type": "text/plain"});
                        if let Ok(upload) = scenario.create(&owner, &body) {
                            uploads.push((owner, upload.id));
                        }
                    }
                    Op::Part { index } if !uploads.is_empty() => {
                        let (owner, id) = &uploads[index % uploads.len()];
                        let _ = scenario.add_part(owner, id, b"x");
                    }
                    Op::Complete { index } if !uploads.is_empty() => {
                        let (owner, id) = &uploads[index % uploads.len()];
                        let record = scenario.ledger.uploads.get(id).map(|entry| entry.record.clone());
                        if let Some(record) = record {
                            let ids: Vec<_> = record.parts.iter().map(|part| part.id.clone()).collect();
                            let listed: Vec<&crate::types::PartId> = ids.iter().collect();
                            if let Ok(done) = scenario.complete_with(owner, id, &listed)
                                && let Some(file) = done.file
                            {
                                files.push((owner.clone(), file.id));
                            }
                        }
                    }
                    Op::Cancel { index } if !uploads.is_empty() => {
                        let (owner, id) = &uploads[index % uploads.len()];
                        let _ = scenario.cancel(owner, id);
                    }
                    Op::File { owner_b: b, bytes, expires } => {
                        let owner = if b { owner_b() } else { owner_a() };
                        let policy = expires.then_some(ExpiresAfter {
                            anchor: crate::types::ExpiresAfterAnchor::CreatedAt,
                            seconds: 3600,
                        });
                        if let Ok(file) = scenario.create_file(&owner, "user_data", &vec![0; bytes.into()], policy) {
                            files.push((owner, file.id));
                        }
                    }
                    Op::Delete { index } if !files.is_empty() => {
                        let (owner, id) = &files[index % files.len()];
                        let _ = scenario.delete_file(owner, id);
                    }
                    Op::Advance { secs } => scenario.now += secs,
                    Op::Sweep => {
                        scenario.sweep();
                    }
                    Op::Restart => scenario.restart(),
                    Op::Part { .. } | Op::Complete { .. } | Op::Cancel { .. } | Op::Delete { .. } => {}
                }
                for owner in [owner_a(), owner_b()] {
                    let usage = scenario.ledger.usage(&owner, scenario.now);
                    prop_assert_eq!(usage, scanned(&scenario.ledger, &owner, scenario.now));
                    prop_assert!(usage.bytes <= quota_bytes && usage.files <= quota_files);
                }
            }
        }
    }
}
