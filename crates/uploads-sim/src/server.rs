//! A server instance: routes and reads requests with the core (its router, its form reader,
//! its ledger), stores bytes, and makes each change durable with the real server's steps
//! (plan, persist each step, apply; on the team backend, one transaction over shared rows).
//! Crashes strike between steps. An instance's crash, restart (recovery is the real
//! server's rule, [`Disk::recover`]) and sweep are in [`chores`](crate::chores); frozen
//! transactions and row-lock waits in [`locks`](crate::locks).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes as Chunk;
use http::Response;
use uploads_core::digest::Md5Hasher;
use uploads_core::forms::{FormEvent, FormReader, PartFormReader, form_head};
use uploads_core::ledger::{CompletePlan, Ledger, Owner, Planned, RandomIds, Step, Verification};
use uploads_core::rejection::Rejection;
use uploads_core::route::Route;
use uploads_core::types::{PartId, UploadId};

pub use crate::locks::{OpenTransaction, Waiter};
use crate::oracle::Acknowledged;
use crate::rng::Rng;
use crate::scenario::{Backend, Rules};
use crate::storage::{Bytes, Disk, Rows, Truth};
use crate::world::{Event, Failure, Message, World, describe, rejection_response, seconds, trace};

/// How long a request waits for a row lock under today's rules (`lock_timeout`).
const LOCK_TIMEOUT_MS: u64 = 3_000;
/// How long the database lets a session sit idle inside a transaction.
pub(crate) const IDLE_IN_TRANSACTION_MS: u64 = 10_000;

/// The ids the ledger mints, from the seed.
type SimIds = RandomIds<Box<dyn FnMut(&mut [u8])>>;

fn ids(rng: &mut Rng) -> SimIds {
    let mut rng = rng.fork();
    RandomIds::new(Box::new(move |buffer: &mut [u8]| {
        for byte in buffer {
            *byte = rng.range(0, 255) as u8;
        }
    }))
}

/// The only project in the simulation.
pub(crate) fn owner() -> Owner {
    Owner::new("proj_sim")
}

/// One instance.
#[derive(Default)]
pub struct Instance {
    /// Serving (not crashed).
    pub up: bool,
    /// The directory backend's in-memory ledger.
    pub(crate) ledger: Option<Ledger>,
    /// Frozen: until when (`None`: for ever), and the transaction it holds open.
    pub(crate) frozen: Option<(Option<u64>, u64)>,
    /// Requests that arrived while frozen.
    pub(crate) queued: Vec<Message>,
    /// The disk refuses writes until then (true ms).
    pub(crate) disk_full_until: u64,
    /// Its incarnation: a crash starts a new one.
    pub(crate) life: u32,
}

impl Instance {
    /// An instance, down until started.
    pub fn new() -> Self {
        Self {
            up: true,
            ..Self::default()
        }
    }

    /// The ledger a running directory instance holds.
    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// Whether its health check answers: up, and not frozen.
    pub fn serving(&self) -> bool {
        self.up && self.frozen.is_none()
    }

    /// Recovery on the directory backend: the records back, what no record needs removed,
    /// the ledger loaded.
    pub fn recover_directory(&mut self, store: &mut Store, limits: &uploads_core::limits::Limits) {
        if let Store::Directory { disk, bytes } = store {
            let (uploads, files) = disk.recover(bytes);
            self.ledger = Some(Ledger::load(limits.clone(), uploads, files));
        }
    }
}

/// The records and bytes of the backend.
pub enum Store {
    /// One instance's disk.
    Directory {
        /// Records, as durable.
        disk: Disk,
        /// Part bytes.
        bytes: Bytes,
    },
    /// Shared rows and a bucket.
    Shared {
        /// The database.
        rows: Rows,
        /// The bucket.
        bytes: Bytes,
        /// Transactions held open by frozen instances.
        open: BTreeMap<u64, OpenTransaction>,
        /// Requests waiting for a row lock.
        waiters: BTreeMap<u64, Waiter>,
        /// The next transaction's (and waiter's) number.
        next: u64,
    },
}

