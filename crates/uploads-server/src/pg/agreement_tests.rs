//! The two places where this backend re-states a rule of the ledger in SQL, checked against
//! the ledger itself over random records (the in-memory [`Ledger`] over every record is the
//! reference):
//!
//! * [`claim_sweep`] must lock exactly the records [`Ledger::sweep`] changes at `now`, over
//!   as many batches as it takes;
//! * [`list_page`] must load enough that the ledger over only those Files answers `GET
//!   /files` exactly as over all of them (the same page, or the same refusal), and no more
//!   than a page;
//! * [`quota::load_usage`] must count each owner's usage as the ledger does over every
//!   record ([`Ledger::usage`]), at every `now`.
//!
//! Each case empties the tables of one database and writes its records with the backend's
//! own write path ([`write_steps`]), as the service would have. Times sit on a grid around
//! every boundary the rules compare (see [`grid`]), so equalities are hit, not skirted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uploads_core::ledger::{Completion, Owner};
use uploads_core::types::{FileObject, FileStatus, PartId, Purpose};

use super::*;
use crate::test_services as services;

/// The grid's origin: every time of a case is this plus or minus a little.
const BASE: u64 = 1_700_000_000;
/// The owners records are drawn for; queries also ask for one more, who owns nothing.
const OWNERS: [&str; 3] = ["proj_a", "proj_b", "proj_c"];
/// The owner of the bulk records that push a claim past one batch.
const BULK_OWNER: &str = "proj_bulk";
/// Distinct `created_at` values of Files: few, so that equal times (ordered by id) are common.
const CREATED_SPREAD: u64 = 4;
/// The longest a shrink may go on: each step is a database round, and a failure is already
/// shown with its records.
const MAX_SHRINK_ITERS: u32 = 200;
/// Cases of the sweep property; each checks every `now` of the grid.
const SWEEP_CASES: u32 = 48;
/// Cases of the sweep property with more due records than one batch (about a second each).
const BATCHED_SWEEP_CASES: u32 = 6;
/// Cases of the list property; each asks [`QUERIES_PER_CASE`] queries.
const LIST_CASES: u32 = 48;
/// Queries asked of one record set (the upper bound; at least half as many).
const QUERIES_PER_CASE: usize = 16;

/// How long a finished Upload is kept: the default limits', which the backend is given.
fn ttl() -> u64 {
    Limits::default().upload_ttl_secs
}

/// The times records expire at and sweeps run at: one second before, at and after the origin
/// and each of the next three upload lifetimes. With both sides on the grid, `expires_at`
/// and `expires_at + ttl` each meet `now` exactly, one second early and one second late.
fn grid() -> Vec<u64> {
    (0..4)
        .flat_map(|lifetimes| {
            let at = BASE + lifetimes * ttl();
            [at - 1, at, at + 1]
        })
        .collect()
}

/// The purposes records are drawn from (the list queries also ask for one no File has).
fn purposes() -> [Purpose; 3] {
    [Purpose::Batch, Purpose::UserData, Purpose::Assistants]
}

/// `BASE+n` or `BASE-n`: a time as the grid reads it.
fn at(time: u64) -> String {
    if time >= BASE {
        format!("BASE+{}", time - BASE)
    } else {
        format!("BASE-{}", BASE - time)
    }
}

/// A File as drawn; its id is made unique when the records are built.
#[derive(Debug, Clone)]
struct FileSpec {
    /// An index of [`OWNERS`].
    owner: usize,
    /// An index of [`purposes`].
    purpose: usize,
    /// Seconds after `BASE - 3 * ttl`, below [`CREATED_SPREAD`].
    created: u64,
    /// An index of [`grid`], or never.
    expires: Option<usize>,
    /// Mixed-case alphanumerics, as in real ids, whose order by bytes (the ledger's) is not
    /// a linguistic collation's.
    name: String,
}

/// Where an Upload is: pending (its Parts maybe already swept as an expired Upload's),
/// cancelled, or completed with a File that still exists or is gone.
#[derive(Debug, Clone)]
enum StateSpec {
    /// Pending, or expired by the clock; `parts_removed` once a sweep took its Parts' bytes.
    Pending { parts_removed: bool },
    /// Cancelled by its owner.
    Cancelled,
    /// Completed as `file`, whose record still exists when `file_kept` (else it was
    /// deleted or swept).
    Completed { file: FileSpec, file_kept: bool },
}

/// An Upload as drawn.
#[derive(Debug, Clone)]
struct UploadSpec {
    /// An index of [`OWNERS`].
    owner: usize,
    /// An index of [`purposes`].
    purpose: usize,
    /// An index of [`grid`].
    expires: usize,
    /// How many Parts were added (a completed Upload has one at least).
    parts: usize,
    state: StateSpec,
}

/// Files of any owner and purpose, created in a few seconds, most of them expiring at a
/// time of the grid.
fn file_spec() -> impl Strategy<Value = FileSpec> {
    (
        0..OWNERS.len(),
        0..purposes().len(),
        0..CREATED_SPREAD,
        proptest::option::weighted(0.6, 0..grid().len()),
        "[A-Za-z0-9]{1,2}",
    )
        .prop_map(|(owner, purpose, created, expires, name)| FileSpec {
            owner,
            purpose,
            created,
            expires,
            name,
        })
}

