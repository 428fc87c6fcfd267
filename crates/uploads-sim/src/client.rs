//! A client: the real [`Uploader`], driven as the hyper and ureq clients drive it, over the
//! simulated network; its snapshot file survives its crashes, and a give-up that keeps the
//! Upload is followed by running the same upload again (it resumes).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use uploads_core::api::ClientConfig;
use uploads_core::digest::Md5Hasher;
use uploads_core::multipart::Boundary;
use uploads_core::types::{ExpiresAfter, PartId, Purpose, Upload, UploadId};
use uploads_core::upload::{ConnectFailure, RequestError, UploadError, UploadOptions};
use uploads_core::uploader::{
    Action, Expect, OutgoingBody, ProgressEvent, Report, SessionSnapshot, Transmit, Uploader,
    source_fingerprint,
};

use crate::rng::Rng;
use crate::scenario::{ClientPlan, Race};
use crate::world::{Event, Failure, Sender, World, describe, trace};

/// How many times a client runs the same upload again after a give-up that kept it, once
/// the storm is over.
const RERUNS: u32 = 3;
/// Each run's deadline.
const DEADLINE_MS: u64 = 30 * 60 * 1000;

/// The transport error of the simulated network.
#[derive(Debug, Clone, Copy)]
pub struct SimError(pub Failure);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for SimError {}

/// A request in flight, and what its answer is reported as.
struct Flight {
    expect: Expect,
    /// The machine stopped it: its answer, if one comes, is dropped.
    stopped: bool,
}

/// One client and its file.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one run: hashing, a rerun due, the race fired, a cancel sent"
)]
pub struct Client {
    /// What the seed decided for it.
    pub plan: ClientPlan,
    /// The file.
    pub source: Vec<u8>,
    /// The file's name (the Upload's filename: how the oracle finds the source of a File).
    pub name: String,
    options: UploadOptions,
    uploader: Option<Uploader<SimError>>,
    /// Bumped by a crash or a new run: what the old incarnation asked is dropped.
    life: u32,
    flights: BTreeMap<u64, Flight>,
    next_exchange: u64,
    hashing: bool,
    /// The snapshot file, as durable on the client's disk.
    pub snapshot: Option<String>,
    /// How the last run ended.
    pub outcome: Option<Result<Upload, String>>,
    /// The Upload of the last run, once known.
    pub upload_id: Option<UploadId>,
    /// Parts stored, by index (what a racer may list).
    pub stored: BTreeMap<u32, PartId>,
    runs: u32,
    /// A give-up kept the Upload: the same upload runs again soon.
    rerun_pending: bool,
    race_fired: bool,
    /// This run sent a cancel.
    sent_cancel: bool,
}

impl Client {
    /// A client for `plan`, its file drawn from `rng`.
    pub fn new(index: usize, plan: ClientPlan, rng: &mut Rng) -> Self {
        let source: Vec<u8> = (0..plan.size).map(|_| rng.range(0, 255) as u8).collect();
        let name = format!("client-{index}.jsonl");
        let mut options = UploadOptions::new(Purpose::Batch)
            .part_size(plan.part_size)
            .concurrency(plan.concurrency)
            .md5(plan.md5)
            .cancel_on_failure(plan.cancel_on_failure)
            .deadline(std::time::Duration::from_millis(DEADLINE_MS))
            .snapshot_path(format!("client-{index}.snapshot.json"));
        if let Some(ttl) = plan.file_ttl_secs {
            options = options.expires_after(ExpiresAfter::after_creation(ttl));
        }
        Self {
            plan,
            source,
            name,
            options,
            uploader: None,
            life: 0,
            flights: BTreeMap::new(),
            next_exchange: 0,
            hashing: false,
            snapshot: None,
            outcome: None,
            upload_id: None,
            stored: BTreeMap::new(),
            runs: 0,
            rerun_pending: false,
            race_fired: false,
            sent_cancel: false,
        }
    }

    fn fingerprint(&self) -> String {
        source_fingerprint(&self.name, self.plan.size, Some(0))
    }

