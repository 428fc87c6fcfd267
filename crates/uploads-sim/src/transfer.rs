//! One upload through a simulated link, on a virtual clock: the real [`Uploader`] decides,
//! the bench's link model ([`crate::link`]) carries the bytes, and a simple service answers.
//! It shows what the uploader's choices (parts in flight, part sizes) cost on a given path,
//! without a socket or a wall clock, so tests can compare the adaptive default with every
//! fixed setting exactly.
//!
//! ```text
//!  Uploader ──Send(part)──▶ a connection (idle one reused, else a new one)
//!     ▲                        │ chunks of CHUNK bytes, each when the link accepts it
//!     │ Sent, Unacknowledged   ▼
//!     │                   LinkModel (per-connection cap, shared FIFO, one-way delay)
//!     │                        │ the last chunk delivered
//!     └──── answer ◀── one-way delay ◀── the service (stores it, or answers 429)
//! ```
//!
//! What it leaves out: TCP's slow start and loss (a new connection gets its share at once),
//! the request heads' bytes, and the service's own time. Create and complete take one round
//! trip; the md5 is off.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use uploads_core::types::{PartId, Upload, UploadId, UploadStatus};
use uploads_core::upload::{RequestError, UploadOptions};
use uploads_core::uploader::{Action, PartJob, Report, Transmit, Uploader};

use crate::link::{LinkModel, LinkProfile};

/// How many bytes a sender hands the link at once.
const CHUNK: u64 = 128 * 1024;
/// The virtual clock's epoch, in unix milliseconds.
const EPOCH_UNIX_MS: u64 = 1_719_184_912_000;
/// A simulation that runs longer than this has lost its way.
const GIVE_UP_AFTER: Duration = Duration::from_hours(3);

/// A service that throttles: the `every`th part request (counting from 1) is answered 429
/// with `retry-after-ms: retry_after_ms`, for the first `for_ms` after the first part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Every how many part requests one is refused.
    pub every: u32,
    /// How long the throttling lasts from the first part request, in milliseconds.
    pub for_ms: u64,
    /// The wait the 429 asks for.
    pub retry_after_ms: u64,
}

/// What one simulated upload did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// From the first request to the complete's answer.
    pub elapsed: Duration,
    /// Whether the Upload was completed (not given up).
    pub completed: bool,
    /// 429 answers the service gave.
    pub throttled: u32,
    /// The most parts in flight at once.
    pub peak_in_flight: usize,
    /// Each change of the parts the uploader let be in flight: when, and to how many.
    pub limits: Vec<(Duration, usize)>,
    /// The largest gap seen between the progress the uploader reported as delivered and the
    /// bytes the link had truly delivered, at the same moment.
    pub largest_progress_gap: u64,
}

/// A part request on its way: its connection, the bytes not yet handed to the link.
#[derive(Debug)]
struct Sending {
    connection: usize,
    remaining: u64,
    /// When its last chunk reaches the service, once handed over.
    delivered_at: Duration,
}

/// Something due at a moment of the virtual clock.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// A part's sender may hand the link its next chunk.
    Send(PartJob),
    /// A part's answer reaches the client.
    PartAnswer(PartJob, bool),
    /// Create's answer reaches the client.
    Created,
    /// Complete's answer reaches the client.
    Completed,
    /// The uploader asked to be woken.
    Timeout,
}

/// Runs one upload of `file_size` bytes with `options` through `profile`, the service
/// throttling as `throttle` says.
pub fn simulate(
    options: &UploadOptions,
    file_size: u64,
    profile: LinkProfile,
    throttle: Option<Throttle>,
) -> Outcome {
    Simulation::new(profile, throttle).run(&options.clone().md5(false), file_size)
}

struct Simulation {
    link: LinkModel,
    throttle: Option<Throttle>,
    now: Duration,
    /// Due events by time, then by the order they were scheduled (fair among equals).
    due: BTreeMap<(Duration, u64), Due>,
    sequence: u64,
    sending: HashMap<PartJob, Sending>,
    idle_connections: VecDeque<usize>,
    next_connection: usize,
    part_requests: u32,
    first_part_at: Option<Duration>,
    throttled: u32,
    peak_in_flight: usize,
    limits: Vec<(Duration, usize)>,
    /// Bytes truly delivered, as (when, bytes in all), in time order.
    deliveries: VecDeque<(Duration, u64)>,
    delivered: u64,
    largest_progress_gap: u64,
    upload: Option<Upload>,
    /// The wake-ups already scheduled (one event per moment is enough).
    wake_ups: std::collections::BTreeSet<Duration>,
}

