//! The Files endpoints of the ledger: `POST /files`, `GET /files`, `GET /files/{id}`,
//! `DELETE /files/{id}`, and the manifest behind `GET /files/{id}/content`.
//!
//! A File whose `expires_at <= now` is gone: every endpoint answers 404 for it, lists skip
//! it, and [`Ledger::sweep`] reports it for removal.

use crate::limits::{LIST_FILES_LIMITS, ValidationErrors, list_limit_error, not_one_of};
use crate::rejection::Rejection;
use crate::types::{
    DeletedFile, ExpiresAfter, FileId, FileList, FileObject, FileStatus, ListFilesQuery, ListOrder,
    Purpose,
};

use super::change::Guard;
use super::{Change, FileRecord, Ledger, Owner, Planned, Step};

/// A File made in one request (`POST /files`), as the server read it from the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The `purpose` field, as sent.
    pub purpose: String,
    /// The name of the `file` field's file.
    pub filename: String,
    /// The length of the `file` field's data.
    pub bytes: u64,
    /// The `expires_after` fields, if sent.
    pub expires_after: Option<ExpiresAfter>,
}

impl Ledger {
    /// `POST /files`: the server has stored the data under `file_id` (from
    /// [`Ledger::new_file_id`]), not yet durably. 400 `'x' is not one of [...] - 'purpose'`
    /// for a purpose Uploads do not accept, 400 for `expires_after` out of range, 400 `file`
    /// for a File that would take `owner` over a quota (see [`Usage`](super::Usage));
    /// otherwise a `processed` File created now. The server makes the data durable, then the steps.
    pub fn create_file(
        &self,
        owner: &Owner,
        file_id: &FileId,
        new: NewFile,
        now: u64,
    ) -> Result<Planned<FileObject>, Rejection> {
        let purpose = Purpose::from_wire(&new.purpose);
        if self.limits.mime_rule(&purpose).is_none() {
            return Err(self.unknown_purpose(&new.purpose));
        }
        if let Some(policy) = &new.expires_after {
            self.limits
                .check_expires_after(policy)
                .map_err(|problem| ValidationErrors(vec![problem]).to_rejection())?;
        }
        self.check_quota(owner, new.bytes, "file", now)?;
        if self.file_id_taken(file_id) {
            return Err(Rejection::server_error(format!(
                "File id {file_id} is already in use."
            )));
        }
        let file = FileObject {
            id: file_id.clone(),
            object: "file".to_owned(),
            bytes: new.bytes,
            created_at: now,
            expires_at: self
                .limits
                .file_expires_at(&purpose, new.expires_after.as_ref(), now),
            filename: new.filename,
            purpose,
            status: Some(FileStatus::Processed),
            status_details: None,
        };
        let record = FileRecord {
            owner: owner.clone(),
            file: file.clone(),
            upload_id: None,
            part_ids: Vec::new(),
        };
        let guard = Guard::File {
            id: file_id.clone(),
            exists: false,
        };
        Ok(Planned {
            change: Some(Change::new(vec![Step::SaveFile(record)], vec![guard])),
            response: file,
        })
    }

    /// 400 for a purpose that is not one of the configured ones, listing them.
    fn unknown_purpose(&self, given: &str) -> Rejection {
        self.limits.purpose_error(given).into()
    }

    /// `GET /files/{id}`: 404 when it does not exist, is another owner's, or has expired.
    pub fn retrieve_file(
        &self,
        owner: &Owner,
        id: &FileId,
        now: u64,
    ) -> Result<FileObject, Rejection> {
        self.live_file(owner, id, now)
            .map(|record| record.file.clone())
    }

    /// `GET /files/{id}/content`: the File's record, whose manifest says where its bytes are
    /// (see [`FileRecord`]); 404 like [`Ledger::retrieve_file`].
    pub fn file_manifest(
        &self,
        owner: &Owner,
        id: &FileId,
        now: u64,
    ) -> Result<&FileRecord, Rejection> {
        self.live_file(owner, id, now)
    }