    /// Whether the client is done for good (finished, with no run still to come).
    pub fn settled(&self) -> bool {
        self.uploader.is_none() && !self.rerun_pending && self.outcome.is_some()
    }
}

/// Whether a give-up was a stop the caller asked for (the simulation never asks one).
fn interrupted(error: &UploadError<SimError>) -> bool {
    matches!(error, UploadError::Aborted { cause, .. } if matches!(**cause, uploads_core::upload::AbortCause::Interrupted))
}

fn config() -> ClientConfig {
    ClientConfig::new("http://uploads.sim/v1").with_api_key("sk-sim")
}

impl World {
    /// Starts (or restarts) a client's upload: from its snapshot when it has one.
    pub(crate) fn client_start(&mut self, index: usize) {
        let now = self.unix_ms();
        let client = &mut self.clients[index];
        client.life += 1;
        client.flights.clear();
        client.hashing = false;
        client.runs += 1;
        client.rerun_pending = false;
        client.sent_cancel = false;
        let resumed = client.snapshot.as_deref().map(SessionSnapshot::from_json);
        let uploader = match resumed {
            Some(Ok(snapshot)) => {
                let upload = snapshot.upload.id.clone();
                let fingerprint = client.fingerprint();
                match Uploader::resume(
                    &client.options,
                    snapshot,
                    client.plan.size,
                    &fingerprint,
                    now,
                ) {
                    Ok(uploader) => {
                        client.upload_id = Some(upload.clone());
                        Ok((uploader, format!("resumes {upload} from its snapshot")))
                    }
                    Err(error) => Err(format!("cannot resume: {error}")),
                }
            }
            Some(Err(error)) => Err(format!("unreadable snapshot: {error}")),
            None => Uploader::new(
                &client.options,
                &client.name,
                client.plan.size,
                Some(client.fingerprint()),
                now,
            )
            .map(|uploader| (uploader, "starts".to_owned()))
            .map_err(|error| format!("options refused: {error}")),
        };
        match uploader {
            Ok((uploader, how)) => {
                client.uploader = Some(uploader);
                client.outcome = None;
                trace!(self, "client {index} {how}");
                self.drive(index);
            }
            Err(why) => {
                // A snapshot that cannot be resumed: a new upload, as a user would start.
                trace!(self, "client {index}: {why}; starts afresh");
                let client = &mut self.clients[index];
                client.snapshot = None;
                match Uploader::new(
                    &client.options,
                    &client.name,
                    client.plan.size,
                    Some(client.fingerprint()),
                    now,
                ) {
                    Ok(uploader) => {
                        client.uploader = Some(uploader);
                        self.drive(index);
                    }
                    Err(error) => self.violate(format!(
                        "client {index}: the uploader refused its own options: {error}"
                    )),
                }
            }
        }
    }

    /// Performs what the client's machine asks, until it waits.
    fn drive(&mut self, index: usize) {
        let now = self.unix_ms();
        loop {
            let Some(uploader) = self.clients[index].uploader.as_mut() else {
                return;
            };
            let Some(action) = uploader.poll_action(now) else {
                break;
            };
            self.perform(index, action);
        }
        self.drain_events(index);
        let client = &mut self.clients[index];
        let Some(uploader) = client.uploader.as_mut() else {
            return;
        };
        if let Some(result) = uploader.poll_finished() {
            let progress = uploader.progress();
            client.uploader = None;
            self.finished(index, result, progress);
            return;
        }
        if let Some(wake) = uploader.poll_timeout() {
            let life = client.life;
            let at = wake.saturating_sub(crate::world::EPOCH_MS);
            self.at(at, Event::ClientWake(index, life));
        }
    }