impl Simulation {
    fn new(profile: LinkProfile, throttle: Option<Throttle>) -> Self {
        Self {
            link: LinkModel::new(profile),
            throttle,
            now: Duration::ZERO,
            due: BTreeMap::new(),
            sequence: 0,
            sending: HashMap::new(),
            idle_connections: VecDeque::new(),
            next_connection: 0,
            part_requests: 0,
            first_part_at: None,
            throttled: 0,
            peak_in_flight: 0,
            limits: Vec::new(),
            deliveries: VecDeque::new(),
            delivered: 0,
            largest_progress_gap: 0,
            upload: None,
            wake_ups: std::collections::BTreeSet::new(),
        }
    }

    fn unix_ms(&self) -> u64 {
        EPOCH_UNIX_MS + u64::try_from(self.now.as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&mut self, when: Duration, due: Due) {
        self.sequence += 1;
        self.due.insert((when, self.sequence), due);
    }

    fn one_way(&self) -> Duration {
        self.link.profile().one_way_delay()
    }

    fn run(mut self, options: &UploadOptions, file_size: u64) -> Outcome {
        let mut uploader = Uploader::<std::io::Error>::new(
            options,
            "simulated.jsonl",
            file_size,
            None,
            EPOCH_UNIX_MS,
        )
        .expect("the simulated options are valid");
        let mut completed = false;
        loop {
            let now_ms = self.unix_ms();
            while let Some(action) = uploader.poll_action(now_ms) {
                self.start(action, &mut uploader);
            }
            self.peak_in_flight = self.peak_in_flight.max(uploader.parts_in_flight());
            let limit = uploader.parts_in_flight_limit();
            if self.limits.last().is_none_or(|(_, last)| *last != limit) {
                self.limits.push((self.now, limit));
            }
            while uploader.poll_event().is_some() {}
            if let Some(result) = uploader.poll_finished() {
                completed = result.is_ok();
                break;
            }
            if let Some(at) = uploader.poll_timeout() {
                let when = Duration::from_millis(at.saturating_sub(EPOCH_UNIX_MS)).max(self.now);
                if self.wake_ups.insert(when) {
                    self.at(when, Due::Timeout);
                }
            }
            let Some(((when, _), due)) = self.due.pop_first() else {
                break;
            };
            if when > GIVE_UP_AFTER {
                break;
            }
            self.now = when;
            self.handle(due, &mut uploader);
        }
        Outcome {
            elapsed: self.now,
            completed,
            throttled: self.throttled,
            peak_in_flight: self.peak_in_flight,
            limits: self.limits,
            largest_progress_gap: self.largest_progress_gap,
        }
    }

    fn start(&mut self, action: Action, uploader: &mut Uploader<std::io::Error>) {
        let round_trip = self.link.profile().rtt;
        match action {
            Action::Send(Transmit::Create(request)) => {
                self.upload = Some(Upload {
                    id: UploadId::new("upload_sim"),
                    object: "upload".to_owned(),
                    bytes: request.bytes,
                    created_at: EPOCH_UNIX_MS / 1000,
                    filename: request.filename,
                    purpose: request.purpose,
                    status: UploadStatus::Pending,
                    expires_at: EPOCH_UNIX_MS / 1000 + 3600,
                    file: None,
                });
                self.at(self.now + round_trip, Due::Created);
            }
            Action::Send(Transmit::Part { job, .. }) => {
                let connection = self.idle_connections.pop_front().unwrap_or_else(|| {
                    self.next_connection += 1;
                    self.next_connection
                });
                self.first_part_at.get_or_insert(self.now);
                self.sending.insert(
                    job,
                    Sending {
                        connection,
                        remaining: job.len,
                        delivered_at: self.now,
                    },
                );
                self.at(self.now, Due::Send(job));
            }
            Action::Send(Transmit::Complete { .. }) => {
                self.at(self.now + round_trip, Due::Completed);
            }
            Action::Send(Transmit::Cancel { .. }) => {
                let now = self.unix_ms();
                uploader.handle(Report::Cancelled(Err(RequestError::Unanswered)), now, 0.5);
            }
            Action::StopPart(job) => {
                if let Some(sending) = self.sending.remove(&job) {
                    self.link.close(sending.connection);
                }
            }
            Action::Hash { .. }
            | Action::WriteSnapshot { .. }
            | Action::RemoveSnapshot { .. }
            | Action::StopRequest
            | Action::StopHash => {}
        }
    }

    fn handle(&mut self, due: Due, uploader: &mut Uploader<std::io::Error>) {
        let now_ms = self.unix_ms();
        self.note_deliveries();
        uploader.handle(
            Report::Unacknowledged {
                bytes: self.in_link(),
            },
            now_ms,
            0.5,
        );
        match due {
            Due::Timeout => {
                self.wake_ups.remove(&self.now);
                uploader.handle_timeout(now_ms);
            }
            Due::Created => {
                let upload = self.upload.clone().expect("create was sent");
                uploader.handle(Report::Created(Ok(upload)), now_ms, 0.5);
            }
            Due::Completed => {
                let upload = self.upload.clone().expect("create was sent");
                let completed = Upload {
                    status: UploadStatus::Completed,
                    ..upload
                };
                uploader.handle(Report::Completed(Ok(completed)), now_ms, 0.5);
            }
            Due::Send(job) => self.send_chunk(job, uploader),
            Due::PartAnswer(job, stored) => {
                let Some(sending) = self.sending.remove(&job) else {
                    return;
                };
                self.idle_connections.push_back(sending.connection);
                let result = if stored {
                    Ok(PartId::new(format!("part_{}", job.index)))
                } else {
                    Err(self.too_many_requests())
                };
                uploader.handle(Report::Part(job, result), now_ms, 0.5);
            }
        }
        self.check_progress(uploader);
    }

    /// Hands the link the next chunk of `job` if it has room now, else waits for room.
    fn send_chunk(&mut self, job: PartJob, uploader: &mut Uploader<std::io::Error>) {
        let Some(sending) = self.sending.get(&job) else {
            return;
        };
        let connection = sending.connection;
        if sending.remaining == 0 {
            return;
        }
        let len = sending.remaining.min(CHUNK);
        let room_at = self.link.accepts_at(connection, self.now, len);
        if room_at > self.now {
            self.at(room_at, Due::Send(job));
            return;
        }
        let delivered_at = self.link.deliver_at(connection, self.now, len);
        self.deliveries.push_back((delivered_at, len));
        let sending = self.sending.get_mut(&job).expect("looked up above");
        sending.remaining -= len;
        sending.delivered_at = delivered_at;
        let last = sending.remaining == 0;
        uploader.handle(Report::Sent { job, bytes: len }, self.unix_ms(), 0.5);
        if last {
            let stored = self.accept_part();
            let answer_at = delivered_at + self.one_way();
            self.at(answer_at, Due::PartAnswer(job, stored));
        } else {
            self.at(self.now, Due::Send(job));
        }
    }

    /// The service takes a whole part: stored, or refused by the throttle.
    fn accept_part(&mut self) -> bool {
        self.part_requests += 1;
        let Some(throttle) = self.throttle else {
            return true;
        };
        let first = self.first_part_at.unwrap_or(self.now);
        let throttling = self.now.saturating_sub(first) < Duration::from_millis(throttle.for_ms);
        let refused = throttling && self.part_requests.is_multiple_of(throttle.every.max(1));
        if refused {
            self.throttled += 1;
        }
        !refused
    }

    fn too_many_requests(&self) -> RequestError<std::io::Error> {
        let wait = self
            .throttle
            .map_or(1000, |throttle| throttle.retry_after_ms);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "retry-after-ms",
            http::HeaderValue::from_str(&wait.to_string()).expect("digits"),
        );
        let head =
            uploads_core::api::check_response_head(http::StatusCode::TOO_MANY_REQUESTS, &headers)
                .expect_err("429 is an error");
        RequestError::Response(head.with_body(b"{}").into())
    }

    /// Moves the chunks delivered by now into the delivered total.
    fn note_deliveries(&mut self) {
        let mut pending = VecDeque::new();
        while let Some((at, len)) = self.deliveries.pop_front() {
            if at <= self.now {
                self.delivered += len;
            } else {
                pending.push_back((at, len));
            }
        }
        self.deliveries = pending;
    }

    /// Bytes handed to the link and not yet delivered, over every connection.
    fn in_link(&self) -> u64 {
        self.deliveries.iter().map(|(_, len)| len).sum()
    }

    fn check_progress(&mut self, uploader: &Uploader<std::io::Error>) {
        if let Some(progress) = uploader.progress() {
            let gap = progress.bytes_delivered.abs_diff(self.delivered);
            self.largest_progress_gap = self.largest_progress_gap.max(gap);
        }
    }
}

#[cfg(test)]
mod tests;