/// Uploads in every state, expiring at any time of the grid, with up to three Parts.
fn upload_spec() -> impl Strategy<Value = UploadSpec> {
    let state = prop_oneof![
        any::<bool>().prop_map(|parts_removed| StateSpec::Pending { parts_removed }),
        Just(StateSpec::Cancelled),
        (file_spec(), any::<bool>())
            .prop_map(|(file, file_kept)| StateSpec::Completed { file, file_kept }),
    ];
    (
        0..OWNERS.len(),
        0..purposes().len(),
        0..grid().len(),
        0..=3_usize,
        state,
    )
        .prop_map(|(owner, purpose, expires, parts, state)| UploadSpec {
            owner,
            purpose,
            expires,
            parts,
            state,
        })
}

/// Records as the service could have left them: a File of a completed Upload exists only
/// with its Upload completed with it (they are written in one transaction, and the Upload
/// goes only after its File); `parts_removed` only on a pending Upload that had Parts.
#[derive(Clone)]
struct Records {
    /// Every Upload, with its Parts.
    uploads: Vec<UploadRecord>,
    /// Every File that exists.
    files: Vec<FileRecord>,
    /// How many of each the bulk added (owned by [`BULK_OWNER`], not shown).
    bulk: usize,
}

/// Record sets of up to a dozen Uploads (some completed with a File), `files` more Files,
/// and `bulk` of each (see [`Records::bulk`]).
fn records(
    files: std::ops::Range<usize>,
    bulk: BoxedStrategy<usize>,
) -> impl Strategy<Value = Records> {
    (
        proptest::collection::vec(upload_spec(), 0..12),
        proptest::collection::vec(file_spec(), files),
        bulk,
    )
        .prop_map(|(uploads, files, bulk)| build(&uploads, &files, bulk))
}

/// The records of the specs, with unique ids.
fn build(uploads: &[UploadSpec], files: &[FileSpec], bulk: usize) -> Records {
    let grid = grid();
    let mut taken = BTreeSet::new();
    // A repeated name gets its index after a `_`, which drawn names never hold: `8` at
    // index 5 must not become the `85` drawn for another File.
    let mut file_id = |name: &str, index: usize| {
        let mut id = format!("file-{name}");
        if !taken.insert(id.clone()) {
            id = format!("file-{name}_{index}");
            assert!(taken.insert(id.clone()), "file ids are unique: {id}");
        }
        FileId::new(id)
    };
    let mut records = Records {
        uploads: Vec::new(),
        files: Vec::new(),
        bulk,
    };
    for (index, spec) in uploads.iter().enumerate() {
        let parts = match spec.state {
            // A completed Upload's listed Parts added up to its bytes: one at least.
            StateSpec::Completed { .. } => spec.parts.max(1),
            _ => spec.parts,
        };
        let mut record = pending_upload(
            UploadId::new(format!("upload_{index:02}")),
            Owner::new(OWNERS[spec.owner]),
            purposes()[spec.purpose].clone(),
            grid[spec.expires],
            parts,
        );
        match &spec.state {
            StateSpec::Pending { parts_removed } => {
                // Only the sweep sets it, on an expired pending Upload with Parts, which
                // then stays pending for good.
                record.parts_removed = *parts_removed && parts > 0;
            }
            StateSpec::Cancelled => {
                record.state = RecordState::Cancelled {
                    at: record.created_at,
                };
            }
            StateSpec::Completed { file, file_kept } => {
                let file = file_record(file, file_id(&file.name, index), Some(&record));
                record.state = RecordState::Completed(Completion {
                    part_ids: file.part_ids.clone(),
                    md5: None,
                    file: file.file.clone(),
                });
                if *file_kept {
                    records.files.push(file);
                }
            }
        }
        records.uploads.push(record);
    }
    for (index, spec) in files.iter().enumerate() {
        let id = file_id(&spec.name, uploads.len() + index);
        records.files.push(file_record(spec, id, None));
    }
    // Due at the grid's first time, so they fill the first batches and push the records
    // above past them.
    for index in 0..bulk {
        let mut file = file_record(
            &FileSpec {
                owner: 0,
                purpose: 0,
                created: 0,
                expires: Some(0),
                name: String::new(),
            },
            FileId::new(format!("file-bulk{index:04}")),
            None,
        );
        file.owner = Owner::new(BULK_OWNER);
        records.files.push(file);
        records.uploads.push(pending_upload(
            UploadId::new(format!("upload_bulk{index:04}")),
            Owner::new(BULK_OWNER),
            Purpose::UserData,
            grid[0],
            1,
        ));
    }
    records
}