    fn perform(&mut self, index: usize, action: Action) {
        let life = self.clients[index].life;
        match action {
            Action::Send(transmit) => self.transmit(index, transmit),
            Action::Hash { offset, len } => {
                self.clients[index].hashing = true;
                let _ = (offset, len);
                let delay = self.rng.range(1, 200);
                self.after(delay, Event::Hashed(index, life));
            }
            Action::WriteSnapshot { json, .. } => {
                let delay = self.rng.range(1, 20);
                self.after(delay, Event::SnapshotWritten(index, life, Some(json)));
            }
            Action::RemoveSnapshot { .. } => {
                let delay = self.rng.range(1, 20);
                self.after(delay, Event::SnapshotWritten(index, life, None));
            }
            Action::StopPart(job) => {
                let client = &mut self.clients[index];
                for flight in client.flights.values_mut() {
                    if flight.expect.part() == Some(job) {
                        flight.stopped = true;
                    }
                }
            }
            Action::StopRequest => {
                for flight in self.clients[index].flights.values_mut() {
                    if flight.expect.part().is_none() {
                        flight.stopped = true;
                    }
                }
            }
            Action::StopHash => self.clients[index].hashing = false,
        }
    }

    fn transmit(&mut self, index: usize, transmit: Transmit) {
        let max_attempts = self.clients[index].options.retry.max_attempts;
        if let Transmit::Part { job, .. } = &transmit
            && job.attempt > max_attempts
        {
            self.violate(format!(
                "client {index} sent part {} a {}th time, over the policy's {max_attempts} attempts",
                job.index, job.attempt
            ));
        }
        if let Transmit::Cancel { .. } = &transmit {
            self.clients[index].sent_cancel = true;
        }
        if let Transmit::Complete { upload_id, request } = &transmit {
            self.oracle
                .complete_sent(upload_id, request.part_ids.clone());
        }
        let boundary = Boundary::from_entropy(
            self.rng
                .next_u64()
                .to_le_bytes()
                .repeat(2)
                .try_into()
                .unwrap_or([7; 16]),
        );
        let (request, expect) = match transmit.into_request::<SimError>(&config(), &boundary) {
            Ok(built) => built,
            Err(report) => {
                self.report(index, report);
                return;
            }
        };
        let (parts, body) = request.into_parts();
        let (body, sent) = match body {
            OutgoingBody::Bytes(bytes) => (bytes.to_vec(), None),
            OutgoingBody::Part(part) => {
                let job = part.job;
                let data = &self.clients[index].source[job.offset as usize..];
                let mut wire = Vec::new();
                if part.reader(data, |_| true).read_to_end(&mut wire).is_err() {
                    self.violate(format!("client {index}: a part's body could not be read"));
                    return;
                }
                (wire, Some(job))
            }
            _ => {
                self.violate("an outgoing body of a kind the simulator does not know".to_owned());
                return;
            }
        };
        let request = http::Request::from_parts(parts, body);
        let client = &mut self.clients[index];
        let exchange = client.next_exchange;
        client.next_exchange += 1;
        client.flights.insert(
            exchange,
            Flight {
                expect,
                stopped: false,
            },
        );
        let life = client.life;
        trace!(self, "client {index} sends {}", describe(&request));
        if let Some(job) = sent {
            // The whole body goes out at once on this network.
            self.report(
                index,
                Report::Sent {
                    job,
                    bytes: job.len,
                },
            );
        }
        self.send(
            Sender::Client {
                client: index,
                life,
                exchange,
            },
            request,
            sent.is_some(),
        );
    }

    /// Hands a report to the client's machine and drives it on.
    fn report(&mut self, index: usize, report: Report<SimError>) {
        let now = self.unix_ms();
        let jitter = self.rng.unit();
        if let Some(uploader) = self.clients[index].uploader.as_mut() {
            uploader.handle(report, now, jitter);
        }
        self.drive(index);
    }

    pub(crate) fn client_wake(&mut self, index: usize, life: u32) {
        let now = self.unix_ms();
        let client = &mut self.clients[index];
        if client.life != life {
            return;
        }
        let Some(uploader) = client.uploader.as_mut() else {
            return;
        };
        if uploader.poll_timeout().is_some_and(|wake| wake <= now) {
            uploader.handle_timeout(now);
        }
        self.drive(index);
    }

