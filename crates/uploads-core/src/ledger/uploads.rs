//! The Uploads endpoints of the ledger: `POST /uploads`, `POST /uploads/{id}/parts`,
//! `POST /uploads/{id}/complete` and `POST /uploads/{id}/cancel` (the state graph is in the
//! [module docs](super)).
//!
//! An Upload of another owner answers exactly like one that does not exist (404); one that
//! is no longer pending answers 400, never 409, because the SDKs retry 409.

use std::collections::{HashMap, HashSet};

use crate::rejection::Rejection;
use crate::types::{FileObject, FileStatus, PartId, Upload, UploadId, UploadPart, UploadStatus};

use super::change::Guard;
use super::complete_request::{CompleteRequest, parse_complete_request};
use super::{
    Change, Completion, FileRecord, IdSource, Ledger, Owner, PartRecord, Planned, RecordState,
    Step, UploadEntry, UploadRecord, mint, parts_room,
};

/// The answer to [`Ledger::check_add_part`]: the Part may be sent, and these are the ids to
/// store its bytes under until [`Ledger::add_part`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "store the Part's bytes under this slot, then call Ledger::add_part"]
pub struct PartSlot {
    pub(super) upload_id: UploadId,
    pub(super) part_id: PartId,
}

impl PartSlot {
    /// The Upload the Part is for.
    pub fn upload_id(&self) -> &UploadId {
        &self.upload_id
    }

    /// The id the Part will have.
    pub fn part_id(&self) -> &PartId {
        &self.part_id
    }
}

/// What [`Ledger::plan_complete`] decided.
///
/// Exhaustive on purpose: the server MUST act on every plan, so a new one is a compile error
/// there, not a 500 at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "answer the replay, or verify the Parts and call Ledger::finish_complete"]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and matched at once; a box would only add an allocation"
)]
pub enum CompletePlan {
    /// The Upload is already completed with the same `part_ids` and md5: answer 200 with
    /// this Upload (the same File); there is nothing to persist.
    Replay(Upload),
    /// The request is acceptable so far: read the listed Parts in order, compute their md5
    /// if [`Verification::expected_md5`] is set, then call [`Ledger::finish_complete`].
    Verify(Verification),
}

/// A complete request that passed every check but the md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    upload_id: UploadId,
    request: CompleteRequest,
    parts: Vec<PartRecord>,
}

impl Verification {
    /// The Upload to complete.
    pub fn upload_id(&self) -> &UploadId {
        &self.upload_id
    }

    /// The listed Parts in File order: the order to read (and hash) their bytes in.
    pub fn parts(&self) -> &[PartRecord] {
        &self.parts
    }

    /// The md5 the bytes must have (lower-case hex), when the request gave one.
    pub fn expected_md5(&self) -> Option<&str> {
        self.request.md5.as_deref()
    }
}

/// The outcome of checking a complete request against the Upload.
enum Completable<'a> {
    /// Completed before with the same request.
    Replay(&'a UploadEntry),
    /// Pending, and the listed Parts add up; the listed Parts in order.
    Ready {
        entry: &'a UploadEntry,
        parts: Vec<PartRecord>,
    },
}

/// What a refused request on a finished Upload was trying to do, for its message.
const ADD_PARTS: &str = "add parts to";
/// See [`ADD_PARTS`].
const COMPLETE: &str = "complete";
/// See [`ADD_PARTS`].
const CANCEL: &str = "cancel";

impl Ledger {
    /// `POST /uploads`: validates the body (400 naming the first bad `param`, with every
    /// problem's message), refuses an Upload that would take `owner` over a quota (400
    /// `bytes`, see [`Usage`](super::Usage)) and creates a pending Upload expiring
    /// `upload_ttl_secs` from now.
    pub fn create_upload(
        &self,
        owner: &Owner,
        body: &[u8],
        now: u64,
        ids: &mut impl IdSource,
    ) -> Result<Planned<Upload>, Rejection> {
        let request = self
            .limits
            .validate_create_upload(body)
            .map_err(|errors| errors.to_rejection())?;
        self.check_quota(owner, request.bytes, "bytes", now)?;
        let id = mint(
            || ids.upload_id(),
            |id| self.uploads.contains_key(id),
            self.uploads.len(),
        )?;
        let record = UploadRecord {
            owner: owner.clone(),
            id: id.clone(),
            created_at: now,
            filename: request.filename,
            purpose: request.purpose,
            bytes: request.bytes,
            mime_type: request.mime_type,
            expires_at: now.saturating_add(self.limits.upload_ttl_secs),
            expires_after: request.expires_after,
            parts: Vec::new(),
            state: RecordState::Pending,
            parts_removed: false,
        };
        let response = record.to_upload(now);
        let change = Change::new(
            vec![Step::SaveUpload(record)],
            vec![Guard::Upload { id, revision: None }],
        );
        Ok(Planned {
            change: Some(change),
            response,
        })
    }