/// A pending Upload created one lifetime before `expires_at`, with `parts` Parts of a byte.
fn pending_upload(
    id: UploadId,
    owner: Owner,
    purpose: Purpose,
    expires_at: u64,
    parts: usize,
) -> UploadRecord {
    let created_at = expires_at - ttl();
    UploadRecord {
        owner,
        id,
        created_at,
        filename: "u.txt".to_owned(),
        purpose,
        bytes: parts as u64,
        mime_type: "text/plain".to_owned(),
        expires_at,
        expires_after: None,
        parts: (1..=parts)
            .map(|part| PartRecord {
                id: PartId::new(format!("part_{part}")),
                bytes: 1,
                created_at,
            })
            .collect(),
        state: RecordState::Pending,
        parts_removed: false,
    }
}

/// The File of a spec; a completed Upload's (`upload`) is its owner's, of its purpose, and
/// lists its Parts.
fn file_record(spec: &FileSpec, id: FileId, upload: Option<&UploadRecord>) -> FileRecord {
    FileRecord {
        owner: upload.map_or_else(
            || Owner::new(OWNERS[spec.owner]),
            |upload| upload.owner.clone(),
        ),
        file: FileObject {
            id,
            object: "file".to_owned(),
            bytes: upload.map_or(1, |upload| upload.bytes),
            created_at: BASE - 3 * ttl() + spec.created,
            expires_at: spec.expires.map(|index| grid()[index]),
            filename: "f.txt".to_owned(),
            purpose: upload.map_or_else(
                || purposes()[spec.purpose].clone(),
                |upload| upload.purpose.clone(),
            ),
            status: Some(FileStatus::Processed),
            status_details: None,
        },
        upload_id: upload.map(|upload| upload.id.clone()),
        part_ids: upload.map(UploadRecord::part_ids).unwrap_or_default(),
    }
}

impl Records {
    /// The reference: the ledger over every record, as a single process would hold them.
    fn ledger(&self) -> Ledger {
        Ledger::load_atomic(
            Limits::default(),
            self.uploads.iter().cloned(),
            self.files.iter().cloned(),
        )
    }

    /// The Upload of this id, as written.
    fn upload(&self, id: &UploadId) -> Option<&UploadRecord> {
        self.uploads.iter().find(|record| record.id == *id)
    }

    /// The File of this id, as written.
    fn file(&self, id: &FileId) -> Option<&FileRecord> {
        self.files.iter().find(|record| record.id() == id)
    }

    /// The Upload of this id in a line.
    fn describe_upload(&self, id: &UploadId) -> String {
        self.upload(id)
            .map_or_else(|| format!("{id} (not written)"), describe_upload)
    }

    /// The File of this id in a line.
    fn describe_file(&self, id: &FileId) -> String {
        self.file(id)
            .map_or_else(|| format!("{id} (not written)"), describe_file)
    }
}

/// An Upload in a line: what the rules of the sweep read.
fn describe_upload(record: &UploadRecord) -> String {
    let state = match &record.state {
        RecordState::Pending if record.parts_removed => "pending, parts_removed".to_owned(),
        RecordState::Pending => "pending".to_owned(),
        RecordState::Cancelled { .. } => "cancelled".to_owned(),
        RecordState::Completed(completion) => format!("completed as {}", completion.file.id),
    };
    format!(
        "Upload {} of {}: {state}, expires_at {}, {} Part(s)",
        record.id,
        record.owner,
        at(record.expires_at),
        record.parts.len()
    )
}

/// A File in a line: what the rules of the sweep and the list read.
fn describe_file(record: &FileRecord) -> String {
    format!(
        "File {} of {}: {}, created_at {}, expires_at {}{}",
        record.id(),
        record.owner,
        record.file.purpose.as_str(),
        at(record.file.created_at),
        record.file.expires_at.map_or("never".to_owned(), at),
        record
            .upload_id
            .as_ref()
            .map_or(String::new(), |upload| format!(", of {upload}")),
    )
}

/// One line per record (the bulk counted, not listed): what a failure shows.
impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "records (BASE = {BASE}, upload ttl {}s):", ttl())?;
        for record in self.uploads.iter().filter(|record| !is_bulk(&record.owner)) {
            writeln!(f, "  {}", describe_upload(record))?;
        }
        for record in self.files.iter().filter(|record| !is_bulk(&record.owner)) {
            writeln!(f, "  {}", describe_file(record))?;
        }
        if self.bulk > 0 {
            writeln!(
                f,
                "  + {} of {BULK_OWNER}: as many Files and pending Uploads with a Part, \
                 expiring at {}",
                self.bulk,
                at(grid()[0])
            )?;
        }
        Ok(())
    }
}

/// Whether a record is one of the bulk (see [`Records::bulk`]).
fn is_bulk(owner: &Owner) -> bool {
    owner.as_str() == BULK_OWNER
}

/// A fresh database of the test binary's cluster, migrated, and the backend over it.
async fn backend() -> (services::Namespace, PgRecords) {
    let namespace = services::Services::get().fresh();
    let records = PgRecords::connect(&namespace.database_url, Limits::default())
        .await
        .expect("connect to the test database");
    (namespace, records)
}