impl Store {
    /// An empty store for `backend`.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Directory => Self::Directory {
                disk: Disk::default(),
                bytes: Bytes::default(),
            },
            Backend::Shared { .. } => Self::Shared {
                rows: Rows::default(),
                bytes: Bytes::default(),
                open: BTreeMap::new(),
                waiters: BTreeMap::new(),
                next: 0,
            },
        }
    }

    /// The bytes of Parts.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Self::Directory { bytes, .. } | Self::Shared { bytes, .. } => bytes,
        }
    }

    fn bytes_mut(&mut self) -> &mut Bytes {
        match self {
            Self::Directory { bytes, .. } | Self::Shared { bytes, .. } => bytes,
        }
    }

    /// The durable records, as a restart would read them.
    pub fn truth(&self) -> Truth {
        match self {
            Self::Directory { disk, .. } => Truth::of_disk(disk),
            Self::Shared { rows, .. } => Truth::of_rows(rows),
        }
    }
}

/// How a mutation ended.
pub(crate) enum Mutation {
    /// Answered (200 with the body, or refused).
    Done(Result<Vec<u8>, Rejection>),
    /// Waiting for a row lock: the request runs again when it is free.
    Parked,
    /// The instance died: no answer.
    Crashed,
    /// The instance froze holding the lock: the answer comes at the thaw, if ever.
    Frozen,
}

/// How making a change durable ended on the directory backend.
pub(crate) enum Persisted {
    Done,
    Crashed,
    Failed,
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire objects serialize")
}

fn to_json<T: serde::Serialize>(planned: Planned<T>) -> Planned<Vec<u8>> {
    Planned {
        change: planned.change,
        response: json(&planned.response),
    }
}

fn ok(body: Vec<u8>) -> Response<Vec<u8>> {
    Response::new(body)
}

impl World {
    /// A request reaches instance `instance`.
    pub(crate) fn arrive(&mut self, instance: usize, message: Message) {
        let server = &mut self.instances[instance];
        if !server.up {
            trace!(
                self,
                "{} refused: instance {instance} is down",
                describe(&message.request)
            );
            self.reply(&message, Err(Failure::Refused));
            return;
        }
        if server.frozen.is_some() {
            server.queued.push(message);
            return;
        }
        if message.cut {
            // The body was cut short: the form is refused, nothing is stored, and the
            // connection is gone.
            trace!(
                self,
                "{} reset mid-body at instance {instance}",
                describe(&message.request)
            );
            self.reply(&message, Err(Failure::Reset));
            return;
        }
        self.serve(instance, &message);
    }

    fn serve(&mut self, instance: usize, message: &Message) {
        let route = match Route::resolve(message.request.method(), message.request.uri().path()) {
            Ok(route) => route,
            Err(rejection) => {
                self.reply(message, Ok(rejection_response(&rejection)));
                return;
            }
        };
        let body = message.request.body().clone();
        let upload = match &route {
            Route::AddUploadPart(upload)
            | Route::CompleteUpload(upload)
            | Route::CancelUpload(upload) => Some(upload.clone()),
            _ => None,
        };
        let (mutation, acknowledged) = match route {
            Route::CreateUpload => (
                self.mutate(
                    instance,
                    None,
                    message,
                    Acknowledged::Created,
                    |ledger, now, ids| ledger.create_upload(&owner(), &body, now, ids).map(to_json),
                ),
                Acknowledged::Created,
            ),
            Route::AddUploadPart(upload) => self.add_part(instance, message, &upload),
            Route::CompleteUpload(upload) => {
                let acknowledged = Acknowledged::Completed(upload.clone());
                (
                    self.complete(instance, message, &upload, &body),
                    acknowledged,
                )
            }
            Route::CancelUpload(upload) => {
                let acknowledged = Acknowledged::Cancelled(upload.clone());
                let id = upload.clone();
                (
                    self.mutate(
                        instance,
                        Some(&upload),
                        message,
                        acknowledged.clone(),
                        move |ledger, now, _| ledger.cancel_upload(&owner(), &id, now).map(to_json),
                    ),
                    acknowledged,
                )
            }
            other => (
                Mutation::Done(Err(Rejection::invalid(
                    None,
                    format!("the simulation does not send {other:?}"),
                ))),
                Acknowledged::Nothing,
            ),
        };
        self.finish_request(instance, message, mutation, &acknowledged, upload.as_ref());
    }