    /// `GET /files`: the owner's live Files, optionally of one purpose, ordered by
    /// `created_at` then id (`desc` unless `asc` is asked), starting after the File named by
    /// `after`, at most `limit` (1..=10000, default 10000) of them. 400 `param: "limit"` for
    /// a limit out of range, `"order"` for an unknown order, `"after"` for a cursor that is
    /// not one of the owner's live Files.
    pub fn list_files(
        &self,
        owner: &Owner,
        query: &ListFilesQuery,
        now: u64,
    ) -> Result<FileList, Rejection> {
        let limit = query.limit.unwrap_or(*LIST_FILES_LIMITS.end());
        if !LIST_FILES_LIMITS.contains(&limit) {
            return Err(list_limit_error(
                &limit.to_string(),
                limit < *LIST_FILES_LIMITS.start(),
            ));
        }
        let descending = match &query.order {
            None | Some(ListOrder::Desc) => true,
            Some(ListOrder::Asc) => false,
            Some(other) => {
                return Err(not_one_of(other.as_str(), ListOrder::KNOWN, "order").into());
            }
        };
        let cursor = match &query.after {
            None => None,
            Some(after) => Some(sort_key(self.live_file(owner, after, now).map_err(
                |_| Rejection::invalid(Some("after"), format!("No such File object: {after}")),
            )?)),
        };
        let mut matching: Vec<&FileRecord> = self
            .files
            .values()
            .filter(|record| record.owner == *owner && !record.is_expired(now))
            .filter(|record| {
                query
                    .purpose
                    .as_ref()
                    .is_none_or(|purpose| record.file.purpose == *purpose)
            })
            .filter(|record| match cursor {
                None => true,
                Some(cursor) if descending => sort_key(record) < cursor,
                Some(cursor) => sort_key(record) > cursor,
            })
            .collect();
        matching.sort_by_key(|record| sort_key(record));
        if descending {
            matching.reverse();
        }
        let page_len = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = matching.len() > page_len;
        matching.truncate(page_len);
        let data: Vec<FileObject> = matching.iter().map(|record| record.file.clone()).collect();
        Ok(FileList {
            object: "list".to_owned(),
            first_id: data.first().map(|file| file.id.clone()),
            last_id: data.last().map(|file| file.id.clone()),
            data,
            has_more,
        })
    }

    /// `DELETE /files/{id}`: 404 like [`Ledger::retrieve_file`]; otherwise the File's record
    /// and bytes are removed (for a completed Upload's File, its listed Parts' bytes).
    pub fn delete_file(
        &self,
        owner: &Owner,
        id: &FileId,
        now: u64,
    ) -> Result<Planned<DeletedFile>, Rejection> {
        let record = self.live_file(owner, id, now)?;
        let guard = Guard::File {
            id: id.clone(),
            exists: true,
        };
        Ok(Planned {
            change: Some(Change::new(removal_steps(record), vec![guard])),
            response: DeletedFile {
                id: id.clone(),
                object: "file".to_owned(),
                deleted: true,
            },
        })
    }

    /// The File, when it exists, is the owner's and has not expired; else 404.
    fn live_file(&self, owner: &Owner, id: &FileId, now: u64) -> Result<&FileRecord, Rejection> {
        self.files
            .get(id)
            .filter(|record| record.owner == *owner && !record.is_expired(now))
            .ok_or_else(|| Rejection::no_such_file(id))
    }
}

/// The order of a file list: by `created_at`, then by id so equal times are stable.
fn sort_key(record: &FileRecord) -> (u64, &FileId) {
    (record.file.created_at, record.id())
}