    pub(crate) fn answer_arrives(
        &mut self,
        to: Sender,
        answer: Result<http::Response<Vec<u8>>, Failure>,
    ) {
        let Sender::Client {
            client: index,
            life,
            exchange,
        } = to
        else {
            return;
        };
        let client = &mut self.clients[index];
        if client.life != life {
            return;
        }
        let Some(flight) = client.flights.remove(&exchange) else {
            return;
        };
        if flight.stopped {
            return;
        }
        let part = flight.expect.part();
        let answer = answer.map_err(|failure| match failure {
            Failure::Refused => RequestError::Connect {
                address: "uploads.sim:80".to_owned(),
                kind: ConnectFailure::Refused,
                source: SimError(failure),
            },
            Failure::Reset => RequestError::Transport(SimError(failure)),
        });
        if self.tracing() {
            let line = match &answer {
                Ok(response) => format!(
                    "client {index} gets {} {}",
                    response.status().as_u16(),
                    String::from_utf8_lossy(response.body())
                        .chars()
                        .take(160)
                        .collect::<String>()
                ),
                Err(error) => format!("client {index} gets {error}"),
            };
            self.push_trace(&line);
        }
        let report = flight.expect.report(answer);
        if let (Some(job), Report::Part(_, Ok(id))) = (part, &report) {
            let client = &mut self.clients[index];
            client.stored.insert(job.index, id.clone());
            if let Some((_, delay)) = client.plan.race
                && !client.race_fired
            {
                client.race_fired = true;
                self.after(delay, Event::Race(index));
            }
        }
        if let Report::Created(Ok(upload)) = &report {
            self.clients[index].upload_id = Some(upload.id.clone());
        }
        self.report(index, report);
    }

    pub(crate) fn client_hashed(&mut self, index: usize, life: u32) {
        let client = &mut self.clients[index];
        if client.life != life || !std::mem::take(&mut client.hashing) {
            return;
        }
        let mut md5 = Md5Hasher::new();
        md5.update(&client.source);
        let hex = uploads_core::digest::to_hex(&md5.finish());
        self.report(index, Report::Hashed(Ok(hex)));
    }

    pub(crate) fn client_snapshot_written(
        &mut self,
        index: usize,
        life: u32,
        json: Option<String>,
    ) {
        let client = &mut self.clients[index];
        if client.life != life {
            // The process died before the write ended: the old file stays.
            return;
        }
        client.snapshot = json;
        self.report(index, Report::SnapshotDone(Ok(())));
    }

    pub(crate) fn client_crash(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if client.uploader.is_none() {
            return;
        }
        client.uploader = None;
        client.life += 1;
        trace!(self, "client {index} crashes");
        let delay = self.rng.range(100, 10_000);
        self.after(delay, Event::ClientStart(index));
    }

    fn drain_events(&mut self, index: usize) {
        let size = self.clients[index].plan.size;
        let Some(uploader) = self.clients[index].uploader.as_mut() else {
            return;
        };
        let mut over = None;
        while let Some(event) = uploader.poll_event() {
            if let ProgressEvent::BytesSent { total_sent, .. }
            | ProgressEvent::PartRetry { total_sent, .. } = &event
                && *total_sent > size
            {
                over = Some(format!("{event:?}"));
            }
        }
        if let Some(event) = over {
            self.violate(format!(
                "client {index}'s progress went past its file of {size} bytes: {event}"
            ));
        }
    }