    fn finish_request(
        &mut self,
        instance: usize,
        message: &Message,
        mutation: Mutation,
        acknowledged: &Acknowledged,
        upload: Option<&UploadId>,
    ) {
        match mutation {
            Mutation::Done(Ok(body)) => {
                trace!(
                    self,
                    "instance {instance} answers {} 200",
                    describe(&message.request)
                );
                self.acknowledge(self.deciding_secs(instance), acknowledged, &body);
                self.reply(message, Ok(ok(body)));
            }
            Mutation::Done(Err(rejection)) => {
                if let Some(upload) = upload {
                    let truth = self.store.truth();
                    let now = self.deciding_secs(instance);
                    if let Err(broken) = self.oracle.check_refusal(
                        &truth,
                        upload,
                        &rejection.body.error.message,
                        now,
                    ) {
                        self.violate(broken);
                    }
                }
                trace!(
                    self,
                    "instance {instance} answers {} {}: {}",
                    describe(&message.request),
                    rejection.status.as_u16(),
                    rejection.body.error.message
                );
                self.reply(message, Ok(rejection_response(&rejection)));
            }
            Mutation::Crashed => self.reply(message, Err(Failure::Reset)),
            Mutation::Parked | Mutation::Frozen => {}
        }
    }

    fn add_part(
        &mut self,
        instance: usize,
        message: &Message,
        upload: &UploadId,
    ) -> (Mutation, Acknowledged) {
        let now = self.deciding_secs(instance);
        let mut ids = ids(&mut self.rng);
        let view = self.view(instance);
        let slot = match view.check_add_part(&owner(), upload, now, &mut ids) {
            Ok(slot) => slot,
            Err(rejection) => return (Mutation::Done(Err(rejection)), Acknowledged::Nothing),
        };
        let data = match read_part_form(message, view.limits().max_part_bytes) {
            Ok(data) => data,
            Err(rejection) => return (Mutation::Done(Err(rejection)), Acknowledged::Nothing),
        };
        let part = slot.part_id().clone();
        let key = (upload.clone(), part.clone());
        self.store
            .bytes_mut()
            .parts
            .insert(key.clone(), data.clone());
        let acknowledged = Acknowledged::Part(upload.clone(), part, data.clone());
        let len = data.len() as u64;
        let mutation = self.mutate(
            instance,
            Some(upload),
            message,
            acknowledged.clone(),
            move |ledger, now, _| ledger.add_part(&owner(), &slot, len, now).map(to_json),
        );
        if let Mutation::Done(Err(_)) = &mutation {
            // The Upload moved on while the bytes streamed: they are nobody's.
            self.store.bytes_mut().parts.remove(&key);
        }
        (mutation, acknowledged)
    }

    fn complete(
        &mut self,
        instance: usize,
        message: &Message,
        upload: &UploadId,
        body: &[u8],
    ) -> Mutation {
        let now = self.deciding_secs(instance);
        let view = self.view(instance);
        let verification = match view.plan_complete(&owner(), upload, body, now) {
            Ok(CompletePlan::Replay(done)) => return Mutation::Done(Ok(json(&done))),
            Ok(CompletePlan::Verify(verification)) => verification,
            Err(rejection) => return Mutation::Done(Err(rejection)),
        };
        let listed: Vec<PartId> = verification
            .parts()
            .iter()
            .map(|part| part.id.clone())
            .collect();
        let bytes = self.store.bytes();
        let missing: Vec<PartId> = listed
            .iter()
            .filter(|part| {
                !bytes
                    .parts
                    .contains_key(&((*upload).clone(), (*part).clone()))
            })
            .cloned()
            .collect();
        if self.scenario.rules == Rules::Current && !missing.is_empty() {
            // The answer of arriving second, when a race removed them (as the server's
            // `answer_after_race`).
            return match view.plan_complete(&owner(), upload, body, now) {
                Ok(CompletePlan::Replay(done)) => Mutation::Done(Ok(json(&done))),
                _ => Mutation::Done(Err(Rejection::parts_not_stored(&missing))),
            };
        }
        let md5 = if verification.expected_md5().is_some() {
            match bytes.read(upload, &listed) {
                Ok(data) => {
                    let mut md5 = Md5Hasher::new();
                    md5.update(&data);
                    Some(md5.finish())
                }
                Err(_) => {
                    return Mutation::Done(Err(Rejection::server_error(
                        "The server could not read the Upload's parts.",
                    )));
                }
            }
        } else {
            None
        };
        // Reading the Parts takes time, outside any lock: a cancel or another complete may
        // land meanwhile, and `finish_complete` checks everything again.
        let delay = self.rng.range(0, 300);
        let life = self.instances[instance].life;
        self.after(
            delay,
            Event::FinishComplete {
                instance,
                life,
                message: message.clone(),
                verification: Box::new(verification),
                md5,
            },
        );
        Mutation::Parked
    }