    /// `POST /uploads/{id}/parts`, before the body is read: 404 for an Upload that does not
    /// exist or is another owner's; 400 when it is completed, cancelled or expired. When the
    /// Part may come, names it: the server stores the bytes under the slot's ids (not yet
    /// durable) and then calls [`Ledger::add_part`].
    pub fn check_add_part(
        &self,
        owner: &Owner,
        upload_id: &UploadId,
        now: u64,
        ids: &mut impl IdSource,
    ) -> Result<PartSlot, Rejection> {
        let entry = self.pending_entry(owner, upload_id, now, ADD_PARTS)?;
        self.check_part_count(entry)?;
        // Over a tallied record only the loaded Parts are known: a store that loads so
        // refuses a Part id used twice itself (a unique key).
        let record = &entry.record;
        let part_id = mint(
            || ids.part_id(),
            |id| record.part(id).is_some(),
            record.parts.len(),
        )?;
        Ok(PartSlot {
            upload_id: upload_id.clone(),
            part_id,
        })
    }

    /// `POST /uploads/{id}/parts`, once the Part's length is known: checks the Upload again
    /// (it may have changed while the body streamed), then 413 `param: "data"` when the Part
    /// is over `max_part_bytes` (a server may stop reading past the limit and pass any larger
    /// count), and 400 `param: "data"` when the Upload's Parts would add up to more than
    /// `max_upload_bytes`. Parts beyond the declared `bytes` are accepted up to that limit:
    /// retried Parts are normal, and only listed Parts count on complete. Under a bytes quota,
    /// up to [`parts_room`] only (400 `param: "data"`), so
    /// that Parts cannot store what the quota did not count.
    ///
    /// On success the server makes the Part's bytes durable first, then the change's steps.
    pub fn add_part(
        &self,
        owner: &Owner,
        slot: &PartSlot,
        part_bytes: u64,
        now: u64,
    ) -> Result<Planned<UploadPart>, Rejection> {
        let entry = self.pending_entry(owner, &slot.upload_id, now, ADD_PARTS)?;
        let record = &entry.record;
        if part_bytes > self.limits.max_part_bytes {
            return Err(Rejection::too_large(
                Some("data"),
                format!(
                    "The Part's data is {part_bytes} bytes; a Part may hold at most {} bytes.",
                    self.limits.max_part_bytes
                ),
            ));
        }
        let total = entry.parts_total().saturating_add(part_bytes);
        if total > self.limits.max_upload_bytes {
            return Err(Rejection::invalid(
                Some("data"),
                format!(
                    "Adding this Part ({part_bytes} bytes) would bring the Parts of Upload {} \
                     to {total} bytes; an Upload may hold at most {} bytes.",
                    record.id, self.limits.max_upload_bytes
                ),
            ));
        }
        // Under a bytes quota, Parts may not store more than the quota counted for the
        // Upload: its declared bytes, and one retried Part.
        let room = parts_room(&self.limits, record.bytes);
        if self.limits.quota_bytes.is_some() && total > room {
            return Err(Rejection::invalid(
                Some("data"),
                format!(
                    "Adding this Part ({part_bytes} bytes) would bring the Parts of Upload {} \
                     to {total} bytes; it declared {} bytes, and under this server's storage \
                     quota its Parts may hold at most {room} (one retried Part more).",
                    record.id, record.bytes
                ),
            ));
        }
        self.check_part_count(entry)?;
        if record.part(&slot.part_id).is_some() {
            return Err(Rejection::server_error(format!(
                "Part {} was already added; a slot is used once.",
                slot.part_id
            )));
        }
        let part = PartRecord {
            id: slot.part_id.clone(),
            bytes: part_bytes,
            created_at: now,
        };
        let response = UploadPart {
            id: slot.part_id.clone(),
            object: "upload.part".to_owned(),
            created_at: now,
            upload_id: slot.upload_id.clone(),
        };
        Ok(Planned {
            change: Some(Change::new(
                vec![Step::AddPart {
                    upload_id: slot.upload_id.clone(),
                    part,
                }],
                vec![entry.guard()],
            )),
            response,
        })
    }

    /// 400 `param: "data"` when the Upload holds `max_parts_per_upload` Parts already.
    fn check_part_count(&self, entry: &UploadEntry) -> Result<(), Rejection> {
        let max = self.limits.max_parts_per_upload;
        let count = entry.part_count();
        if count >= max {
            return Err(Rejection::invalid(
                Some("data"),
                format!(
                    "Upload {} already has {count} Parts; an Upload may have at most {max} Parts.",
                    entry.record.id,
                ),
            ));
        }
        Ok(())
    }

