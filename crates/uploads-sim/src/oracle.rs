//! The invariants, checked after every event and at every answer: what the system promised,
//! against what is durable and what a restart would load.
//!
//! 1. Each completed File's bytes equal its source, read through its manifest.
//! 2. No File lists a Part it was not asked to list: its manifest is one a complete sent for
//!    that Upload, and every Part of it belongs to the Upload.
//! 3. Every acknowledged change survives any crash: a created Upload, a stored Part, a
//!    completed or cancelled Upload stay as answered (until the sweep's retention removes
//!    them, which the oracle sees happen).
//! 4. An answer equals what a restart sees: a 200 is checked against the durable records at
//!    the moment it is sent.
//! 5. A complete has one winner and its replay returns the same File; an Upload has at most
//!    one File.
//! 6. A give-up leaves the Upload cancelled or resumable (the client runs again from its
//!    snapshot, and must then finish), checked at the end of the run.
//! 7. Progress never exceeds the file and ends at it (checked by the client).
//! 8. Each client finishes within its deadline (checked at the end of the run).
//! 9. Retries stay within the policy: no Part is sent more times than the policy allows
//!    (checked by the client).
//! 10. The sweep removes only what its rules allow, judged by a reference written here
//!     apart from the ledger's: an Upload's Parts once it expired (at `expires_at`, by the
//!     deciding clock), a finished Upload's record once retained for an Upload lifetime
//!     more (and, completed, once its File is gone), a File once it expired or was never
//!     committed; and every Part of an Upload that is pending and not expired keeps its
//!     bytes.
//! 11. Expiry answers agree with the reference: an Upload answered `expired`, or refused as
//!     "already expired", is past its `expires_at` (or its Parts were swept); one answered
//!     `pending` is not.
//! 12. The sweep leaves nothing due behind: at the end of the run, no File expired, no
//!     expired Upload's Parts and no Upload past its retention are still stored ten minutes
//!     after they were due (the sweep runs at least every two minutes).
//! 13. The ledgers agree with the records, after every event: the one a running directory
//!     instance holds, the one a restart would load (`Ledger::load` over the disk), and the one
//!     a team-backend transaction loads take a Part exactly for the Uploads the reference
//!     says are pending, and serve exactly the committed, unexpired Files.

use std::collections::{BTreeMap, BTreeSet};

use uploads_core::ledger::{Ledger, RecordState, SequentialIds, Step, UploadRecord};
use uploads_core::types::UploadId;
use uploads_core::types::{FileId, PartId, Upload, UploadPart, UploadStatus};

use crate::server::{Store, owner};
use crate::storage::{Bytes, Truth};
use crate::world::World;

/// What a 200 answer acknowledges.
#[derive(Debug, Clone)]
pub enum Acknowledged {
    /// Nothing to keep.
    Nothing,
    /// An Upload was created.
    Created,
    /// A Part was stored, with these bytes.
    Part(UploadId, PartId, Vec<u8>),
    /// An Upload was completed (or a complete replayed).
    Completed(UploadId),
    /// An Upload was cancelled (or a cancel replayed).
    Cancelled(UploadId),
}

/// What was promised, and what happened that explains a record's absence.
#[derive(Debug, Default)]
pub struct Oracle {
    created: BTreeSet<UploadId>,
    parts: BTreeSet<(UploadId, PartId)>,
    completed: BTreeMap<UploadId, FileId>,
    cancelled: BTreeSet<UploadId>,
    /// Uploads and Files the sweep removed (their retention or expiry was up).
    swept_uploads: BTreeSet<UploadId>,
    swept_files: BTreeSet<FileId>,
    /// Every `part_ids` list a complete sent, by Upload.
    manifests: BTreeMap<UploadId, Vec<Vec<PartId>>>,
    /// Uploads a racer acted on.
    raced: BTreeSet<UploadId>,
    /// Files the clients were told of when they finished.
    finished: BTreeMap<usize, (UploadId, FileId)>,
}