    /// The rest of a complete, once its md5 is known.
    pub(crate) fn finish_complete(
        &mut self,
        instance: usize,
        life: u32,
        message: Message,
        verification: Verification,
        md5: Option<[u8; 16]>,
    ) {
        let server = &self.instances[instance];
        if server.life != life || !server.up {
            // The instance died meanwhile: the connection with it.
            self.reply(&message, Err(Failure::Reset));
            return;
        }
        if server.frozen.is_some() {
            self.after(
                1000,
                Event::FinishComplete {
                    instance,
                    life,
                    message,
                    verification: Box::new(verification),
                    md5,
                },
            );
            return;
        }
        let upload = verification.upload_id().clone();
        let acknowledged = Acknowledged::Completed(upload.clone());
        let mutation = self.mutate(
            instance,
            Some(&upload),
            &message,
            acknowledged.clone(),
            move |ledger, now, ids| {
                ledger
                    .finish_complete(&owner(), &verification, md5, now, ids)
                    .map(to_json)
            },
        );
        self.finish_request(instance, &message, mutation, &acknowledged, Some(&upload));
    }

    /// The records a read sees: the instance's ledger, or the committed rows.
    fn view(&self, instance: usize) -> Ledger {
        match &self.store {
            Store::Directory { .. } => self.instances[instance]
                .ledger
                .clone()
                .expect("a serving directory instance has its ledger"),
            Store::Shared { rows, .. } => rows.ledger(&self.limits, false),
        }
    }

    /// Plans, persists and applies one change, as the real server's `mutate` does.
    fn mutate(
        &mut self,
        instance: usize,
        scope: Option<&UploadId>,
        message: &Message,
        acknowledged: Acknowledged,
        plan: impl FnOnce(&Ledger, u64, &mut SimIds) -> Result<Planned<Vec<u8>>, Rejection>,
    ) -> Mutation {
        let now = self.deciding_secs(instance);
        let mut ids = ids(&mut self.rng);
        if matches!(self.store, Store::Directory { .. }) {
            let ledger = self.instances[instance].ledger.as_ref().expect("serving");
            let planned = match plan(ledger, now, &mut ids) {
                Ok(planned) => planned,
                Err(rejection) => return Mutation::Done(Err(rejection)),
            };
            let Some(change) = planned.change else {
                return Mutation::Done(Ok(planned.response));
            };
            return match self.persist_directory(instance, change.steps()) {
                Persisted::Crashed => Mutation::Crashed,
                Persisted::Failed => Mutation::Done(Err(Rejection::server_error(
                    "The server could not store the request durably, so it was not applied. Retry it.",
                ))),
                Persisted::Done => {
                    let ledger = self.instances[instance].ledger.as_mut().expect("serving");
                    match ledger.apply(change) {
                        Ok(()) => Mutation::Done(Ok(planned.response)),
                        Err(error) => {
                            Mutation::Done(Err(Rejection::server_error(error.to_string())))
                        }
                    }
                }
            };
        }
        let rules = self.scenario.rules;
        let rates = self.rates();
        let Store::Shared {
            rows,
            next,
            waiters,
            ..
        } = &mut self.store
        else {
            unreachable!("two backends")
        };
        if let Some(upload) = scope
            && rows.locks.contains_key(upload)
        {
            let waiter = *next;
            *next += 1;
            waiters.insert(
                waiter,
                Waiter {
                    instance,
                    message: message.clone(),
                    upload: upload.clone(),
                },
            );
            trace!(
                self,
                "{} waits for {upload}'s row lock",
                describe(&message.request)
            );
            if rules == Rules::Current {
                self.after(LOCK_TIMEOUT_MS, Event::LockTimeout(waiter));
            }
            return Mutation::Parked;
        }
        let ledger = rows.ledger(&self.limits, false);
        let planned = match plan(&ledger, now, &mut ids) {
            Ok(planned) => planned,
            Err(rejection) => return Mutation::Done(Err(rejection)),
        };
        let Some(change) = planned.change else {
            return Mutation::Done(Ok(planned.response));
        };
        // An instance freezes only while another serves: the fault is one peer frozen
        // while the others go on, not the whole service down.
        let others_serve = (0..self.instances.len())
            .any(|other| other != instance && self.instances[other].serving());
        if let Some(upload) = scope
            && self.rng.chance(rates.freeze)
            && others_serve
        {
            let held = OpenTransaction {
                upload: upload.clone(),
                steps: change.steps().to_vec(),
                answer: planned.response,
                message: message.clone(),
                acknowledged,
                decided_at: now,
                ended: false,
            };
            return self.freeze(instance, held);
        }
        if self.rng.chance(rates.server_crash) {
            // Died before the commit: the transaction rolls back.
            self.crash_instance(instance);
            return Mutation::Crashed;
        }
        self.commit_rows(change.steps(), false);
        Mutation::Done(Ok(planned.response))
    }