/// A fresh database whose text is ordered by the ICU collation of `locale` (as a database
/// created with that default would be), migrated, and the backend over it.
async fn backend_collated(locale: &str) -> PgRecords {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let services = services::Services::get();
    let name = format!(
        "t{}_icu_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    services.psql(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{locale}' \
         LOCALE 'C.UTF-8'"
    ));
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", services.pg_port);
    PgRecords::connect(&url, Limits::default())
        .await
        .expect("connect to the test database")
}

/// Empties the tables, then writes `set` as the service would have: the intents of the
/// objects first (as before their bytes are written), then, in one transaction, the steps
/// that made the records, through the backend's own [`write_steps`].
async fn write(backend: &PgRecords, set: &Records) {
    let mut client = backend.pool.get().await.expect("a connection");
    client
        .batch_execute("TRUNCATE uploads, upload_parts, files, doomed_objects")
        .await
        .expect("empty the tables");
    let transaction = client.transaction().await.expect("begin");
    let mut intents = Vec::new();
    let mut steps = Vec::new();
    for record in &set.uploads {
        intents.extend(
            record
                .parts
                .iter()
                .map(|part| part_key(&record.id, &part.id)),
        );
        let mut created = record.clone();
        created.parts.clear();
        steps.push(Step::SaveUpload(created));
        steps.extend(record.parts.iter().map(|part| Step::AddPart {
            upload_id: record.id.clone(),
            part: part.clone(),
        }));
    }
    for record in &set.files {
        if record.upload_id.is_none() {
            intents.push(file_key(record.id()));
        }
        steps.push(Step::SaveFile(record.clone()));
    }
    doom(&*transaction, &intents, to_i64(BASE))
        .await
        .expect("record the intents");
    write_steps(
        &*transaction,
        &steps,
        &Loaded::default(),
        BASE,
        &Scope::Nothing,
    )
    .await
    .expect("write the records");
    let intents_left: i64 = transaction
        .query_one("SELECT count(*) FROM doomed_objects", &[])
        .await
        .expect("count the intents")
        .get(0);
    assert_eq!(intents_left, 0, "every object written was recorded");
    transaction.commit().await.expect("commit");
}

/// What the sweeps of several instances claim at `now`.
struct Claimed {
    /// The claims, in the order they were made.
    batches: Vec<Loaded>,
    /// The Uploads the claims hold locked (another session cannot lock them).
    locked_uploads: BTreeSet<UploadId>,
    /// The Files the claims hold locked.
    locked_files: BTreeSet<FileId>,
}

/// Claims as the sweeps of several instances would at `now`: each batch in a transaction of
/// its own, left open so that the next skips the rows the earlier ones hold, until a claim
/// takes nothing; then asks another session which rows it cannot lock; then rolls back.
async fn claim_all(backend: &PgRecords, now: u64) -> Claimed {
    let mut sessions = Vec::new();
    let mut batches = Vec::new();
    loop {
        let session = backend.pool.get().await.expect("a connection");
        session.batch_execute("BEGIN").await.expect("begin");
        let loaded = claim_sweep(&**session, now, ttl())
            .await
            .expect("claim a batch");
        sessions.push(session);
        if loaded.uploads.is_empty() && loaded.files.is_empty() {
            break;
        }
        batches.push(loaded);
        // Each batch locks a row more at least, so this ends; the pool (one connection is
        // the probe's) bounds how many batches a case may need.
        assert!(
            sessions.len() < POOL_SIZE - 1,
            "more batches than the pool has connections"
        );
    }
    let probe = backend.pool.get().await.expect("a connection");
    let ids = |sql: &'static str| {
        let probe = &probe;
        async move {
            let rows = probe.query(sql, &[]).await.expect("probe the rows");
            rows.iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<BTreeSet<String>>()
        }
    };
    let all_uploads = ids("SELECT id FROM uploads").await;
    let free_uploads = ids("SELECT id FROM uploads FOR UPDATE SKIP LOCKED").await;
    let all_files = ids("SELECT id FROM files").await;
    let free_files = ids("SELECT id FROM files FOR UPDATE SKIP LOCKED").await;
    for session in &sessions {
        session.batch_execute("ROLLBACK").await.expect("roll back");
    }
    Claimed {
        batches,
        locked_uploads: all_uploads
            .difference(&free_uploads)
            .map(|id| UploadId::new(id.as_str()))
            .collect(),
        locked_files: all_files
            .difference(&free_files)
            .map(|id| FileId::new(id.as_str()))
            .collect(),
    }
}

/// The records a sweep's steps change, with the steps naming each.
#[derive(Default)]
struct Picks {
    /// The Uploads, and what the sweep does to each.
    uploads: BTreeMap<UploadId, Vec<String>>,
    /// The Files, and what the sweep does to each.
    files: BTreeMap<FileId, Vec<String>>,
}