impl Oracle {
    /// A complete was sent for `upload` listing `part_ids`.
    pub fn complete_sent(&mut self, upload: &UploadId, part_ids: Vec<PartId>) {
        self.manifests
            .entry(upload.clone())
            .or_default()
            .push(part_ids);
    }

    /// The racer acted on `upload`.
    pub fn raced(&mut self, upload: &UploadId) {
        self.raced.insert(upload.clone());
    }

    /// Whether the racer acted on `upload`.
    pub fn was_raced(&self, upload: &UploadId) -> bool {
        self.raced.contains(upload)
    }

    /// A sweep removed what `steps` remove.
    pub fn swept(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::RemoveUpload(id) => {
                    self.swept_uploads.insert(id.clone());
                }
                Step::RemoveFile(id) => {
                    self.swept_files.insert(id.clone());
                }
                _ => {}
            }
        }
    }

    /// Client `client` finished with `upload`.
    pub fn client_completed(&mut self, client: usize, upload: &Upload) {
        if let Some(file) = &upload.file {
            self.finished
                .insert(client, (upload.id.clone(), file.id.clone()));
        }
    }

    /// A 200 is being sent with `body`: it must be what the durable records say (4), and
    /// a complete's File must be the one every other complete of the Upload got (5).
    pub fn acknowledged(
        &mut self,
        acknowledged: &Acknowledged,
        body: &[u8],
        truth: &Truth,
        now: u64,
    ) -> Result<(), String> {
        match acknowledged {
            Acknowledged::Nothing => Ok(()),
            Acknowledged::Created => {
                let upload: Upload = parse(body)?;
                let record = truth.uploads.get(&upload.id).ok_or_else(|| {
                    format!(
                        "create answered {} but no record of it is durable",
                        upload.id
                    )
                })?;
                let restarted = record.to_upload(now);
                if restarted.status != upload.status || restarted.bytes != upload.bytes {
                    return Err(format!(
                        "create answered {upload:?}, a restart sees {restarted:?}"
                    ));
                }
                self.created.insert(upload.id);
                Ok(())
            }
            Acknowledged::Part(upload, _, data) => {
                let part: UploadPart = parse(body)?;
                let record = truth.uploads.get(upload).ok_or_else(|| {
                    format!(
                        "{} was answered stored in {upload}, whose record is not durable",
                        part.id
                    )
                })?;
                if reference_status(record, now) != UploadStatus::Pending {
                    return Err(format!(
                        "{} was accepted into {upload}, which is {:?} at {now}",
                        part.id,
                        reference_status(record, now)
                    ));
                }
                let stored = record.part(&part.id).ok_or_else(|| {
                    format!(
                        "{} was answered stored in {upload}, but a restart does not know it",
                        part.id
                    )
                })?;
                if stored.bytes != data.len() as u64 {
                    return Err(format!(
                        "{} was stored with {} bytes, recorded with {}",
                        part.id,
                        data.len(),
                        stored.bytes
                    ));
                }
                self.parts.insert((upload.clone(), part.id));
                Ok(())
            }
            Acknowledged::Completed(id) => self.acknowledged_complete(id, body, truth, now),
            Acknowledged::Cancelled(id) => {
                let upload: Upload = parse(body)?;
                if upload.status != UploadStatus::Cancelled {
                    return Err(format!("cancel of {id} answered {:?}", upload.status));
                }
                match truth.uploads.get(id).map(|record| &record.state) {
                    Some(RecordState::Cancelled { .. }) => {}
                    other => {
                        return Err(format!("cancel of {id} answered, a restart sees {other:?}"));
                    }
                }
                self.cancelled.insert(id.clone());
                Ok(())
            }
        }
    }

    /// Invariants 4 and 5 for a 200 to a complete of `id`.
    fn acknowledged_complete(
        &mut self,
        id: &UploadId,
        body: &[u8],
        truth: &Truth,
        now: u64,
    ) -> Result<(), String> {
        let upload: Upload = parse(body)?;
        let file = upload
            .file
            .as_ref()
            .ok_or_else(|| format!("complete of {id} answered without a File"))?;
        if let Some(first) = self.completed.get(id)
            && *first != file.id
        {
            return Err(format!("{id} was completed twice: {first} and {}", file.id));
        }
        let record = truth
            .uploads
            .get(id)
            .ok_or_else(|| format!("complete of {id} answered, its record is gone"))?;
        match &record.state {
            RecordState::Completed(completion) if completion.file.id == file.id => {}
            other => {
                return Err(format!(
                    "complete of {id} answered {}, a restart sees {other:?}",
                    file.id
                ));
            }
        }
        // A replay may name a File that expired since, and was swept.
        let gone_by_expiry =
            self.swept_files.contains(&file.id) || file.expires_at.is_some_and(|at| at <= now);
        if !truth.files.contains_key(&file.id) && !gone_by_expiry {
            return Err(format!(
                "complete of {id} answered {}, whose record a restart does not load",
                file.id
            ));
        }
        self.completed.insert(id.clone(), file.id.clone());
        Ok(())
    }

    /// Invariants 1, 2, 3 and 5 over the durable records and bytes.
    pub fn check(
        &self,
        truth: &Truth,
        bytes: &Bytes,
        sources: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        let mut files_of: BTreeMap<&UploadId, &FileId> = BTreeMap::new();
        for file in truth.files.values() {
            let Some(upload) = &file.upload_id else {
                continue;
            };
            if let Some(other) = files_of.insert(upload, file.id()) {
                return Err(format!("{upload} has two Files: {other} and {}", file.id()));
            }
            let data = bytes.read(upload, &file.part_ids).map_err(|part| {
                format!(
                    "{} lost the bytes of its Part {part} (Upload {upload})",
                    file.id()
                )
            })?;
            if let Some(source) = sources.get(&file.file.filename)
                && data != *source
            {
                return Err(format!(
                    "{} holds {} bytes that are not its source's {} bytes",
                    file.id(),
                    data.len(),
                    source.len()
                ));
            }
            let sent = self
                .manifests
                .get(upload)
                .is_some_and(|lists| lists.contains(&file.part_ids));
            if !sent {
                return Err(format!(
                    "{} lists {:?}, which no complete of {upload} sent",
                    file.id(),
                    file.part_ids
                ));
            }
            if let Some(record) = truth.uploads.get(upload)
                && let Some(stray) = file
                    .part_ids
                    .iter()
                    .find(|part| record.part(part).is_none())
            {
                return Err(format!(
                    "{} lists {stray}, not a Part of {upload}",
                    file.id()
                ));
            }
        }
        for upload in &self.created {
            if !truth.uploads.contains_key(upload) && !self.swept_uploads.contains(upload) {
                return Err(format!("the acknowledged {upload} is gone"));
            }
        }
        for (upload, part) in &self.parts {
            if let Some(record) = truth.uploads.get(upload)
                && record.part(part).is_none()
            {
                return Err(format!("the acknowledged {part} of {upload} is gone"));
            }
        }
        for (upload, file) in &self.completed {
            match truth.uploads.get(upload).map(|record| &record.state) {
                Some(RecordState::Completed(completion)) if completion.file.id == *file => {}
                None if self.swept_uploads.contains(upload) => {}
                other => {
                    return Err(format!(
                        "the acknowledged complete of {upload} ({file}) is now {other:?}"
                    ));
                }
            }
            if !truth.files.contains_key(file) && !self.swept_files.contains(file) {
                return Err(format!("the acknowledged {file} of {upload} is gone"));
            }
        }
        for upload in &self.cancelled {
            match truth.uploads.get(upload).map(|record| &record.state) {
                Some(RecordState::Cancelled { .. }) => {}
                None if self.swept_uploads.contains(upload) => {}
                other => {
                    return Err(format!(
                        "the acknowledged cancel of {upload} is now {other:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The reference's expiry: pending, and its time is up or its Parts were swept.
fn reference_expired(record: &UploadRecord, now: u64) -> bool {
    matches!(record.state, RecordState::Pending)
        && (record.parts_removed || now >= record.expires_at)
}

/// The reference's status of an Upload record at `now`.
fn reference_status(record: &UploadRecord, now: u64) -> UploadStatus {
    match &record.state {
        RecordState::Pending if reference_expired(record, now) => UploadStatus::Expired,
        RecordState::Pending => UploadStatus::Pending,
        RecordState::Cancelled { .. } => UploadStatus::Cancelled,
        RecordState::Completed(_) => UploadStatus::Completed,
    }
}

impl Oracle {
    /// Invariant 10: a sweep at `now` (the sweeping instance's deciding time) over the
    /// records `before` it may take these steps.
    pub fn check_sweep(
        &self,
        before: &Truth,
        steps: &[Step],
        now: u64,
        ttl: u64,
    ) -> Result<(), String> {
        let removed_files: BTreeSet<&FileId> = steps
            .iter()
            .filter_map(|step| match step {
                Step::RemoveFile(id) => Some(id),
                _ => None,
            })
            .collect();
        for step in steps {
            match step {
                Step::SaveUpload(record) => {
                    let was = before.uploads.get(&record.id);
                    if record.parts_removed
                        && was.is_some_and(|was| !was.parts_removed)
                        && now < record.expires_at
                    {
                        return Err(format!(
                            "the sweep at {now} marked {} expired, which expires at {}",
                            record.id, record.expires_at
                        ));
                    }
                }
                Step::RemoveParts {
                    upload_id,
                    part_ids,
                } => {
                    let Some(record) = before.uploads.get(upload_id) else {
                        continue;
                    };
                    let listed: &[uploads_core::types::PartId] = match &record.state {
                        RecordState::Completed(completion)
                            if !removed_files.contains(&completion.file.id) =>
                        {
                            &completion.part_ids
                        }
                        _ => &[],
                    };
                    if matches!(record.state, RecordState::Pending)
                        && !reference_expired(record, now)
                        && now < record.expires_at
                    {
                        return Err(format!(
                            "the sweep at {now} removed Parts of {upload_id}, pending until {}",
                            record.expires_at
                        ));
                    }
                    if let Some(part) = part_ids.iter().find(|part| listed.contains(part)) {
                        return Err(format!(
                            "the sweep removed {part}, listed by the live File of {upload_id}"
                        ));
                    }
                }
                Step::RemoveUpload(id) => {
                    let Some(record) = before.uploads.get(id) else {
                        continue;
                    };
                    let retained_until = record.expires_at + ttl;
                    if now < retained_until {
                        return Err(format!(
                            "the sweep at {now} removed {id}, retained until {retained_until}"
                        ));
                    }
                    if let RecordState::Completed(completion) = &record.state
                        && before.files.contains_key(&completion.file.id)
                        && !removed_files.contains(&completion.file.id)
                    {
                        return Err(format!(
                            "the sweep removed {id}, whose File {} lives",
                            completion.file.id
                        ));
                    }
                }
                Step::RemoveFile(id) => {
                    if let Some(file) = before.files.get(id)
                        && file.file.expires_at.is_none_or(|at| at > now)
                    {
                        return Err(format!(
                            "the sweep at {now} removed {id}, which expires at {:?}",
                            file.file.expires_at
                        ));
                    }
                }
                Step::AddPart { .. } | Step::SaveFile(_) => {
                    return Err(format!("the sweep wrote {step:?}"));
                }
            }
        }
        Ok(())
    }

    /// Invariant 10's second half: every Part of a live Upload keeps its bytes.
    pub fn check_live_bytes(&self, truth: &Truth, bytes: &Bytes, now: u64) -> Result<(), String> {
        for record in truth.uploads.values() {
            if reference_status(record, now) != UploadStatus::Pending {
                continue;
            }
            if let Some(part) = record.parts.iter().find(|part| {
                !bytes
                    .parts
                    .contains_key(&(record.id.clone(), part.id.clone()))
            }) {
                return Err(format!(
                    "{} is pending until {}, but the bytes of its {} are gone",
                    record.id, record.expires_at, part.id
                ));
            }
        }
        Ok(())
    }

    /// Invariant 11 for a refusal: "already expired" only for an Upload the reference
    /// says has expired.
    pub fn check_refusal(
        &self,
        truth: &Truth,
        upload: &UploadId,
        message: &str,
        now: u64,
    ) -> Result<(), String> {
        if !message.contains("already expired") {
            return Ok(());
        }
        match truth.uploads.get(upload) {
            Some(record) if !reference_expired(record, now) => Err(format!(
                "{upload} was refused as expired at {now}; it is {:?} until {} (parts removed: {})",
                record.state, record.expires_at, record.parts_removed
            )),
            _ => Ok(()),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|error| format!("a 200 body that is not the object: {error}"))
}

impl World {
    /// Invariants 1, 2, 3 and 5, after every event.
    pub(crate) fn check(&mut self) {
        let truth = self.store.truth();
        let sources = self.sources();
        let now = self.true_deciding_secs();
        let checked = self
            .oracle
            .check(&truth, self.store.bytes(), &sources)
            .and_then(|()| {
                self.oracle
                    .check_live_bytes(&truth, self.store.bytes(), now)
            })
            .and_then(|()| self.check_ledgers(&truth, now));
        if let Err(broken) = checked {
            self.violate(broken);
        }
    }

    fn sources(&self) -> BTreeMap<String, Vec<u8>> {
        self.clients
            .iter()
            .map(|client| (client.name.clone(), client.source.clone()))
            .collect()
    }

    /// Invariant 12: every ledger the system would decide with agrees with the reference.
    fn check_ledgers(&self, truth: &Truth, now: u64) -> Result<(), String> {
        let mut ledgers: Vec<(&str, Ledger)> = Vec::new();
        let stored_files: Vec<FileId> = match &self.store {
            Store::Directory { disk, .. } => {
                ledgers.push(("a restart", disk.restart_view(&self.limits)));
                if let Some(ledger) = self.instances[0].ledger() {
                    ledgers.push(("the running instance", ledger.clone()));
                }
                disk.files.keys().cloned().collect()
            }
            Store::Shared { rows, .. } => {
                ledgers.push(("a transaction", rows.ledger(&self.limits, false)));
                rows.files.keys().cloned().collect()
            }
        };
        let owner = owner();
        let mut ids = SequentialIds::new();
        for (name, ledger) in &ledgers {
            for record in truth.uploads.values() {
                let expected = reference_status(record, now);
                let takes_part = ledger
                    .check_add_part(&owner, &record.id, now, &mut ids)
                    .is_ok();
                if takes_part != (expected == UploadStatus::Pending) {
                    return Err(format!(
                        "{name} {} a Part for {} at {now}, which the records say is {expected:?}",
                        if takes_part { "takes" } else { "refuses" },
                        record.id
                    ));
                }
            }
            for id in &stored_files {
                let live = truth
                    .files
                    .get(id)
                    .is_some_and(|file| file.file.expires_at.is_none_or(|at| at > now));
                if ledger.retrieve_file(&owner, id, now).is_ok() != live {
                    return Err(format!(
                        "{name} {} {id}, which the records say is {}",
                        if live { "does not serve" } else { "serves" },
                        if live {
                            "committed and live"
                        } else {
                            "not a live File"
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariant 12, at the end of the run: what was due ten minutes ago is gone.
    fn check_swept(&self) -> Result<(), String> {
        const SLACK_SECS: u64 = 600;
        let now = self.true_deciding_secs();
        let due = |at: u64| at.saturating_add(SLACK_SECS) <= now;
        let truth = self.store.truth();
        if let Some(file) = truth
            .files
            .values()
            .find(|file| file.file.expires_at.is_some_and(due))
        {
            return Err(format!(
                "{} expired at {:?} and is still stored at {now}",
                file.id(),
                file.file.expires_at
            ));
        }
        let ttl = self.limits.upload_ttl_secs;
        for record in truth.uploads.values() {
            let file_gone = match &record.state {
                RecordState::Completed(completion) => {
                    !truth.files.contains_key(&completion.file.id)
                }
                RecordState::Pending | RecordState::Cancelled { .. } => true,
            };
            if file_gone && due(record.expires_at + ttl) {
                return Err(format!(
                    "{} was due for removal at {} and is still stored at {now}",
                    record.id,
                    record.expires_at + ttl
                ));
            }
            let bytes_left = record.parts.iter().any(|part| {
                self.store
                    .bytes()
                    .parts
                    .contains_key(&(record.id.clone(), part.id.clone()))
            });
            if matches!(record.state, RecordState::Pending) && due(record.expires_at) && bytes_left
            {
                return Err(format!(
                    "{} expired at {} and its Parts' bytes are still stored at {now}",
                    record.id, record.expires_at
                ));
            }
        }
        Ok(())
    }

    /// Invariant 8 at the end of the run: every client finished (no stall); and
    /// invariant 12 where one clock decides every sweep.
    pub(crate) fn check_end(&mut self) {
        let one_clock = self.scenario.rules == crate::scenario::Rules::Current
            || self.scenario.backend == crate::scenario::Backend::Directory;
        if one_clock && let Err(broken) = self.check_swept() {
            self.violate(broken);
            return;
        }
        for index in 0..self.clients.len() {
            if !self.clients[index].settled() {
                let upload = self.clients[index].upload_id.clone();
                self.violate(format!(
                    "client {index} did not finish (Upload {upload:?}) within the run: it stalled"
                ));
                return;
            }
        }
    }

    /// Invariant 6, when a client gives up for the last time: the Upload must be cancelled,
    /// or have a reason the records show why it cannot be finished (it expired, a racer
    /// took it, a clock that decides moved). An Upload left pending that the service would
    /// still take, after every rerun, is an outage: the message says so.
    pub(crate) fn unexcused_give_up(&self, index: usize) -> Option<String> {
        let client = &self.clients[index];
        let Some(upload) = &client.upload_id else {
            return Some(format!(
                "client {index} never got an Upload created, after every rerun"
            ));
        };
        let truth = self.store.truth();
        let excused = match truth
            .uploads
            .get(upload)
            .map(|record| (record, &record.state))
        {
            None | Some((_, RecordState::Cancelled { .. } | RecordState::Completed(_))) => true,
            Some((record, RecordState::Pending)) => {
                record.parts_removed
                    || record.is_expired(self.true_deciding_secs())
                    || self.oracle.was_raced(upload)
            }
        };
        let why = match &client.outcome {
            Some(Err(why)) => why.clone(),
            _ => String::new(),
        };
        (!excused).then(|| format!("client {index} gave up on {upload}, still pending and not expired, after every rerun: {why}"))
    }

    /// The time an Upload's expiry is judged by: the one instance's on the directory
    /// backend, the database's (true time) on the team backend.
    pub(crate) fn true_deciding_secs(&self) -> u64 {
        match self.scenario.backend {
            crate::scenario::Backend::Directory => self.deciding_secs(0),
            crate::scenario::Backend::Shared { .. } => self.clock_secs(self.instances.len()),
        }
    }
}