/// The steps that remove a File: its record (and own data), then the Parts holding its bytes.
pub(super) fn removal_steps(record: &FileRecord) -> Vec<Step> {
    let mut steps = vec![Step::RemoveFile(record.id().clone())];
    if let Some(upload_id) = &record.upload_id
        && !record.part_ids.is_empty()
    {
        steps.push(Step::RemoveParts {
            upload_id: upload_id.clone(),
            part_ids: record.part_ids.clone(),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::super::scenario::{START, Scenario, owner_a, owner_b};
    use super::*;
    use crate::types::UploadId;

    fn ids(list: &FileList) -> Vec<&str> {
        list.data.iter().map(|file| file.id.as_str()).collect()
    }

    fn query(order: Option<ListOrder>, limit: Option<u32>, after: Option<&str>) -> ListFilesQuery {
        ListFilesQuery {
            purpose: None,
            limit,
            order,
            after: after.map(FileId::from),
        }
    }

    /// Owner A: file-1 (t), file-2 (t+1, batch), file-3 (t+1), file-5 (t+2); owner B: file-4.
    fn five_files() -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .create_file(&owner_a(), "user_data", b"1", None)
            .unwrap();
        scenario.now += 1;
        scenario
            .create_file(&owner_a(), "batch", b"2", None)
            .unwrap();
        scenario
            .create_file(&owner_a(), "user_data", b"3", None)
            .unwrap();
        scenario
            .create_file(&owner_b(), "user_data", b"4", None)
            .unwrap();
        scenario.now += 1;
        scenario
            .create_file(&owner_a(), "user_data", b"5", None)
            .unwrap();
        scenario
    }

    #[test]
    fn a_file_is_created_retrieved_read_and_deleted() {
        let mut scenario = Scenario::new();
        let policy = ExpiresAfter::after_creation(3600);
        let file = scenario
            .create_file(&owner_a(), "assistants", b"notes", Some(policy))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&file).unwrap(),
            serde_json::json!({"id": "file-1", "object": "file", "bytes": 5, "created_at": START,
                "expires_at": START + 3600, "filename": "notes.txt", "purpose": "assistants",
                "status": "processed"})
        );
        assert_eq!(
            scenario
                .ledger
                .retrieve_file(&owner_a(), &file.id, START)
                .unwrap(),
            file
        );
        assert_eq!(scenario.content(&owner_a(), &file.id).unwrap(), b"notes");
        let deleted = scenario.delete_file(&owner_a(), &file.id).unwrap();
        assert_eq!(
            deleted,
            DeletedFile {
                id: file.id.clone(),
                object: "file".to_owned(),
                deleted: true
            }
        );
        assert!(scenario.disk_files.is_empty() && scenario.saved_files.is_empty());
        let gone = scenario
            .ledger
            .retrieve_file(&owner_a(), &file.id, START)
            .unwrap_err();
        assert_eq!(gone, Rejection::no_such_file(&file.id));
        assert_eq!(
            scenario.delete_file(&owner_a(), &file.id).unwrap_err(),
            gone
        );
    }

    #[test]
    fn create_file_checks_purpose_and_expiry() {
        let mut scenario = Scenario::new();
        let rejection = scenario
            .create_file(&owner_a(), "moderation", b"x", None)
            .unwrap_err();
        assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        assert_eq!(rejection.param(), Some("purpose"));
        assert_eq!(
            rejection.body.error.message,
            "'moderation' is not one of ['assistants', 'batch', 'fine-tune', 'vision', \
             'user_data', 'evals'] - 'purpose'"
        );
        let too_soon = Some(ExpiresAfter::after_creation(60));
        let rejection = scenario
            .create_file(&owner_a(), "batch", b"x", too_soon)
            .unwrap_err();
        assert_eq!(rejection.param(), Some("expires_after.seconds"));
        assert_eq!(
            rejection.body.error.message,
            "60 is less than the minimum of 3600 - 'expires_after.seconds'"
        );
        assert_eq!(scenario.records(), (vec![], vec![]));
        // The id the server stored the bytes under must be fresh.
        let file = scenario
            .create_file(&owner_a(), "batch", b"x", None)
            .unwrap();
        let new = NewFile {
            purpose: "batch".to_owned(),
            filename: "again".to_owned(),
            bytes: 1,
            expires_after: None,
        };
        let reused = scenario
            .ledger
            .create_file(&owner_a(), &file.id, new, START);
        assert_eq!(
            reused.unwrap_err().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn files_of_other_owners_are_404_on_every_endpoint() {
        let mut scenario = five_files();
        let theirs = FileId::new("file-4");
        let expected = Rejection::no_such_file(&theirs);
        let ledger = &scenario.ledger;
        assert_eq!(
            ledger
                .retrieve_file(&owner_a(), &theirs, START)
                .unwrap_err(),
            expected
        );
        assert_eq!(
            ledger
                .file_manifest(&owner_a(), &theirs, START)
                .unwrap_err(),
            expected
        );
        assert_eq!(
            ledger.delete_file(&owner_a(), &theirs, START).unwrap_err(),
            expected
        );
        assert_eq!(expected.body.error.message, "No such File object: file-4");
        assert_eq!(expected.status, StatusCode::NOT_FOUND);
        let before = scenario.records();
        assert!(scenario.delete_file(&owner_a(), &theirs).is_err());
        assert_eq!(scenario.records(), before);
        assert!(
            scenario
                .ledger
                .retrieve_file(&owner_b(), &theirs, START)
                .is_ok()
        );
    }

    #[test]
    fn a_file_is_gone_from_its_expires_at() {
        let mut scenario = Scenario::new();
        let policy = Some(ExpiresAfter::after_creation(3600));
        let file = scenario
            .create_file(&owner_a(), "batch", b"x", policy)
            .unwrap();
        let expires_at = START + 3600;
        let ledger = &scenario.ledger;
        assert!(
            ledger
                .retrieve_file(&owner_a(), &file.id, expires_at - 1)
                .is_ok()
        );
        let gone = Rejection::no_such_file(&file.id);
        assert_eq!(
            ledger
                .retrieve_file(&owner_a(), &file.id, expires_at)
                .unwrap_err(),
            gone
        );
        assert_eq!(
            ledger
                .file_manifest(&owner_a(), &file.id, expires_at)
                .unwrap_err(),
            gone
        );
        assert_eq!(
            ledger
                .delete_file(&owner_a(), &file.id, expires_at)
                .unwrap_err(),
            gone
        );
        let list = ledger.list_files(&owner_a(), &ListFilesQuery::default(), expires_at);
        assert!(list.unwrap().data.is_empty());
    }

    #[test]
    fn deleting_a_completed_uploads_file_removes_its_parts() {
        let mut scenario = Scenario::new();
        let upload = scenario.upload(&owner_a(), 2);
        let a = scenario.part(&owner_a(), &upload, b"a");
        let b = scenario.part(&owner_a(), &upload, b"b");
        let file = scenario
            .complete_with(&owner_a(), &upload, &[&b, &a])
            .unwrap()
            .file
            .unwrap();
        assert_eq!(scenario.content(&owner_a(), &file.id).unwrap(), b"ba");
        let planned = scenario
            .ledger
            .delete_file(&owner_a(), &file.id, START)
            .unwrap();
        assert_eq!(
            planned.change.as_ref().unwrap().steps(),
            [
                Step::RemoveFile(file.id.clone()),
                Step::RemoveParts {
                    upload_id: UploadId::new("upload_1"),
                    part_ids: vec![b, a]
                },
            ]
        );
        scenario.commit(planned);
        assert!(scenario.disk_parts.is_empty());
    }

    #[test]
    fn the_list_is_newest_first_by_default_and_only_the_owners() {
        let scenario = five_files();
        let list = scenario
            .ledger
            .list_files(&owner_a(), &ListFilesQuery::default(), scenario.now)
            .unwrap();
        // Equal `created_at`: ordered by id.
        assert_eq!(ids(&list), ["file-5", "file-3", "file-2", "file-1"]);
        assert_eq!(list.first_id, Some(FileId::new("file-5")));
        assert_eq!(list.last_id, Some(FileId::new("file-1")));
        assert!(!list.has_more);
        assert_eq!(list.object, "list");
        let theirs = scenario
            .ledger
            .list_files(&owner_b(), &ListFilesQuery::default(), scenario.now)
            .unwrap();
        assert_eq!(ids(&theirs), ["file-4"]);
        let nobody = scenario
            .ledger
            .list_files(
                &Owner::new("proj_c"),
                &ListFilesQuery::default(),
                scenario.now,
            )
            .unwrap();
        assert_eq!(
            (nobody.first_id, nobody.last_id, nobody.has_more),
            (None, None, false)
        );
    }

    #[test]
    fn pages_follow_the_after_cursor_in_either_order() {
        let scenario = five_files();
        let list = |order, limit, after| {
            scenario
                .ledger
                .list_files(&owner_a(), &query(order, limit, after), scenario.now)
                .unwrap()
        };
        let page = list(Some(ListOrder::Asc), Some(2), None);
        assert_eq!(
            (ids(&page), page.has_more),
            (vec!["file-1", "file-2"], true)
        );
        let page = list(Some(ListOrder::Asc), Some(2), Some("file-2"));
        assert_eq!(
            (ids(&page), page.has_more),
            (vec!["file-3", "file-5"], false)
        );
        let page = list(Some(ListOrder::Desc), Some(3), None);
        assert_eq!(
            (ids(&page), page.has_more),
            (vec!["file-5", "file-3", "file-2"], true)
        );
        let page = list(None, Some(3), Some("file-2"));
        assert_eq!((ids(&page), page.has_more), (vec!["file-1"], false));
        let page = list(None, None, Some("file-1"));
        assert_eq!(
            (ids(&page), page.first_id.clone(), page.has_more),
            (vec![], None, false)
        );
    }

    #[test]
    fn the_purpose_filter_keeps_the_cursor_order() {
        let scenario = five_files();
        let mut by_purpose = query(Some(ListOrder::Asc), None, Some("file-2"));
        by_purpose.purpose = Some(Purpose::UserData);
        let page = scenario
            .ledger
            .list_files(&owner_a(), &by_purpose, scenario.now)
            .unwrap();
        // The cursor may be a File the filter leaves out.
        assert_eq!(ids(&page), ["file-3", "file-5"]);
        by_purpose.purpose = Some(Purpose::Batch);
        by_purpose.after = None;
        let page = scenario
            .ledger
            .list_files(&owner_a(), &by_purpose, scenario.now)
            .unwrap();
        assert_eq!(ids(&page), ["file-2"]);
    }

    #[test]
    fn bad_list_parameters_are_400_naming_them() {
        let scenario = five_files();
        let refuse = |query: ListFilesQuery| {
            scenario
                .ledger
                .list_files(&owner_a(), &query, scenario.now)
                .unwrap_err()
        };
        let cases = [
            (
                query(None, Some(0), None),
                "limit",
                "0 is less than the minimum of 1 - 'limit'",
            ),
            (
                query(None, Some(10_001), None),
                "limit",
                "10001 is greater than the maximum of 10000 - 'limit'",
            ),
            (
                query(Some(ListOrder::Other("up".into())), None, None),
                "order",
                "'up' is not one of ['asc', 'desc'] - 'order'",
            ),
            (
                query(None, None, Some("file-404")),
                "after",
                "No such File object: file-404",
            ),
            // Another owner's File is no cursor either.
            (
                query(None, None, Some("file-4")),
                "after",
                "No such File object: file-4",
            ),
        ];
        for (query, param, message) in cases {
            let rejection = refuse(query);
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
            assert_eq!(rejection.param(), Some(param));
            assert_eq!(rejection.body.error.message, message);
        }
        let max =
            scenario
                .ledger
                .list_files(&owner_a(), &query(None, Some(10_000), None), scenario.now);
        assert_eq!(max.unwrap().data.len(), 4);
    }
}