    /// `POST /uploads/{id}/complete`, first half: validates the body in OpenAI's style
    /// (`'part_ids' is a required property`, unknown fields refused, an md5 that is not 32
    /// hex characters: 400 `param: "md5"`), then:
    /// * 404 for an Upload that does not exist or is another owner's;
    /// * completed before with the same `part_ids` and md5: [`CompletePlan::Replay`];
    ///   with a different list (or md5): 400 `param: "part_ids"` (or `"md5"`);
    /// * cancelled or expired: 400;
    /// * an empty list, an id that is not a Part of this Upload (unknown, or another
    ///   Upload's), an id listed twice: 400 `param: "part_ids"`;
    /// * listed Parts not adding up to the declared `bytes`: 400 `param: "part_ids"` naming
    ///   both numbers;
    /// * otherwise [`CompletePlan::Verify`].
    ///
    /// A refusal leaves the Upload as it was (pending stays pending).
    pub fn plan_complete(
        &self,
        owner: &Owner,
        upload_id: &UploadId,
        body: &[u8],
        now: u64,
    ) -> Result<CompletePlan, Rejection> {
        let request = parse_complete_request(body).map_err(|errors| errors.to_rejection())?;
        Ok(
            match self.check_completion(owner, upload_id, &request, now)? {
                Completable::Replay(entry) => CompletePlan::Replay(entry.record.to_upload(now)),
                Completable::Ready { parts, .. } => CompletePlan::Verify(Verification {
                    upload_id: upload_id.clone(),
                    request,
                    parts,
                }),
            },
        )
    }

    /// `POST /uploads/{id}/complete`, second half: `computed_md5` is the md5 of the listed
    /// Parts' bytes in order, which the server MUST compute when
    /// [`Verification::expected_md5`] is set (else 500). Checks everything again (the
    /// Upload may have been cancelled, expired or completed meanwhile; a complete that
    /// raced an identical one is answered as its replay), then 400 `param: "md5"` on a
    /// mismatch (the Upload stays pending). Otherwise the Upload becomes completed with a
    /// new File of the declared `bytes`, created now, `processed`, expiring
    /// `expires_after.seconds` from now when the Upload was created with `expires_after`.
    /// The File's manifest is the listed Parts; the bytes of unlisted Parts are removed.
    pub fn finish_complete(
        &self,
        owner: &Owner,
        verification: &Verification,
        computed_md5: Option<[u8; 16]>,
        now: u64,
        ids: &mut impl IdSource,
    ) -> Result<Planned<Upload>, Rejection> {
        let request = &verification.request;
        let entry = match self.check_completion(owner, &verification.upload_id, request, now)? {
            Completable::Replay(entry) => {
                return Ok(Planned {
                    change: None,
                    response: entry.record.to_upload(now),
                });
            }
            Completable::Ready { entry, .. } => entry,
        };
        if let Some(expected) = &request.md5 {
            let computed = computed_md5.map(|md5| to_hex(&md5)).ok_or_else(|| {
                Rejection::server_error("The md5 of the Upload's bytes was not computed.")
            })?;
            if computed != *expected {
                return Err(Rejection::invalid(
                    Some("md5"),
                    format!(
                        "The md5 of the uploaded bytes ({computed}) does not match the md5 \
                         given ({expected})."
                    ),
                ));
            }
        }
        let record = &entry.record;
        let file_id = self.new_file_id(ids)?;
        let file = FileObject {
            id: file_id.clone(),
            object: "file".to_owned(),
            bytes: record.bytes,
            created_at: now,
            expires_at: self.limits.file_expires_at(
                &record.purpose,
                record.expires_after.as_ref(),
                now,
            ),
            filename: record.filename.clone(),
            purpose: record.purpose.clone(),
            status: Some(FileStatus::Processed),
            status_details: None,
        };
        let listed: HashSet<&PartId> = request.part_ids.iter().collect();
        let unlisted: Vec<PartId> = record
            .parts
            .iter()
            .filter(|part| !listed.contains(&part.id))
            .map(|part| part.id.clone())
            .collect();
        let mut completed = record.clone();
        completed.state = RecordState::Completed(Completion {
            part_ids: request.part_ids.clone(),
            md5: request.md5.clone(),
            file: file.clone(),
        });
        let response = completed.to_upload(now);
        let mut steps = vec![
            // The File's record first: until the Upload's state file says completed, a
            // crash leaves it an orphan that `load` recognises.
            Step::SaveFile(FileRecord {
                owner: record.owner.clone(),
                file,
                upload_id: Some(record.id.clone()),
                part_ids: request.part_ids.clone(),
            }),
            Step::SaveUpload(completed),
        ];
        if !unlisted.is_empty() {
            steps.push(Step::RemoveParts {
                upload_id: record.id.clone(),
                part_ids: unlisted,
            });
        }
        let guards = vec![
            entry.guard(),
            Guard::File {
                id: file_id,
                exists: false,
            },
        ];
        Ok(Planned {
            change: Some(Change::new(steps, guards)),
            response,
        })
    }

    /// `POST /uploads/{id}/cancel`: 404 for an Upload that does not exist or is another
    /// owner's; a pending Upload becomes cancelled and its Parts' bytes are removed; a
    /// cancelled one is answered again, unchanged (200, nothing to persist); a completed or
    /// expired one is refused with 400 (there is nothing left to cancel).
    pub fn cancel_upload(
        &self,
        owner: &Owner,
        upload_id: &UploadId,
        now: u64,
    ) -> Result<Planned<Upload>, Rejection> {
        let entry = self.owned_upload(owner, upload_id)?;
        let record = entry.whole_record()?;
        if matches!(record.state, RecordState::Cancelled { .. }) {
            return Ok(Planned {
                change: None,
                response: record.to_upload(now),
            });
        }
        ensure_pending(record, now, CANCEL)?;
        let mut cancelled = record.clone();
        cancelled.state = RecordState::Cancelled { at: now };
        let response = cancelled.to_upload(now);
        let mut steps = vec![Step::SaveUpload(cancelled)];
        if !record.parts.is_empty() {
            steps.push(Step::RemoveParts {
                upload_id: record.id.clone(),
                part_ids: record.part_ids(),
            });
        }
        Ok(Planned {
            change: Some(Change::new(steps, vec![entry.guard()])),
            response,
        })
    }