/// Which records the ledger's sweep at `now` changes: an Upload it saves (marked
/// `parts_removed`) or removes, a File it removes.
///
/// A `RemoveParts` alone changes no record: it deletes bytes. It comes after the removal of
/// the File listing them, after the Upload's marking, or, for an Upload already marked, it
/// reports again bytes a fresh ledger cannot know are gone; this backend doomed those in
/// the transaction that marked the Upload, so no sweep needs to claim it again. Any other
/// `RemoveParts` fails the case, so this definition cannot hide a change.
fn ledger_picks(set: &Records, steps: &[Step]) -> Result<Picks, TestCaseError> {
    let mut picks = Picks::default();
    for step in steps {
        match step {
            Step::SaveUpload(record) => picks
                .uploads
                .entry(record.id.clone())
                .or_default()
                .push("marks it parts_removed".to_owned()),
            Step::RemoveUpload(id) => picks
                .uploads
                .entry(id.clone())
                .or_default()
                .push("removes it".to_owned()),
            Step::RemoveFile(id) => picks
                .files
                .entry(id.clone())
                .or_default()
                .push("removes it".to_owned()),
            Step::RemoveParts { upload_id, .. } => {
                let with_its_file = picks.files.keys().any(|file| {
                    set.file(file)
                        .is_some_and(|record| record.upload_id.as_ref() == Some(upload_id))
                });
                let with_its_mark = picks.uploads.contains_key(upload_id);
                let marked_before = set.upload(upload_id).is_some_and(|record| {
                    record.parts_removed && matches!(record.state, RecordState::Pending)
                });
                if !(with_its_file || with_its_mark || marked_before) {
                    return Err(TestCaseError::fail(format!(
                        "the ledger's sweep removes Parts of {} without changing a record: \
                         this test's notion of a pick needs updating",
                        set.describe_upload(upload_id)
                    )));
                }
            }
            Step::AddPart { .. } | Step::SaveFile(_) => {
                return Err(TestCaseError::fail(format!(
                    "a sweep never adds records, yet: {step:?}"
                )));
            }
        }
    }
    Ok(picks)
}

/// Whether a step is a sweep's report, again, of the Parts of an Upload already marked
/// `parts_removed` (see [`ledger_picks`]).
fn reports_again(set: &Records, steps: &[Step], index: usize) -> bool {
    let Step::RemoveParts { upload_id, .. } = &steps[index] else {
        return false;
    };
    // The ledger puts the removal of a File, or the marking of an Upload, right before the
    // Parts it dooms.
    let after_its_change = index
        .checked_sub(1)
        .is_some_and(|before| match &steps[before] {
            Step::SaveUpload(record) => record.id == *upload_id,
            Step::RemoveFile(id) => set
                .file(id)
                .is_some_and(|file| file.upload_id.as_ref() == Some(upload_id)),
            _ => false,
        });
    !after_its_change
}

/// What the claims return agrees with what they lock: every Upload they return, once,
/// locked, and as it was written; every File they lock returned; the Files they return
/// without locking are those of the completed Uploads they return (read for the ledger, not
/// claimed).
fn check_returned(set: &Records, when: &str, claimed: &Claimed) -> Result<(), TestCaseError> {
    let mut returned_uploads = BTreeSet::new();
    let mut context_files = BTreeSet::new();
    let mut returned_files = BTreeSet::new();
    for loaded in &claimed.batches {
        for (record, _) in &loaded.uploads {
            prop_assert!(
                returned_uploads.insert(record.id.clone()),
                "{when}: two batches claim {}",
                set.describe_upload(&record.id)
            );
            prop_assert_eq!(
                Some(record),
                set.upload(&record.id),
                "{}: the claim reads the Upload back changed",
                when
            );
            if let RecordState::Completed(completion) = &record.state {
                context_files.insert(completion.file.id.clone());
            }
        }
        for record in &loaded.files {
            prop_assert_eq!(
                Some(record),
                set.file(record.id()),
                "{}: the claim reads the File back changed",
                when
            );
            returned_files.insert(record.id().clone());
        }
    }
    prop_assert_eq!(
        &returned_uploads,
        &claimed.locked_uploads,
        "{}: the Uploads the claims return are not those they lock",
        when
    );
    for id in returned_files.difference(&claimed.locked_files) {
        prop_assert!(
            context_files.contains(id),
            "{when}: the claims return {} unlocked, though no Upload they claim was \
             completed as it",
            set.describe_file(id)
        );
    }
    if let Some(id) = claimed.locked_files.difference(&returned_files).next() {
        return Err(TestCaseError::fail(format!(
            "{when}: the claims lock {} without returning it",
            set.describe_file(id)
        )));
    }
    Ok(())
}

/// Fails unless the SQL claim locked exactly the records the ledger's sweep changes.
fn same_records<Id: Ord>(
    when: &str,
    picked: &BTreeMap<Id, Vec<String>>,
    locked: &BTreeSet<Id>,
    describe: impl Fn(&Id) -> String,
) -> Result<(), TestCaseError> {
    for (id, what) in picked {
        prop_assert!(
            locked.contains(id),
            "{when}: the SQL claim misses {}; the ledger's sweep {}",
            describe(id),
            what.join(" and ")
        );
    }
    for id in locked {
        prop_assert!(
            picked.contains_key(id),
            "{when}: the SQL claim takes {}, which the ledger's sweep leaves alone",
            describe(id)
        );
    }
    Ok(())
}