    fn finished(
        &mut self,
        index: usize,
        result: Result<Upload, UploadError<SimError>>,
        progress: Option<uploads_core::uploader::Progress>,
    ) {
        let size = self.clients[index].plan.size;
        match result {
            Ok(upload) => {
                trace!(
                    self,
                    "client {index} done: {} {:?} file {:?}",
                    upload.id,
                    upload.status,
                    upload.file.as_ref().map(|file| &file.id)
                );
                if let Some(progress) = progress
                    && progress.bytes_sent != size
                {
                    self.violate(format!(
                        "client {index} finished with progress at {} of {size} bytes",
                        progress.bytes_sent
                    ));
                }
                self.oracle.client_completed(index, &upload);
                self.clients[index].outcome = Some(Ok(upload));
            }
            Err(error) => {
                let message = uploads_core::upload::error_chain(&error);
                trace!(self, "client {index} gives up: {message}");
                if let Some(broken) = self.check_give_up(index, &error) {
                    self.violate(broken);
                    return;
                }
                let kept = matches!(
                    &error,
                    UploadError::Aborted {
                        cancelled: false,
                        ..
                    }
                ) || matches!(&error, UploadError::Create(_));
                let client = &mut self.clients[index];
                client.outcome = Some(Err(message));
                // Reruns go on while the storm lasts, and a few after it.
                if kept && (client.runs <= RERUNS || self.now < crate::scenario::STORM_MS) {
                    // The user runs the same command again: it resumes from the snapshot.
                    client.rerun_pending = true;
                    let delay = self.rng.range(1000, 60_000);
                    self.after(delay, Event::ClientStart(index));
                } else if let Some(unexcused) = self.unexcused_give_up(index) {
                    self.violate(unexcused);
                }
            }
        }
    }

    /// Invariant 6 at a give-up: a give-up said cancelled left the Upload cancelled (or
    /// finished otherwise); one that kept it left a snapshot to resume it from; one with
    /// `cancel_on_failure` tried to cancel.
    fn check_give_up(&self, index: usize, error: &UploadError<SimError>) -> Option<String> {
        let UploadError::Aborted {
            upload_id,
            cancelled,
            ..
        } = error
        else {
            return None;
        };
        let client = &self.clients[index];
        let truth = self.store.truth();
        let pending = truth.uploads.get(upload_id).is_some_and(|record| {
            matches!(record.state, uploads_core::ledger::RecordState::Pending)
        });
        if *cancelled && pending {
            return Some(format!(
                "client {index} gave up saying {upload_id} was cancelled, but it is pending"
            ));
        }
        if !cancelled && client.snapshot.is_none() {
            return Some(format!(
                "client {index} gave up keeping {upload_id}, but left no snapshot to resume it"
            ));
        }
        if !cancelled && client.plan.cancel_on_failure && !client.sent_cancel && !interrupted(error)
        {
            return Some(format!(
                "client {index} gave up on {upload_id} without cancelling it, as its options ask"
            ));
        }
        None
    }

    /// The second client acts on `index`'s Upload, as its owner could.
    pub(crate) fn race(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let (Some((race, _)), Some(upload)) = (client.plan.race, client.upload_id.clone()) else {
            return;
        };
        self.oracle.raced(&upload);
        let config = config();
        let request = match race {
            Race::Cancel => config.cancel_upload(&upload),
            Race::Complete => {
                let part_ids: Vec<PartId> = client.stored.values().cloned().collect();
                let request = uploads_core::types::CompleteUploadRequest {
                    part_ids,
                    md5: None,
                };
                self.oracle.complete_sent(&upload, request.part_ids.clone());
                config.complete_upload(&upload, &request)
            }
            Race::AddPart => {
                let boundary = Boundary::from_entropy([9; 16]);
                let multipart = uploads_core::multipart::MultipartBody::upload_part(&boundary, 5);
                config
                    .add_upload_part_at(&upload, None, &multipart)
                    .map(|head| {
                        let mut body = multipart.head.to_vec();
                        body.extend_from_slice(b"racer");
                        body.extend_from_slice(&multipart.tail);
                        head.map(|()| body)
                    })
                    .map(|request| request.map(bytes::Bytes::from))
            }
        };
        match request {
            Ok(request) => {
                let request = request.map(|body| body.to_vec());
                trace!(self, "racer of client {index} sends {}", describe(&request));
                self.send(Sender::Racer(index), request, race == Race::AddPart);
            }
            Err(error) => self.violate(format!("the racer's request could not be built: {error}")),
        }
    }

    /// True time as a client's clock reads it: unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        crate::world::EPOCH_MS + self.now
    }
}