    /// The Upload, when it exists and is the owner's; else 404.
    fn owned_upload(&self, owner: &Owner, id: &UploadId) -> Result<&UploadEntry, Rejection> {
        self.uploads
            .get(id)
            .filter(|entry| entry.record.owner == *owner)
            .ok_or_else(|| Rejection::no_such_upload(id))
    }

    /// The Upload, when it is the owner's and pending; else 404 or 400.
    fn pending_entry(
        &self,
        owner: &Owner,
        id: &UploadId,
        now: u64,
        action: &str,
    ) -> Result<&UploadEntry, Rejection> {
        let entry = self.owned_upload(owner, id)?;
        ensure_pending(&entry.record, now, action)?;
        Ok(entry)
    }

    /// The checks of a complete request that do not need the bytes.
    fn check_completion(
        &self,
        owner: &Owner,
        upload_id: &UploadId,
        request: &CompleteRequest,
        now: u64,
    ) -> Result<Completable<'_>, Rejection> {
        let entry = self.owned_upload(owner, upload_id)?;
        let record = entry.whole_record()?;
        if let RecordState::Completed(completion) = &record.state {
            return if completion.part_ids != request.part_ids {
                Err(Rejection::invalid(
                    Some("part_ids"),
                    format!(
                        "Upload {upload_id} is already completed with a different list of part_ids."
                    ),
                ))
            } else if completion.md5 != request.md5 {
                Err(Rejection::invalid(
                    Some("md5"),
                    format!("Upload {upload_id} is already completed with a different md5."),
                ))
            } else {
                Ok(Completable::Replay(entry))
            };
        }
        ensure_pending(record, now, COMPLETE)?;
        let parts = listed_parts(record, &request.part_ids)?;
        let total = parts
            .iter()
            .fold(0_u64, |total, part| total.saturating_add(part.bytes));
        if total != record.bytes {
            return Err(Rejection::invalid(
                Some("part_ids"),
                format!(
                    "The number of bytes uploaded upon completion ({total}) does not match the \
                     number of bytes initially specified when creating the Upload ({}).",
                    record.bytes
                ),
            ));
        }
        Ok(Completable::Ready { entry, parts })
    }
}

/// The listed Parts of the Upload in order; 400 `param: "part_ids"` for an empty list, an
/// id that is not one of the Upload's Parts, or an id listed twice.
fn listed_parts(record: &UploadRecord, part_ids: &[PartId]) -> Result<Vec<PartRecord>, Rejection> {
    if part_ids.is_empty() {
        return Err(Rejection::invalid(
            Some("part_ids"),
            "[] is too short - 'part_ids'",
        ));
    }
    let parts: HashMap<&PartId, &PartRecord> =
        record.parts.iter().map(|part| (&part.id, part)).collect();
    let mut seen = HashSet::with_capacity(part_ids.len());
    let mut listed = Vec::with_capacity(part_ids.len());
    for id in part_ids {
        let Some(&part) = parts.get(id) else {
            return Err(Rejection::invalid(
                Some("part_ids"),
                format!("Part {id} does not belong to Upload {}.", record.id),
            ));
        };
        if !seen.insert(id) {
            return Err(Rejection::invalid(
                Some("part_ids"),
                format!("Part {id} is listed more than once."),
            ));
        }
        listed.push(part.clone());
    }
    Ok(listed)
}

/// 400 unless the Upload is pending at `now` (never 409: the SDKs retry 409). `action`
/// completes the message "Cannot … an Upload that is already …".
fn ensure_pending(record: &UploadRecord, now: u64, action: &str) -> Result<(), Rejection> {
    match record.status(now) {
        UploadStatus::Pending => Ok(()),
        status => Err(Rejection::invalid(
            None,
            format!("Cannot {action} an Upload that is already {status}."),
        )),
    }
}