/// The claim at `now` against the ledger's sweep at `now`.
fn check_claim(set: &Records, now: u64, claimed: &Claimed) -> Result<(), TestCaseError> {
    let when = format!("at now = {} ({now})", at(now));
    let steps = set
        .ledger()
        .sweep(now)
        .map(|change| change.steps().to_vec())
        .unwrap_or_default();
    let expected = ledger_picks(set, &steps)?;
    check_returned(set, &when, claimed)?;
    // The claim against the ledger, record by record.
    same_records(&when, &expected.uploads, &claimed.locked_uploads, |id| {
        set.describe_upload(id)
    })?;
    same_records(&when, &expected.files, &claimed.locked_files, |id| {
        set.describe_file(id)
    })?;
    // In one batch, the ledger over the claimed rows (what `PgRecords::sweep` plans with)
    // plans what the ledger over every record does, less the reports again.
    if let [only] = claimed.batches.as_slice() {
        let planned = only
            .ledger(&Limits::default())
            .sweep(now)
            .map(|change| change.steps().to_vec())
            .unwrap_or_default();
        let reference: Vec<Step> = steps
            .iter()
            .enumerate()
            .filter(|&(index, _)| !reports_again(set, &steps, index))
            .map(|(_, step)| step.clone())
            .collect();
        prop_assert_eq!(
            planned,
            reference,
            "{}: the ledger over the claimed rows plans another sweep",
            when
        );
    }
    Ok(())
}

/// A fresh runner of `cases`, keeping failures beside this file like the workspace's other
/// property tests (`proptest-regressions/`).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_shrink_iters: MAX_SHRINK_ITERS,
        source_file: Some(file!()),
        ..Config::default()
    })
}