    /// Commits a transaction's steps to the shared rows and drops the bytes they free.
    pub(crate) fn commit_rows(&mut self, steps: &[Step], swept: bool) {
        let keep_mark = self.scenario.rules == Rules::Current;
        let Store::Shared { rows, bytes, .. } = &mut self.store else {
            return;
        };
        rows.commit(steps, keep_mark);
        for step in steps {
            bytes.remove_for(step);
        }
        if swept {
            self.oracle.swept(steps);
        }
    }

    /// Makes a change's steps durable one at a time, as the directory store does (each
    /// fsync'd before the next): a crash loses the step in progress and those after it.
    pub(crate) fn persist_directory(&mut self, instance: usize, steps: &[Step]) -> Persisted {
        for step in steps {
            if self.rng.chance(self.rates().server_crash) {
                self.crash_instance(instance);
                return Persisted::Crashed;
            }
            let writes = matches!(
                step,
                Step::SaveUpload(_) | Step::AddPart { .. } | Step::SaveFile(_)
            );
            if writes {
                let server = &mut self.instances[instance];
                if self.now < server.disk_full_until {
                    return Persisted::Failed;
                }
                if self.rng.chance(self.rates().full_disk) {
                    let until = self.now + self.rng.range(1_000, 120_000);
                    self.instances[instance].disk_full_until = until;
                    trace!(
                        self,
                        "the disk of instance {instance} is full until {}",
                        seconds(until)
                    );
                    return Persisted::Failed;
                }
            }
            let Store::Directory { disk, bytes } = &mut self.store else {
                unreachable!("the directory backend")
            };
            disk.write(step);
            bytes.remove_for(step);
        }
        Persisted::Done
    }

    /// Checks a 200 against the durable records, at `now`: the time the change was decided
    /// at (a transaction's `now()` is its start).
    pub(crate) fn acknowledge(&mut self, now: u64, acknowledged: &Acknowledged, body: &[u8]) {
        let truth = self.store.truth();
        if let Err(broken) = self.oracle.acknowledged(acknowledged, body, &truth, now) {
            self.violate(broken);
        }
    }
}

/// The bytes of a Part's form, read with the server's own form reader.
fn read_part_form(message: &Message, max_part_bytes: u64) -> Result<Vec<u8>, Rejection> {
    let (content_type, declared) = form_head(message.request.headers());
    let mut form = PartFormReader::open(content_type, declared, max_part_bytes)?;
    form.feed(Chunk::from(message.request.body().clone()));
    let mut data = Vec::new();
    while let Some(event) = form.poll()? {
        if let FormEvent::Data(bytes) = event {
            data.extend_from_slice(&bytes);
        }
    }
    form.finish()?;
    Ok(data)
}

pub(crate) fn steps_summary(steps: &[Step]) -> String {
    let names: BTreeSet<String> = steps
        .iter()
        .map(|step| match step {
            Step::SaveUpload(record) => format!(
                "save {} (parts_removed={})",
                record.id, record.parts_removed
            ),
            Step::AddPart { upload_id, part } => format!("add {} to {upload_id}", part.id),
            Step::SaveFile(record) => format!("save {}", record.id()),
            Step::RemoveFile(id) => format!("remove {id}"),
            Step::RemoveParts {
                upload_id,
                part_ids,
            } => format!("remove {} Parts of {upload_id}", part_ids.len()),
            Step::RemoveUpload(id) => format!("remove {id}"),
        })
        .collect();
    names.into_iter().collect::<Vec<_>>().join(", ")
}