/// Lower-case hex, as md5 checksums are written.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|&byte| {
            [
                char::from(DIGITS[usize::from(byte >> 4)]),
                char::from(DIGITS[usize::from(byte & 0x0f)]),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::super::scenario::{START, Scenario, assert_rejected, hello_world, owner_a, owner_b};
    use super::*;
    use crate::limits::Limits;
    use crate::types::{ExpiresAfter, FileId};

    /// md5 of `"hello world"`.
    const HELLO_WORLD_MD5: &str = "5eb63bbbe01eeed093cb22bb8f5acdc3";

    #[test]
    fn create_returns_a_pending_upload_expiring_after_the_ttl() {
        let mut scenario = Scenario::new();
        let body = json!({"filename": "train.jsonl", "purpose": "fine-tune", "bytes": 2_147_483_648_u64,
            "mime_type": "text/jsonl", "expires_after": {"anchor": "created_at", "seconds": 7200}});
        let upload = scenario.create(&owner_a(), &body).unwrap();
        assert_eq!(
            serde_json::to_value(&upload).unwrap(),
            json!({"id": "upload_1", "object": "upload", "bytes": 2_147_483_648_u64,
                "created_at": START, "filename": "train.jsonl", "purpose": "fine-tune",
                "status": "pending", "expires_at": START + 3600})
        );
        let record = scenario.record(&upload.id);
        assert_eq!(record.mime_type, "text/jsonl");
        assert_eq!(
            record.expires_after,
            Some(ExpiresAfter::after_creation(7200))
        );
        assert_eq!(
            scenario.saved_uploads[&upload.id], *record,
            "persisted as planned"
        );
    }

    #[test]
    fn an_invalid_create_is_a_400_naming_the_first_param_and_creates_nothing() {
        let mut scenario = Scenario::new();
        let body = json!({"filename": "a.txt", "purpose": "moderation", "mime_type": "text/plain"});
        let rejection = scenario.create(&owner_a(), &body).unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("purpose"),
            "'moderation' is not one of ['assistants', 'batch', 'fine-tune', 'vision', \
             'user_data', 'evals'] - 'purpose'; 'bytes' is a required property",
        );
        assert_eq!(scenario.records(), (vec![], vec![]));
        assert!(scenario.saved_uploads.is_empty());
    }

    #[test]
    fn unknown_uploads_and_other_owners_uploads_are_404_and_unchanged() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let before = scenario.records();
        let stranger = owner_b();
        let missing = UploadId::new("upload_404");
        for id in [&upload, &missing] {
            let message = format!("No such Upload object: {id}");
            let ids = &mut scenario.ids;
            let check = scenario.ledger.check_add_part(&stranger, id, START, ids);
            assert_rejected(&check.unwrap_err(), 404, Some("upload_id"), &message);
            let body = json!({"part_ids": [&hello, &world]}).to_string();
            let plan = scenario
                .ledger
                .plan_complete(&stranger, id, body.as_bytes(), START);
            assert_rejected(&plan.unwrap_err(), 404, Some("upload_id"), &message);
            let cancel = scenario.ledger.cancel_upload(&stranger, id, START);
            assert_rejected(&cancel.unwrap_err(), 404, Some("upload_id"), &message);
        }
        // A slot handed to the owner is no use to another owner either.
        let slot = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap();
        let add = scenario.ledger.add_part(&stranger, &slot, 1, START);
        assert_rejected(
            &add.unwrap_err(),
            404,
            Some("upload_id"),
            &format!("No such Upload object: {upload}"),
        );
        assert_eq!(scenario.records(), before);
        // And the owner still completes it.
        let done = scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        assert_eq!(done.status, UploadStatus::Completed);
    }

    #[test]
    fn a_verification_is_no_use_to_another_owner() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [hello, world]}).to_string();
        let CompletePlan::Verify(verification) = scenario
            .ledger
            .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
            .unwrap()
        else {
            panic!("pending")
        };
        let finish = scenario.ledger.finish_complete(
            &owner_b(),
            &verification,
            None,
            START,
            &mut scenario.ids,
        );
        assert_eq!(finish.unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_part_over_the_part_limit_is_413_and_nothing_is_stored() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 100 * crate::limits::MIB);
        let slot = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap();
        let limit = 64 * crate::limits::MIB;
        let rejection = scenario
            .ledger
            .add_part(&owner_a(), &slot, limit + 1, START)
            .unwrap_err();
        assert_rejected(
            &rejection,
            413,
            Some("data"),
            "The Part's data is 67108865 bytes; a Part may hold at most 67108864 bytes.",
        );
        assert!(scenario.record(&upload).parts.is_empty());
        // Exactly the limit is fine.
        let planned = scenario
            .ledger
            .add_part(&owner_a(), &slot, limit, START)
            .unwrap();
        let part = scenario.commit(planned);
        assert_eq!(part.id, *slot.part_id());
        assert_eq!(part.upload_id, upload);
        assert_eq!(scenario.record(&upload).parts_total(), limit);
    }

    #[test]
    fn parts_beyond_the_declared_size_are_accepted_up_to_the_upload_limit() {
        let limits = Limits {
            max_part_bytes: 4,
            max_upload_bytes: 10,
            ..Limits::default()
        };
        let mut scenario = Scenario::with_limits(limits);
        let upload = scenario.upload(&owner_a(), 3);
        scenario.part(&owner_a(), &upload, b"abc");
        // Retries of the same data: the declared 3 bytes are passed, the limit is not.
        let retry = scenario.part(&owner_a(), &upload, b"abc");
        scenario.part(&owner_a(), &upload, b"abcd");
        let over = scenario.add_part(&owner_a(), &upload, b"x").unwrap_err();
        assert_rejected(
            &over,
            400,
            Some("data"),
            "Adding this Part (1 bytes) would bring the Parts of Upload upload_1 to 11 bytes; \
             an Upload may hold at most 10 bytes.",
        );
        assert_eq!(scenario.record(&upload).parts_total(), 10);
        // Only the listed Part counts; the unlisted ones' bytes are removed.
        let done = scenario
            .complete_with(&owner_a(), &upload, &[&retry])
            .unwrap();
        let file = done.file.unwrap();
        assert_eq!(file.bytes, 3);
        assert_eq!(scenario.content(&owner_a(), &file.id).unwrap(), b"abc");
        let keys: Vec<_> = scenario
            .disk_parts
            .keys()
            .map(|(_, part)| part.clone())
            .collect();
        assert_eq!(keys, vec![retry]);
    }

    #[test]
    fn an_upload_takes_parts_up_to_the_part_count_limit() {
        let mut scenario = Scenario::with_limits(Limits::default().with_max_parts_per_upload(2));
        let upload = scenario.upload(&owner_a(), 3);
        scenario.part(&owner_a(), &upload, b"a");
        // Two slots taken while there is room for one more Part: the second to be added
        // finds the Upload full.
        let slots: Vec<PartSlot> = (0..2)
            .map(|_| {
                scenario
                    .ledger
                    .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
                    .unwrap()
            })
            .collect();
        let planned = scenario
            .ledger
            .add_part(&owner_a(), &slots[0], 1, START)
            .unwrap();
        scenario.commit(planned);
        let message = "Upload upload_1 already has 2 Parts; an Upload may have at most 2 Parts.";
        let late = scenario
            .ledger
            .add_part(&owner_a(), &slots[1], 1, START)
            .unwrap_err();
        assert_rejected(&late, 400, Some("data"), message);
        // A new Part is refused before its bytes are read.
        let full = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap_err();
        assert_rejected(&full, 400, Some("data"), message);
        assert_eq!(scenario.record(&upload).parts.len(), 2);
    }

    #[test]
    fn complete_creates_the_file_with_the_listed_parts_in_order() {
        let mut scenario = Scenario::new();
        let body = json!({"filename": "hw.txt", "purpose": "assistants", "bytes": 11,
            "mime_type": "text/plain", "expires_after": {"anchor": "created_at", "seconds": 3600}});
        let upload = scenario.create(&owner_a(), &body).unwrap().id;
        // Added in reverse order; listed in file order.
        let world = scenario.part(&owner_a(), &upload, b"world");
        let hello = scenario.part(&owner_a(), &upload, b"hello ");
        scenario.now += 10;
        let body = json!({"part_ids": [&hello, &world], "md5": HELLO_WORLD_MD5.to_uppercase()});
        let done = scenario.complete(&owner_a(), &upload, &body).unwrap();
        let now = START + 10;
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            json!({"id": "upload_1", "object": "upload", "bytes": 11, "created_at": START,
                "filename": "hw.txt", "purpose": "assistants", "status": "completed",
                "expires_at": START + 3600,
                "file": {"id": "file-1", "object": "file", "bytes": 11, "created_at": now,
                    "expires_at": now + 3600, "filename": "hw.txt", "purpose": "assistants",
                    "status": "processed"}})
        );
        let file_id = FileId::new("file-1");
        let manifest = scenario
            .ledger
            .file_manifest(&owner_a(), &file_id, now)
            .unwrap();
        assert_eq!(manifest.part_ids, vec![hello, world]);
        assert_eq!(manifest.upload_id, Some(upload.clone()));
        assert_eq!(
            scenario.content(&owner_a(), &file_id).unwrap(),
            b"hello world"
        );
        let RecordState::Completed(completion) = &scenario.record(&upload).state else {
            panic!("completed")
        };
        assert_eq!(
            completion.md5.as_deref(),
            Some(HELLO_WORLD_MD5),
            "stored lower-case"
        );
        // Without expires_after, the File does not expire.
        let plain = scenario.upload(&owner_a(), 1);
        let part = scenario.part(&owner_a(), &plain, b"x");
        let done = scenario
            .complete_with(&owner_a(), &plain, &[&part])
            .unwrap();
        assert_eq!(done.file.unwrap().expires_at, None);
    }

    #[test]
    fn part_ids_that_are_not_this_uploads_parts_are_400_and_it_stays_pending() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let other = scenario.upload(&owner_a(), 6);
        let foreign = scenario.part(&owner_a(), &other, b"hello ");
        let before = scenario.records();
        let cases = [
            (json!([]), "[] is too short - 'part_ids'".to_owned()),
            (
                json!([&hello, "part_999"]),
                format!("Part part_999 does not belong to Upload {upload}."),
            ),
            (
                json!([&foreign, &world]),
                format!("Part {foreign} does not belong to Upload {upload}."),
            ),
            (
                json!([&hello, &world, &hello]),
                format!("Part {hello} is listed more than once."),
            ),
        ];
        for (part_ids, message) in cases {
            let body = json!({ "part_ids": part_ids });
            let rejection = scenario.complete(&owner_a(), &upload, &body).unwrap_err();
            assert_rejected(&rejection, 400, Some("part_ids"), &message);
        }
        assert_eq!(scenario.records(), before);
        assert_eq!(
            scenario.record(&upload).status(START),
            UploadStatus::Pending
        );
    }

    #[test]
    fn parts_not_adding_up_to_the_declared_bytes_are_400_naming_both() {
        let mut scenario = Scenario::new();
        let (upload, hello, _) = hello_world(&mut scenario);
        let rejection = scenario
            .complete_with(&owner_a(), &upload, &[&hello])
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("part_ids"),
            "The number of bytes uploaded upon completion (6) does not match the number of \
             bytes initially specified when creating the Upload (11).",
        );
        assert_eq!(scenario.record(&upload).state, RecordState::Pending);
    }

    #[test]
    fn a_malformed_or_wrong_md5_is_400_md5_and_it_stays_pending() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let before = scenario.records();
        let malformed = json!({"part_ids": [&hello, &world], "md5": "5eb63bbb"});
        let rejection = scenario
            .complete(&owner_a(), &upload, &malformed)
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("md5"),
            "'5eb63bbb' does not match '^[0-9a-fA-F]{32}$' - 'md5'",
        );
        let wrong = json!({"part_ids": [&world, &hello], "md5": HELLO_WORLD_MD5});
        // "worldhello " has 11 bytes too: only the md5 tells the order is wrong.
        let rejection = scenario.complete(&owner_a(), &upload, &wrong).unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("md5"),
            "The md5 of the uploaded bytes (f133a26c48639f644e2295e11548f9b9) does not \
             match the md5 given (5eb63bbbe01eeed093cb22bb8f5acdc3).",
        );
        assert_eq!(scenario.records(), before);
        // The right md5 still completes it.
        let right = json!({"part_ids": [&hello, &world], "md5": HELLO_WORLD_MD5});
        assert!(scenario.complete(&owner_a(), &upload, &right).is_ok());
    }

    #[test]
    fn an_md5_the_server_did_not_compute_is_a_500() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [hello, world], "md5": HELLO_WORLD_MD5}).to_string();
        let CompletePlan::Verify(verification) = scenario
            .ledger
            .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
            .unwrap()
        else {
            panic!("pending")
        };
        assert_eq!(verification.expected_md5(), Some(HELLO_WORLD_MD5));
        let rejection = scenario
            .ledger
            .finish_complete(&owner_a(), &verification, None, START, &mut scenario.ids)
            .unwrap_err();
        assert_eq!(rejection.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(scenario.record(&upload).state, RecordState::Pending);
    }

    #[test]
    fn a_retried_complete_returns_the_same_upload_and_file() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [&hello, &world], "md5": HELLO_WORLD_MD5});
        let first = scenario.complete(&owner_a(), &upload, &body).unwrap();
        let saved = scenario.records();
        scenario.now += 60;
        let again = scenario.complete(&owner_a(), &upload, &body).unwrap();
        assert_eq!(again, first);
        // The md5 is compared case-insensitively.
        let upper = json!({"part_ids": [&hello, &world], "md5": HELLO_WORLD_MD5.to_uppercase()});
        assert_eq!(
            scenario.complete(&owner_a(), &upload, &upper).unwrap(),
            first
        );
        assert_eq!(scenario.records(), saved, "a replay changes nothing");
        assert_eq!(scenario.ledger.files.len(), 1);
    }

    #[test]
    fn a_retried_complete_with_a_different_list_or_md5_is_400() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        let saved = scenario.records();
        let rejection = scenario
            .complete_with(&owner_a(), &upload, &[&hello])
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("part_ids"),
            "Upload upload_1 is already completed with a different list of part_ids.",
        );
        let body = json!({"part_ids": [&hello, &world], "md5": HELLO_WORLD_MD5});
        let rejection = scenario.complete(&owner_a(), &upload, &body).unwrap_err();
        assert_rejected(
            &rejection,
            400,
            Some("md5"),
            "Upload upload_1 is already completed with a different md5.",
        );
        assert_eq!(scenario.records(), saved);
    }

    #[test]
    fn parts_are_refused_with_400_once_completed_or_cancelled() {
        let mut scenario = Scenario::new();
        let (completed, hello, world) = hello_world(&mut scenario);
        scenario
            .complete_with(&owner_a(), &completed, &[&hello, &world])
            .unwrap();
        let cancelled = scenario.upload(&owner_a(), 1);
        scenario.cancel(&owner_a(), &cancelled).unwrap();
        let before = scenario.records();
        for (id, status) in [(&completed, "completed"), (&cancelled, "cancelled")] {
            let rejection = scenario.add_part(&owner_a(), id, b"x").unwrap_err();
            assert_rejected(
                &rejection,
                400,
                None,
                &format!("Cannot add parts to an Upload that is already {status}."),
            );
        }
        let rejection = scenario
            .complete_with(&owner_a(), &cancelled, &[&hello])
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot complete an Upload that is already cancelled.",
        );
        assert_eq!(scenario.records(), before);
    }

    #[test]
    fn an_upload_expires_exactly_at_expires_at() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 2);
        let expires_at = START + 3600;
        scenario.now = expires_at - 1;
        let a = scenario.part(&owner_a(), &upload, b"a");
        let b = scenario.part(&owner_a(), &upload, b"b");
        scenario.now = expires_at;
        let before = scenario.records();
        let rejection = scenario.add_part(&owner_a(), &upload, b"c").unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot add parts to an Upload that is already expired.",
        );
        let rejection = scenario
            .complete_with(&owner_a(), &upload, &[&a, &b])
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot complete an Upload that is already expired.",
        );
        let rejection = scenario.cancel(&owner_a(), &upload).unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot cancel an Upload that is already expired.",
        );
        assert_eq!(scenario.records(), before);
        assert_eq!(
            scenario.record(&upload).to_upload(expires_at).status,
            UploadStatus::Expired
        );
        // One second earlier it would still have completed.
        scenario.now = expires_at - 1;
        let done = scenario
            .complete_with(&owner_a(), &upload, &[&a, &b])
            .unwrap();
        assert_eq!(done.status, UploadStatus::Completed);
    }

    #[test]
    fn a_part_streamed_while_the_upload_finished_is_refused() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 1);
        let slot = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
            .unwrap();
        scenario.cancel(&owner_a(), &upload).unwrap();
        let rejection = scenario
            .ledger
            .add_part(&owner_a(), &slot, 1, START)
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot add parts to an Upload that is already cancelled.",
        );
        // Expiry while streaming: the check passed a second before.
        let upload = scenario.upload(&owner_a(), 1);
        let expires_at = scenario.record(&upload).expires_at;
        let slot = scenario
            .ledger
            .check_add_part(&owner_a(), &upload, expires_at - 1, &mut scenario.ids)
            .unwrap();
        let late = scenario.ledger.add_part(&owner_a(), &slot, 1, expires_at);
        assert_eq!(late.unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn finish_complete_checks_again_what_happened_during_the_md5() {
        let mut scenario = Scenario::new();
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [hello, world]}).to_string();
        let plan = || {
            scenario
                .ledger
                .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
                .unwrap()
        };
        let (CompletePlan::Verify(first), CompletePlan::Verify(second)) = (plan(), plan()) else {
            panic!("pending")
        };
        let planned = scenario
            .ledger
            .finish_complete(&owner_a(), &first, None, START, &mut scenario.ids)
            .unwrap();
        let done = scenario.commit(planned);
        // The second identical complete finishes as a replay of the first.
        let replay = scenario
            .ledger
            .finish_complete(&owner_a(), &second, None, START, &mut scenario.ids)
            .unwrap();
        assert_eq!(replay.change, None);
        assert_eq!(replay.response, done);

        // A cancel that lands during the md5 wins.
        let (upload, hello, world) = hello_world(&mut scenario);
        let body = json!({"part_ids": [hello, world]}).to_string();
        let CompletePlan::Verify(verification) = scenario
            .ledger
            .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
            .unwrap()
        else {
            panic!("pending")
        };
        scenario.cancel(&owner_a(), &upload).unwrap();
        let rejection = scenario
            .ledger
            .finish_complete(&owner_a(), &verification, None, START, &mut scenario.ids)
            .unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot complete an Upload that is already cancelled.",
        );
    }

    #[test]
    fn cancel_twice_is_the_same_upload_and_cancel_after_complete_is_400() {
        let mut scenario = Scenario::new();
        let (upload, _, _) = hello_world(&mut scenario);
        scenario.now += 5;
        let cancelled = scenario.cancel(&owner_a(), &upload).unwrap();
        assert_eq!(cancelled.status, UploadStatus::Cancelled);
        assert_eq!(
            scenario.record(&upload).state,
            RecordState::Cancelled { at: START + 5 }
        );
        assert!(
            scenario.disk_parts.is_empty(),
            "a cancel removes the Parts' bytes"
        );
        assert_eq!(
            scenario.record(&upload).parts.len(),
            2,
            "the record keeps them"
        );
        let saved = scenario.records();
        scenario.now += 5;
        let planned = scenario
            .ledger
            .cancel_upload(&owner_a(), &upload, scenario.now)
            .unwrap();
        assert_eq!(planned.change, None);
        assert_eq!(planned.response, cancelled);
        // Even after its expires_at, a cancelled Upload stays cancelled.
        scenario.now = START + 7200;
        assert_eq!(scenario.cancel(&owner_a(), &upload).unwrap(), cancelled);
        assert_eq!(scenario.records(), saved);

        let (upload, hello, world) = hello_world(&mut scenario);
        scenario
            .complete_with(&owner_a(), &upload, &[&hello, &world])
            .unwrap();
        let rejection = scenario.cancel(&owner_a(), &upload).unwrap_err();
        assert_rejected(
            &rejection,
            400,
            None,
            "Cannot cancel an Upload that is already completed.",
        );
        assert!(matches!(
            scenario.record(&upload).state,
            RecordState::Completed(_)
        ));
    }
}