/// A runtime for a property's cases (the runner calls them synchronously); the pool's
/// connections live on its worker between cases.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs the sweep property over `cases` drawn from `case`: records, and the times to sweep
/// them at.
fn check_sweeps(cases: u32, case: impl Strategy<Value = (Records, Vec<u64>)>) {
    let runtime = runtime();
    let (_namespace, backend) = runtime.block_on(backend());
    let outcome = runner(cases).run(&case, |(set, nows)| {
        runtime.block_on(async {
            write(&backend, &set).await;
            for now in nows {
                let claimed = claim_all(&backend, now).await;
                check_claim(&set, now, &claimed)?;
            }
            Ok(())
        })
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// For random records and every `now` of the grid, the rows the sweep claims are exactly
/// the records the ledger's sweep changes.
///
/// The reference is [`Ledger::sweep`], not [`Ledger::sweep_each`]: `PgRecords::sweep` plans
/// with it, a File and its completed Upload going in one transaction.
#[test]
fn the_sweep_claims_exactly_what_the_ledger_sweeps() {
    check_sweeps(
        SWEEP_CASES,
        records(0..10, Just(0).boxed()).prop_map(|set| (set, grid())),
    );
}

/// Cases of the usage property; each checks every owner at every `now` of the grid.
const USAGE_CASES: u32 = 32;

/// For random records, every owner and every `now` of the grid, the usage the SQL counts is
/// the ledger's over every record: the quota holds the same on both backends.
#[test]
fn the_usage_counted_in_sql_is_the_ledgers() {
    let runtime = runtime();
    let (_namespace, backend) = runtime.block_on(backend());
    let outcome = runner(USAGE_CASES).run(&records(0..10, Just(0).boxed()), |set| {
        runtime.block_on(async {
            write(&backend, &set).await;
            let reference = set.ledger();
            for now in grid() {
                for owner in OWNERS
                    .iter()
                    .chain(&["proj_nobody"])
                    .map(|name| Owner::new(*name))
                {
                    let counted = backend
                        .read(&Scope::Quota(owner.clone()), now, |ledger, now| {
                            Ok(ledger.usage(&owner, now))
                        })
                        .await
                        .map_err(|rejection| TestCaseError::fail(rejection.to_string()))?;
                    prop_assert_eq!(
                        counted,
                        reference.usage(&owner, now),
                        "{} at {}: {:?}",
                        owner,
                        at(now),
                        set
                    );
                }
            }
            Ok(())
        })
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// The same with more due records than one claim takes ([`SWEEP_CLAIM_BATCH`]), due first, so
/// that the records drawn are left to a later batch; at four times of the grid (each claim
/// of the bulk reads hundreds of rows).
#[test]
fn the_sweep_claims_exactly_what_the_ledger_sweeps_over_several_batches() {
    let batch = usize::try_from(SWEEP_CLAIM_BATCH).expect("a small batch");
    check_sweeps(
        BATCHED_SWEEP_CASES,
        (
            records(0..10, ((batch + 1)..=(batch + 30)).boxed()),
            proptest::sample::subsequence(grid(), 4),
        ),
    );
}

/// Who asks, what, when: one `GET /files`.
#[derive(Debug, Clone)]
struct ListSpec {
    /// An index of [`OWNERS`], or one past it: an owner of nothing.
    owner: usize,
    /// `purpose=`, if given.
    purpose: Option<Purpose>,
    /// `order=`, if given.
    order: Option<ListOrder>,
    /// `limit=`, if given.
    limit: Option<u32>,
    /// `after=`, if given.
    after: AfterSpec,
    /// An index of [`grid`].
    now: usize,
}

/// The `after` cursor of a query.
#[derive(Debug, Clone)]
enum AfterSpec {
    /// No cursor: the first page.
    None,
    /// One of the asking owner's Files live at `now`, by index; unknown when they have none.
    OwnLive(usize),
    /// One of the asking owner's Files, live or expired, by index; unknown when they have
    /// none.
    Own(usize),
    /// Any File, by index: often another owner's.
    Any(usize),
    /// An id as a client may send it (it may name a File).
    Named(String),
}

/// Queries of any owner, mostly answered with a page (now and then refused), at any time of
/// the grid.
fn list_spec() -> impl Strategy<Value = ListSpec> {
    // Mostly queries the ledger answers with a page; now and then one it refuses.
    let purpose = prop_oneof![
        4 => Just(None),
        3 => (0..purposes().len()).prop_map(|index| Some(purposes()[index].clone())),
        1 => Just(Some(Purpose::Vision)),
        1 => Just(Some(Purpose::from_wire("moderation"))),
    ];
    let order = prop_oneof![
        3 => Just(None),
        4 => Just(Some(ListOrder::Asc)),
        4 => Just(Some(ListOrder::Desc)),
        1 => Just(Some(ListOrder::from_wire("up"))),
    ];
    let limit = prop_oneof![
        3 => Just(None),
        12 => (1_u32..=4).prop_map(Some),
        1 => Just(Some(0)),
        1 => Just(Some(10_000)),
        1 => Just(Some(10_001)),
    ];
    let after = prop_oneof![
        3 => Just(AfterSpec::None),
        6 => any::<usize>().prop_map(AfterSpec::OwnLive),
        2 => any::<usize>().prop_map(AfterSpec::Own),
        1 => any::<usize>().prop_map(AfterSpec::Any),
        1 => "file-[A-Za-z0-9]{1,2}".prop_map(AfterSpec::Named),
        1 => prop_oneof![Just("file-\u{e9}"), Just("upload_00"), Just("file-\u{10FFFF}")]
            .prop_map(|id| AfterSpec::Named(id.to_owned())),
    ];
    let owner = prop_oneof![6 => 0..OWNERS.len(), 1 => Just(OWNERS.len())];
    (owner, purpose, order, limit, after, 0..grid().len()).prop_map(
        |(owner, purpose, order, limit, after, now)| ListSpec {
            owner,
            purpose,
            order,
            limit,
            after,
            now,
        },
    )
}

impl ListSpec {
    /// The owner, the query and `now` this spec asks with, over `set`.
    fn resolve(&self, set: &Records) -> (Owner, ListFilesQuery, u64) {
        let owner = Owner::new(OWNERS.get(self.owner).copied().unwrap_or("proj_nobody"));
        let now = grid()[self.now];
        let pick = |files: Vec<&FileRecord>, index: usize| {
            files
                .get(index % files.len().max(1))
                .map_or_else(|| FileId::new("file-none"), |record| record.id().clone())
        };
        let after = match &self.after {
            AfterSpec::None => None,
            AfterSpec::OwnLive(index) => Some(pick(
                set.files
                    .iter()
                    .filter(|record| record.owner == owner && !record.is_expired(now))
                    .collect(),
                *index,
            )),
            AfterSpec::Own(index) => Some(pick(
                set.files
                    .iter()
                    .filter(|record| record.owner == owner)
                    .collect(),
                *index,
            )),
            AfterSpec::Any(index) => Some(pick(set.files.iter().collect(), *index)),
            AfterSpec::Named(id) => Some(FileId::new(id.as_str())),
        };
        let query = ListFilesQuery {
            purpose: self.purpose.clone(),
            limit: self.limit,
            order: self.order.clone(),
            after,
        };
        (owner, query, now)
    }
}

/// One query: the ledger over the page [`list_page`] loads against the ledger over every
/// record; and the page is a page, not the owner's every File.
async fn check_list(
    backend: &PgRecords,
    set: &Records,
    spec: &ListSpec,
) -> Result<(), TestCaseError> {
    let (owner, query, now) = spec.resolve(set);
    let asked = format!("{owner} asking {query:?} at now = {} ({now})", at(now));
    let client = backend.pool.get().await.expect("a connection");
    let page = list_page(&**client, owner.as_str(), &query, now)
        .await
        .map_err(|error| {
            TestCaseError::fail(format!(
                "{asked}: list_page failed: {}",
                with_sources(&error)
            ))
        })?;
    let shown: Vec<String> = page.iter().map(describe_file).collect();
    let expected = set.ledger().list_files(&owner, &query, now);
    let got = Ledger::load_atomic(Limits::default(), Vec::new(), page.clone())
        .list_files(&owner, &query, now);
    prop_assert_eq!(
        got,
        expected,
        "{}: the ledger over the page list_page loaded (left) answers otherwise than over \
         every record (right); the page:\n  {}",
        asked,
        shown.join("\n  ")
    );
    // The page, one File to tell whether more follow, and the cursor's own.
    let most = usize::try_from(i64::from(query.limit.unwrap_or(10_000)).clamp(1, MAX_LIST_LIMIT))
        .expect("a small limit")
        + 1
        + usize::from(query.after.is_some());
    prop_assert!(
        page.len() <= most,
        "{asked}: list_page loaded {} Files, more than a page ({most}):\n  {}",
        page.len(),
        shown.join("\n  ")
    );
    Ok(())
}

/// For random records and random queries (owner, purpose, order, limit, `after` of the
/// owner's, of another's or unknown, `now`), the ledger over only the Files [`list_page`]
/// loads answers `GET /files` exactly as the ledger over every record.
#[test]
fn a_listed_page_is_answered_as_over_every_file() {
    let runtime = runtime();
    let (_namespace, backend) = runtime.block_on(backend());
    let case = (
        // Enough Files that each owner has a few live ones of a purpose at most times.
        records(8..32, Just(0).boxed()),
        proptest::collection::vec(list_spec(), QUERIES_PER_CASE / 2..=QUERIES_PER_CASE),
    );
    let outcome = runner(LIST_CASES).run(&case, |(set, specs)| {
        runtime.block_on(async {
            write(&backend, &set).await;
            for spec in &specs {
                check_list(&backend, &set, spec).await?;
            }
            Ok(())
        })
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// Two Files of `proj_a` created in the same second, `file-a` and `file-B` (`file-B` first
/// by bytes, second by a linguistic collation), and the query `asc`, `after=file-B`.
fn two_files_in_one_second() -> (Records, ListSpec) {
    let file = |name: &str| FileSpec {
        owner: 0,
        purpose: 0,
        created: 0,
        expires: None,
        name: name.to_owned(),
    };
    let spec = ListSpec {
        owner: 0,
        purpose: None,
        order: Some(ListOrder::Asc),
        limit: None,
        after: AfterSpec::Named("file-B".to_owned()),
        now: 0,
    };
    (build(&[], &[file("a"), file("B")], 0), spec)
}

/// The ledger orders Files of one second by the bytes of their ids; `list_page` orders and
/// cuts them by the database's collation of `text`. The test cluster's default is
/// `C.UTF-8` (byte order), where they agree and the property above passes; a database
/// created with a linguistic default (ICU, or glibc's `en_US.UTF-8`, the default of many
/// installations and managed services) orders `file-a` before `file-B`, so `GET
/// /files?order=asc&after=file-B` loads no `file-a` and the page leaves it out (the ledger
/// over every record lists it): pages left out Files created in the same second as others,
/// or showed others in their place. Found by the list property run on such a database;
/// migration 0005 makes the id column `COLLATE "C"`.
#[test]
fn pages_follow_the_ledgers_id_order_whatever_the_databases_collation() {
    let runtime = runtime();
    let backend = runtime.block_on(backend_collated("en-US"));
    let (set, spec) = two_files_in_one_second();
    let outcome = runtime.block_on(async {
        write(&backend, &set).await;
        check_list(&backend, &set, &spec).await
    });
    if let Err(error) = outcome {
        panic!("{set:?}{error}");
    }
}

/// A query may carry a NUL (`GET /files?purpose=%00` or `after=file-%00` decode to one),
/// which PostgreSQL refuses in `text`: `list_page` failed, and the service answered 503 with
/// `Retry-After` (which SDKs retry), where the ledger answers 200 with no Files for the
/// purpose and 400 `after` for the cursor. Found by the list property when its queries drew
/// NULs; `list_page` now asks nothing of a NUL (no stored text holds one).
#[test]
fn a_nul_in_a_list_query_is_answered_as_by_the_ledger() {
    let runtime = runtime();
    let (_namespace, backend) = runtime.block_on(backend());
    let (set, plain) = two_files_in_one_second();
    let specs = [
        ListSpec {
            purpose: Some(Purpose::from_wire("\0")),
            after: AfterSpec::None,
            ..plain.clone()
        },
        ListSpec {
            after: AfterSpec::Named("file-\0".to_owned()),
            ..plain
        },
    ];
    let failures: Vec<String> = runtime.block_on(async {
        write(&backend, &set).await;
        let mut failures = Vec::new();
        for spec in &specs {
            if let Err(error) = check_list(&backend, &set, spec).await {
                let (owner, query, now) = spec.resolve(&set);
                let scope = Scope::List {
                    owner: owner.as_str().to_owned(),
                    query: query.clone(),
                };
                let served = backend
                    .read(&scope, now, |ledger, now| {
                        ledger.list_files(&owner, &query, now)
                    })
                    .await
                    .map(|list| list.data.len());
                failures.push(format!(
                    "{error}\n  the ledger over every record answers: {:?}\n  the \
                     backend serves (Files listed, or the refusal): {served:?}",
                    set.ledger().list_files(&owner, &query, now)
                ));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
