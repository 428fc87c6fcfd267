//! The uploader driven through every path by a deterministic harness with a virtual clock:
//! the harness plays the driver (it performs nothing, it only records what was asked) and
//! the test plays the network, the disk and the service.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::*;
use crate::api::check_response_head;
use crate::limits::Limits;
use crate::retry::GiveUpReason;
use crate::types::{Purpose, UploadStatus};

const NOW: u64 = 1_719_184_912_000;

type Error = RequestError<std::io::Error>;

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff_ms: 100,
        max_backoff_ms: 400,
        max_retry_after_ms: 5_000,
    }
}

/// Options for a file in parts of 4 bytes, no md5, no snapshot, quick retries.
fn options(concurrency: usize) -> UploadOptions {
    UploadOptions::new(Purpose::Batch)
        .part_size(4)
        .concurrency(concurrency)
        .md5(false)
        .retry(policy(3))
}

fn upload(bytes: u64, now: u64) -> Upload {
    Upload {
        id: UploadId::new("upload_1"),
        object: "upload".to_owned(),
        bytes,
        created_at: now / 1000,
        filename: "a.jsonl".to_owned(),
        purpose: Purpose::Batch,
        status: UploadStatus::Pending,
        expires_at: now / 1000 + 3600,
        file: None,
    }
}

fn completed(bytes: u64) -> Upload {
    Upload {
        status: UploadStatus::Completed,
        ..upload(bytes, NOW)
    }
}

fn status(code: u16, retry_after: Option<&'static str>) -> Error {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after {
        headers.insert("retry-after", HeaderValue::from_static(value));
    }
    let head = check_response_head(StatusCode::from_u16(code).unwrap(), &headers).unwrap_err();
    RequestError::Response(head.with_body(b"{}").into())
}

fn reset() -> Error {
    RequestError::Transport(std::io::Error::other("reset"))
}

fn id(index: u32) -> PartId {
    PartId::new(format!("part_{index}"))
}

/// The driver's side: what the machine asked for and has not been answered yet.
struct Harness {
    uploader: Uploader<std::io::Error>,
    now: u64,
    size: u64,
    parts: Vec<PartJob>,
    requests: Vec<Transmit>,
    hashing: bool,
    snapshot_io: Option<Action>,
    snapshot_file: Option<String>,
    stopped_parts: u32,
    /// The part attempts the machine stopped, which may still report.
    stopped: Vec<PartJob>,
    stopped_requests: u32,
    snapshot_failed: bool,
    events: Vec<ProgressEvent>,
    log: Vec<String>,
}

impl Harness {
    fn new(options: &UploadOptions, size: u64) -> Self {
        let uploader = Uploader::new(options, "a.jsonl", size, Some("fp".into()), NOW).unwrap();
        Self::with(uploader, size)
    }

    fn with(uploader: Uploader<std::io::Error>, size: u64) -> Self {
        Self {
            uploader,
            now: NOW,
            size,
            parts: Vec::new(),
            requests: Vec::new(),
            hashing: false,
            snapshot_io: None,
            snapshot_file: None,
            stopped_parts: 0,
            stopped: Vec::new(),
            stopped_requests: 0,
            snapshot_failed: false,
            events: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Takes every action the machine has now, as a driver's loop does.
    fn pump(&mut self) {
        while let Some(action) = self.uploader.poll_action(self.now) {
            match action {
                Action::Send(Transmit::Part { job, .. }) => {
                    self.log
                        .push(format!("part {} #{}", job.index, job.attempt));
                    self.parts.push(job);
                }
                Action::Send(request) => {
                    self.log.push(
                        format!("{request:?}")
                            .split([' ', '('])
                            .next()
                            .unwrap()
                            .to_owned(),
                    );
                    self.requests.push(request);
                }
                Action::Hash { offset, len } => {
                    assert_eq!((offset, len), (0, self.size));
                    assert!(!self.hashing, "asked to hash twice");
                    self.hashing = true;
                }
                Action::WriteSnapshot { .. } | Action::RemoveSnapshot { .. } => {
                    assert!(self.snapshot_io.is_none(), "two snapshot writes at once");
                    self.snapshot_io = Some(action);
                }
                Action::StopPart(job) => {
                    let position = self.parts.iter().position(|sent| *sent == job);
                    self.parts
                        .remove(position.expect("only a part in flight is stopped"));
                    self.stopped.push(job);
                    self.stopped_parts += 1;
                }
                Action::StopRequest => {
                    assert_eq!(
                        self.requests.len(),
                        1,
                        "only a request in flight is stopped"
                    );
                    self.requests.clear();
                    self.stopped_requests += 1;
                }
                Action::StopHash => {
                    assert!(self.hashing, "only a pass under way is stopped");
                    self.hashing = false;
                }
            }
        }
        while let Some(event) = self.uploader.poll_event() {
            self.events.push(event);
        }
    }

    fn take_request(&mut self) -> Transmit {
        self.pump();
        assert_eq!(self.requests.len(), 1, "{:?}", self.requests);
        self.requests.remove(0)
    }

    fn create(&mut self) {
        let Transmit::Create(request) = self.take_request() else {
            panic!("expected create")
        };
        assert_eq!(request.bytes, self.size);
        self.uploader
            .handle_created(Ok(upload(self.size, NOW)), self.now, 0.0);
        self.pump();
    }

    /// Answers the in-flight part `index`.
    fn answer(&mut self, index: u32, result: Result<PartId, Error>) {
        let position = self
            .parts
            .iter()
            .position(|job| job.index == index)
            .unwrap();
        let job = self.parts.remove(position);
        self.uploader.handle_bytes_sent(job, job.len, self.now);
        self.uploader.handle_part_result(job, result, self.now, 0.0);
        self.pump();
    }

    fn settle_snapshot(&mut self) {
        self.pump();
        if let Some(action) = self.snapshot_io.take() {
            match action {
                Action::WriteSnapshot { json, .. } => self.snapshot_file = Some(json),
                Action::RemoveSnapshot { .. } => self.snapshot_file = None,
                _ => unreachable!(),
            }
            self.uploader.handle_snapshot_done(Ok(()), self.now);
            self.pump();
        }
    }

    fn advance_to(&mut self, at: u64) {
        assert!(at >= self.now);
        self.now = at;
        self.uploader.handle_timeout(at);
        self.pump();
    }

    fn finished(&mut self) -> Option<Result<Upload, UploadError<std::io::Error>>> {
        self.pump();
        self.uploader.poll_finished()
    }

    fn in_flight(&self) -> Vec<u32> {
        self.parts.iter().map(|job| job.index).collect()
    }
}

#[test]
fn a_whole_upload_hashes_snapshots_and_completes_with_parts_in_order() {
    let options = options(3).md5(true).snapshot_path("/state.json");
    let mut harness = Harness::new(&options, 10);
    harness.create();
    // The hash pass and the first snapshot start with the parts.
    assert!(harness.hashing);
    assert!(harness.snapshot_io.is_some());
    // Every part at once, in file order.
    assert_eq!(harness.in_flight(), [0, 1, 2]);
    harness.settle_snapshot();
    harness.answer(2, Ok(id(2)));
    harness.answer(0, Ok(id(0)));
    // The second snapshot waits for the first; one write at a time, the latest state.
    harness.settle_snapshot();
    harness.settle_snapshot();
    let written = SessionSnapshot::from_json(harness.snapshot_file.as_ref().unwrap()).unwrap();
    assert_eq!(written.part_ids, [Some(id(0)), None, Some(id(2))]);
    harness.answer(1, Ok(id(1)));
    harness.settle_snapshot();
    // Every part is stored, but complete waits for the md5.
    assert!(harness.requests.is_empty());
    harness
        .uploader
        .handle_hashed(Ok("abc".into()), harness.now);
    let Transmit::Complete { request, .. } = harness.take_request() else {
        panic!("expected complete")
    };
    assert_eq!(request.part_ids, [id(0), id(1), id(2)]);
    assert_eq!(request.md5.as_deref(), Some("abc"));
    harness
        .uploader
        .handle_completed(Ok(completed(10)), harness.now, 0.0);
    // The snapshot is removed before the result is handed out.
    assert!(harness.finished().is_none());
    assert!(matches!(
        harness.snapshot_io,
        Some(Action::RemoveSnapshot { .. })
    ));
    harness.settle_snapshot();
    assert_eq!(harness.finished().unwrap().unwrap(), completed(10));
    assert!(harness.uploader.poll_finished().is_none());
    assert_eq!(
        harness.log,
        ["Create", "part 0 #1", "part 1 #1", "part 2 #1", "Complete"]
    );
    let done: Vec<u32> = harness
        .events
        .iter()
        .filter_map(|event| match event {
            ProgressEvent::PartDone { part, .. } => Some(*part),
            _ => None,
        })
        .collect();
    assert_eq!(done, [2, 0, 1]);
}

#[test]
fn a_part_retries_after_the_servers_retry_after_and_its_progress_winds_back() {
    let mut harness = Harness::new(&options(2), 8);
    harness.create();
    let first = harness.parts[0];
    harness.uploader.handle_bytes_sent(first, 3, harness.now);
    harness
        .uploader
        .handle_part_result(first, Err(status(503, Some("2"))), harness.now, 0.0);
    harness.parts.remove(0);
    harness.pump();
    let retry = harness.events.iter().find_map(|event| match event {
        ProgressEvent::PartRetry {
            delay_ms,
            bytes_wound_back,
            total_sent,
            ..
        } => Some((*delay_ms, *bytes_wound_back, *total_sent)),
        _ => None,
    });
    assert_eq!(retry, Some((2_000, 3, 0)));
    // Part 1 goes meanwhile; part 0 waits for the server's 2 s.
    assert_eq!(harness.in_flight(), [1]);
    harness.answer(1, Ok(id(1)));
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 2_000));
    harness.advance_to(NOW + 1_999);
    assert!(harness.parts.is_empty());
    harness.advance_to(NOW + 2_000);
    assert_eq!(harness.parts[0].attempt, 2);
    harness.answer(0, Ok(id(0)));
    let Transmit::Complete { request, .. } = harness.take_request() else {
        panic!("expected complete")
    };
    assert_eq!(request.part_ids, [id(0), id(1)]);
}

#[test]
fn create_and_complete_are_retried_too() {
    let mut harness = Harness::new(&options(1), 4);
    let Transmit::Create(_) = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_created(Err(status(429, Some("1"))), harness.now, 0.0);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 1_000));
    harness.advance_to(NOW + 1_000);
    harness.create();
    harness.answer(0, Ok(id(0)));
    let Transmit::Complete { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_completed(Err(reset()), harness.now, 0.0);
    let at = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(at);
    let Transmit::Complete { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_completed(Ok(completed(4)), harness.now, 0.0);
    assert!(harness.finished().unwrap().is_ok());
    assert_eq!(
        harness.log,
        ["Create", "Create", "part 0 #1", "Complete", "Complete"]
    );
}

#[test]
fn a_refused_connection_to_this_machine_ends_the_upload_at_once() {
    let mut harness = Harness::new(&UploadOptions::new(Purpose::Batch).md5(false), 4);
    let _ = harness.take_request();
    let refused = RequestError::Connect {
        address: "127.0.0.1:18099".to_owned(),
        kind: crate::upload::ConnectFailure::Refused,
        source: std::io::ErrorKind::ConnectionRefused.into(),
    };
    harness
        .uploader
        .handle_created(Err(refused), harness.now, 0.0);
    assert_eq!(harness.uploader.poll_timeout(), None, "no retry scheduled");
    let error = harness.finished().unwrap().unwrap_err();
    assert_eq!(
        crate::upload::error_chain(&error),
        "creating the Upload failed: cannot connect to 127.0.0.1:18099 (connection refused)"
    );
}

#[test]
fn a_create_that_fails_for_good_ends_the_upload_with_nothing_to_cancel() {
    let mut harness = Harness::new(&options(1), 4);
    let _ = harness.take_request();
    harness
        .uploader
        .handle_created(Err(status(400, None)), harness.now, 0.0);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(matches!(error, UploadError::Create(_)), "{error:?}");
}

#[test]
fn the_deadline_stops_the_parts_and_cancels() {
    let options = options(2).deadline(Duration::from_secs(5));
    let mut harness = Harness::new(&options, 8);
    harness.create();
    assert_eq!(harness.in_flight(), [0, 1]);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 5_000));
    harness.advance_to(NOW + 5_000);
    assert_eq!(harness.stopped_parts, 2, "each part in flight is stopped");
    assert!(harness.parts.is_empty());
    let Transmit::Cancel { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_cancelled(Ok(upload(8, NOW)), harness.now, 0.0);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cancelled: true, cause, .. } if matches!(**cause, AbortCause::Deadline)),
        "{error:?}"
    );
}

#[test]
fn a_part_that_gives_up_cancels_and_says_why() {
    let mut harness = Harness::new(&options(1), 8);
    harness.create();
    harness.answer(0, Err(status(400, None)));
    let Transmit::Cancel { .. } = harness.take_request() else {
        panic!()
    };
    // A failed cancel is retried, then reported as kept.
    harness
        .uploader
        .handle_cancelled(Err(reset()), harness.now, 0.0);
    let at = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(at);
    let Transmit::Cancel { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_cancelled(Ok(upload(8, NOW)), harness.now, 0.0);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cancelled: true, cause, .. }
            if matches!(**cause, AbortCause::Part { part: 0, reason: GiveUpReason::NotRetryable { status: 400 }, .. })),
        "{error:?}"
    );
}

#[test]
fn exhausted_retries_keep_the_upload_when_asked() {
    let options = options(1)
        .cancel_on_failure(false)
        .snapshot_path("/state.json");
    let mut harness = Harness::new(&options, 4);
    harness.create();
    harness.settle_snapshot();
    for attempt in 1..=3 {
        assert_eq!(harness.parts[0].attempt, attempt);
        harness.answer(0, Err(status(500, None)));
        if let Some(at) = harness.uploader.poll_timeout() {
            harness.advance_to(at);
        }
    }
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cancelled: false, cause, .. }
            if matches!(**cause, AbortCause::Part { reason: GiveUpReason::AttemptsExhausted { attempts: 3 }, .. })),
        "{error:?}"
    );
    assert!(harness.requests.is_empty());
    assert!(harness.snapshot_file.is_some());
}

#[test]
fn stop_keeps_the_upload_and_its_snapshot_or_cancels_it() {
    for mode in [StopMode::Keep, StopMode::Cancel] {
        let options = options(2).snapshot_path("/state.json");
        let mut harness = Harness::new(&options, 12);
        harness.create();
        harness.settle_snapshot();
        harness.answer(0, Ok(id(0)));
        assert_eq!(harness.in_flight(), [1, 2]);
        harness.uploader.stop(mode, harness.now);
        harness.pump();
        assert_eq!(harness.stopped_parts, 2);
        // The stored part reaches the snapshot before the upload ends.
        assert!(harness.finished().is_none());
        harness.settle_snapshot();
        if mode == StopMode::Cancel {
            let Transmit::Cancel { .. } = harness.take_request() else {
                panic!()
            };
            harness
                .uploader
                .handle_cancelled(Ok(upload(12, NOW)), harness.now, 0.0);
            harness.settle_snapshot();
            assert_eq!(harness.snapshot_file, None);
        } else {
            let kept = SessionSnapshot::from_json(harness.snapshot_file.as_ref().unwrap()).unwrap();
            assert_eq!(kept.part_ids, [Some(id(0)), None, None]);
        }
        let error = harness.finished().unwrap().unwrap_err();
        assert!(
            matches!(&error, UploadError::Aborted { cancelled, cause, .. }
                if *cancelled == (mode == StopMode::Cancel) && matches!(**cause, AbortCause::Interrupted)),
            "{error:?}"
        );
        // Answers that come late change nothing.
        harness.uploader.handle_part_result(
            PartJob {
                index: 1,
                offset: 4,
                len: 4,
                attempt: 1,
            },
            Ok(id(1)),
            harness.now,
            0.0,
        );
        assert!(harness.finished().is_none());
    }

    let mut harness = Harness::new(&options(1), 4);
    let _ = harness.take_request();
    harness.uploader.stop(StopMode::Keep, harness.now);
    assert!(matches!(
        harness.finished(),
        Some(Err(UploadError::Interrupted))
    ));
}

#[test]
fn a_resume_sends_only_the_missing_parts() {
    let plan = PartPlan::new(12, 4, &Limits::default()).unwrap();
    let mut parts =
        Parts::new(upload(12, NOW), plan, RetryPolicy::default(), None).with_source("fp");
    let job = parts.next_job(NOW, CutHint::NONE).unwrap();
    parts.handle_part_done(job, id(0));
    let snapshot = parts.snapshot();

    let options = options(3).md5(true);
    let uploader = Uploader::resume(&options, snapshot.clone(), 12, "fp", NOW + 1).unwrap();
    let mut harness = Harness::with(uploader, 12);
    harness.pump();
    assert!(harness.hashing, "the md5 covers the whole file");
    assert_eq!(harness.in_flight(), [1, 2]);
    harness.answer(1, Ok(id(1)));
    harness.answer(2, Ok(id(2)));
    harness
        .uploader
        .handle_hashed(Ok("abc".into()), harness.now);
    let Transmit::Complete { request, .. } = harness.take_request() else {
        panic!()
    };
    assert_eq!(request.part_ids, [id(0), id(1), id(2)]);
    assert_eq!(harness.log, ["part 1 #1", "part 2 #1", "Complete"]);

    let expired = Uploader::<std::io::Error>::resume(
        &options,
        snapshot.clone(),
        12,
        "fp",
        (NOW / 1000 + 3600) * 1000,
    )
    .unwrap_err();
    assert!(
        matches!(expired, UploadError::Resume(ResumeError::Expired { .. })),
        "{expired:?}"
    );
    let changed =
        Uploader::<std::io::Error>::resume(&options, snapshot, 12, "other", NOW).unwrap_err();
    assert!(
        matches!(changed, UploadError::SourceChanged { .. }),
        "{changed:?}"
    );
}

#[test]
fn source_and_snapshot_failures_end_the_upload() {
    let options = options(2).md5(true).snapshot_path("/state.json");
    let mut harness = Harness::new(&options, 8);
    harness.create();
    harness
        .uploader
        .handle_hashed(Err(std::io::ErrorKind::UnexpectedEof.into()), harness.now);
    harness.pump();
    assert_eq!(harness.stopped_parts, 2);
    harness.settle_snapshot();
    let Transmit::Cancel { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_cancelled(Ok(upload(8, NOW)), harness.now, 0.0);
    harness.settle_snapshot();
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cause, .. } if matches!(**cause, AbortCause::Source(_))),
        "{error:?}"
    );

    let mut harness = Harness::new(&options.clone().md5(false), 8);
    harness.create();
    assert!(harness.snapshot_io.take().is_some());
    harness.uploader.handle_snapshot_done(
        Err(std::io::ErrorKind::PermissionDenied.into()),
        harness.now,
    );
    let Transmit::Cancel { .. } = harness.take_request() else {
        panic!()
    };
    harness
        .uploader
        .handle_cancelled(Ok(upload(8, NOW)), harness.now, 0.0);
    harness.settle_snapshot();
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cause, .. } if matches!(**cause, AbortCause::Snapshot(_))),
        "{error:?}"
    );
}

/// What the network, the disk or the user does next, in a random interleaving.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The in-flight part at `pick` sends some bytes.
    Send {
        pick: usize,
        bytes: u64,
    },
    /// The in-flight part at `pick` ends.
    Answer {
        pick: usize,
        outcome: Outcome,
    },
    /// The pending request (create, complete or cancel) ends.
    Reply(Outcome),
    /// The md5 pass ends.
    Hashed(bool),
    /// The snapshot write ends.
    Snapshot(bool),
    /// Time passes, to the next timeout or by some milliseconds.
    Wait(Option<u64>),
    Stop(bool),
    /// A part attempt the machine stopped reports after all: its task ended without an
    /// answer (`false`), or the service stored it (`true`).
    Late {
        pick: usize,
        stored: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Retryable,
    Refused,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![6 => Just(Outcome::Ok), 3 => Just(Outcome::Retryable), 1 => Just(Outcome::Refused)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<usize>(), 0_u64..5).prop_map(|(pick, bytes)| Step::Send { pick, bytes }),
        6 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Step::Answer { pick, outcome }),
        2 => outcome().prop_map(Step::Reply),
        1 => prop_oneof![9 => Just(true), 1 => Just(false)].prop_map(Step::Hashed),
        2 => prop_oneof![9 => Just(true), 1 => Just(false)].prop_map(Step::Snapshot),
        2 => proptest::option::of(0_u64..3_000).prop_map(Step::Wait),
        1 => prop_oneof![Just(true), Just(false)].prop_map(Step::Stop),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, stored)| Step::Late { pick, stored }),
    ]
}

fn result_for(outcome: Outcome, ok: Upload) -> Result<Upload, Error> {
    match outcome {
        Outcome::Ok => Ok(ok),
        Outcome::Retryable => Err(status(503, Some("1"))),
        Outcome::Refused => Err(status(400, None)),
    }
}

impl Harness {
    fn apply(&mut self, step: Step) {
        self.pump();
        match step {
            Step::Send { pick, bytes } => {
                if self.parts.is_empty() {
                    return;
                }
                let job = self.parts[pick % self.parts.len()];
                self.uploader.handle_bytes_sent(job, bytes, self.now);
            }
            Step::Answer { pick, outcome } => {
                if self.parts.is_empty() {
                    return;
                }
                let job = self.parts.remove(pick % self.parts.len());
                let result = match outcome {
                    Outcome::Ok => Ok(PartId::new(format!("part_{}_{}", job.index, job.attempt))),
                    Outcome::Retryable => Err(reset()),
                    Outcome::Refused => Err(status(400, None)),
                };
                self.uploader.handle_part_result(job, result, self.now, 0.5);
            }
            Step::Reply(outcome) => {
                if self.requests.is_empty() {
                    return;
                }
                match self.requests.remove(0) {
                    Transmit::Create(_) => self.uploader.handle_created(
                        result_for(outcome, upload(self.size, NOW)),
                        self.now,
                        0.5,
                    ),
                    Transmit::Complete { .. } => self.uploader.handle_completed(
                        result_for(outcome, completed(self.size)),
                        self.now,
                        0.5,
                    ),
                    Transmit::Cancel { .. } => self.uploader.handle_cancelled(
                        result_for(outcome, upload(self.size, NOW)),
                        self.now,
                        0.5,
                    ),
                    Transmit::Part { .. } => unreachable!("parts are kept apart"),
                }
            }
            Step::Hashed(ok) => {
                if self.hashing {
                    self.hashing = false;
                    let result = if ok {
                        Ok("abc".to_owned())
                    } else {
                        Err(std::io::ErrorKind::UnexpectedEof.into())
                    };
                    self.uploader.handle_hashed(result, self.now);
                }
            }
            Step::Snapshot(ok) => {
                if let Some(action) = self.snapshot_io.take() {
                    self.snapshot_failed |= !ok;
                    if ok {
                        self.snapshot_file = match action {
                            Action::WriteSnapshot { json, .. } => Some(json),
                            _ => None,
                        };
                    }
                    let result = if ok {
                        Ok(())
                    } else {
                        Err(std::io::ErrorKind::PermissionDenied.into())
                    };
                    self.uploader.handle_snapshot_done(result, self.now);
                }
            }
            Step::Wait(by) => {
                let to = match by {
                    Some(by) => self.now + by,
                    None => match self.uploader.poll_timeout() {
                        Some(at) => at.max(self.now),
                        None => return,
                    },
                };
                self.advance_to(to);
            }
            Step::Late { pick, stored } => self.late(pick, stored),
            Step::Stop(keep) => {
                let mode = if keep {
                    StopMode::Keep
                } else {
                    StopMode::Cancel
                };
                self.uploader.stop(mode, self.now);
            }
        }
        self.pump();
        self.check();
    }

    /// A part attempt the machine stopped reports after all: that changes nothing.
    fn late(&mut self, pick: usize, stored: bool) {
        if self.stopped.is_empty() {
            return;
        }
        let job = self.stopped.remove(pick % self.stopped.len());
        let result = if stored {
            Ok(PartId::new(format!("part_{}_{}", job.index, job.attempt)))
        } else {
            Err(RequestError::Unanswered)
        };
        let before = self.machine_state();
        self.uploader.handle_part_result(job, result, self.now, 0.5);
        assert_eq!(
            self.machine_state(),
            before,
            "a stopped attempt's report changed the upload"
        );
    }

    /// The phase, whether the parts phase gives up, and the parts stored and in flight.
    fn machine_state(&self) -> (&'static str, bool, Option<Progress>, usize) {
        let phase = match &self.uploader.phase {
            Phase::Creating { .. } => "creating",
            Phase::Parts => "parts",
            Phase::Completing { .. } => "completing",
            Phase::Cancelling { .. } => "cancelling",
            Phase::Finishing(_) => "finishing",
            Phase::Done => "done",
        };
        (
            phase,
            self.uploader.abort.is_some(),
            self.uploader.progress(),
            self.uploader.parts_in_flight(),
        )
    }

    /// What must hold after every step.
    fn check(&self) {
        if self.uploader.is_done() {
            return;
        }
        let concurrency = 3;
        assert!(self.parts.len() <= concurrency);
        let mut indexes: Vec<u32> = self.in_flight();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), self.parts.len(), "a part handed out twice");
        assert!(
            self.requests.len() <= 1,
            "two requests of the machine's own at once"
        );
        // Nothing outstanding: the machine must have finished or set a timeout.
        let idle = self.parts.is_empty()
            && self.requests.is_empty()
            && !self.hashing
            && self.snapshot_io.is_none();
        if idle {
            assert!(
                matches!(self.uploader.phase, Phase::Finishing(_))
                    || self.uploader.poll_timeout().is_some(),
                "stuck with nothing in flight and no timeout"
            );
        }
        if let Some(progress) = self.uploader.progress() {
            assert!(progress.bytes_sent <= progress.bytes_total);
        }
    }

    /// Runs to the end with everything succeeding.
    fn finish(&mut self) -> Result<Upload, UploadError<std::io::Error>> {
        for _ in 0..10_000 {
            self.pump();
            if let Some(result) = self.uploader.poll_finished() {
                return result;
            }
            if let Some(job) = self.parts.first().copied() {
                self.answer(
                    job.index,
                    Ok(PartId::new(format!("part_{}_{}", job.index, job.attempt))),
                );
            } else if !self.requests.is_empty() {
                self.apply(Step::Reply(Outcome::Ok));
            } else if self.hashing {
                self.apply(Step::Hashed(true));
            } else if self.snapshot_io.is_some() {
                self.apply(Step::Snapshot(true));
            } else {
                let at = self.uploader.poll_timeout().expect("stuck");
                self.advance_to(at.max(self.now));
            }
        }
        panic!("no end in sight")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_interleaving_ends_once_and_completes_only_with_every_part_in_order(
        size in 0_u64..30,
        md5 in any::<bool>(),
        snapshot in any::<bool>(),
        keep in any::<bool>(),
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        // A stall time the steps' waits reach, so attempts stall and are stopped too.
        let stall = Duration::from_secs(2);
        let mut options = options(3).md5(md5).cancel_on_failure(!keep).stall_timeout(stall);
        if snapshot {
            options = options.snapshot_path("/state.json");
        }
        let mut harness = Harness::new(&options, size);
        let mut stopped = false;
        for step in steps {
            stopped |= matches!(step, Step::Stop(_));
            harness.apply(step);
        }
        let completes = harness.log.iter().filter(|line| *line == "Complete").count();
        let result = harness.finish();
        match &result {
            Ok(upload) => {
                prop_assert_eq!(upload.status.clone(), UploadStatus::Completed);
                prop_assert!(completes <= harness.log.iter().filter(|line| *line == "Complete").count());
                // The complete request listed every part, in order.
                let parts = size.div_ceil(4).max(1);
                let first_attempts: Vec<String> = harness.log.iter()
                    .filter(|line| line.starts_with("part ") && line.ends_with("#1"))
                    .cloned().collect();
                let expected: Vec<String> = (0..parts).map(|index| format!("part {index} #1")).collect();
                prop_assert_eq!(first_attempts, expected, "first attempts start in index order");
                if snapshot && !harness.snapshot_failed {
                    prop_assert_eq!(&harness.snapshot_file, &None, "the snapshot is removed on success");
                }
            }
            Err(UploadError::Aborted { cancelled, cause, .. }) => {
                if *cancelled && snapshot && !harness.snapshot_failed {
                    prop_assert_eq!(&harness.snapshot_file, &None);
                }
                if matches!(**cause, AbortCause::Interrupted) {
                    prop_assert!(stopped);
                }
            }
            Err(UploadError::Create(_)) => {}
            Err(UploadError::Interrupted) => prop_assert!(stopped),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
        prop_assert!(harness.uploader.poll_finished().is_none());
        prop_assert!(harness.uploader.is_done());
    }
}

#[test]
fn a_resume_without_a_fingerprint_checks_the_length_and_the_options_first() {
    let plan = PartPlan::new(8, 4, &Limits::default()).unwrap();
    let snapshot = Parts::new(upload(8, NOW), plan, RetryPolicy::default(), None).snapshot();
    assert_eq!(
        snapshot.source, None,
        "an upload from a reader has no fingerprint"
    );
    let options = options(2).deadline(Duration::from_secs(1));
    let resumed =
        Uploader::<std::io::Error>::resume(&options, snapshot.clone(), 8, "any", NOW).unwrap();
    assert_eq!(resumed.deadline_unix_ms(), Some(NOW + 1_000));
    assert_eq!(
        resumed.snapshot().unwrap().source.as_deref(),
        Some("any"),
        "the resumed upload records the source it was given"
    );
    let shorter =
        Uploader::<std::io::Error>::resume(&options, snapshot.clone(), 7, "any", NOW).unwrap_err();
    assert!(
        matches!(&shorter, UploadError::SourceChanged { expected, .. } if expected == "8 bytes"),
        "{shorter:?}"
    );
    let idle = Uploader::<std::io::Error>::resume(&options.concurrency(0), snapshot, 8, "any", NOW);
    assert!(matches!(
        idle,
        Err(UploadError::Options(OptionsError::ZeroConcurrency))
    ));
}

#[test]
fn a_part_that_cannot_be_sent_gives_up_at_once_and_the_first_cause_wins() {
    let mut harness = Harness::new(&options(3).cancel_on_failure(false), 12);
    harness.create();
    assert_eq!(harness.in_flight(), [0, 1, 2]);
    let unbuildable = RequestError::Build(crate::api::BuildError::EmptyId { param: "upload_id" });
    harness.answer(1, Err(unbuildable));
    // A refusal after the give-up is not the cause; a part stored after it still counts.
    assert_eq!(harness.stopped_parts, 2);
    harness.uploader.handle_part_result(
        PartJob {
            index: 0,
            offset: 0,
            len: 4,
            attempt: 1,
        },
        Err(status(400, None)),
        harness.now,
        0.0,
    );
    let error = harness.finished().unwrap().unwrap_err();
    let UploadError::Aborted {
        cancelled, cause, ..
    } = error
    else {
        panic!("{error:?}")
    };
    assert!(!cancelled);
    assert!(
        matches!(
            *cause,
            AbortCause::Part {
                part: 1,
                reason: GiveUpReason::CannotSend,
                error: RequestError::Build(_)
            }
        ),
        "{cause:?}"
    );
    assert_eq!(harness.uploader.progress().unwrap().retries, 0);
}

#[test]
fn a_part_stored_as_the_deadline_passes_still_reaches_the_snapshot() {
    let options = options(2)
        .deadline(Duration::from_secs(5))
        .snapshot_path("/state.json")
        .cancel_on_failure(false);
    let mut harness = Harness::new(&options, 8);
    harness.create();
    harness.settle_snapshot();
    harness.now = NOW + 5_000;
    harness.answer(1, Ok(id(1)));
    harness.settle_snapshot();
    let written = SessionSnapshot::from_json(harness.snapshot_file.as_ref().unwrap()).unwrap();
    assert_eq!(written.part_ids, [None, Some(id(1))]);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cause, .. } if matches!(**cause, AbortCause::Deadline)),
        "{error:?}"
    );
}

#[test]
fn a_part_that_moves_nothing_for_the_stall_time_is_stopped_and_retried() {
    let options = options(2).stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, 8);
    harness.create();
    let [first, second] = [harness.parts[0], harness.parts[1]];
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 30_000));
    // Part 1 keeps moving; part 0 goes silent.
    harness.now = NOW + 20_000;
    harness.uploader.handle_bytes_sent(second, 1, harness.now);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 30_000));
    harness.advance_to(NOW + 29_999);
    assert_eq!(harness.stopped_parts, 0);
    harness.advance_to(NOW + 30_000);
    assert_eq!(harness.stopped_parts, 1);
    assert_eq!(harness.in_flight(), [1]);
    let retry = harness.events.iter().find_map(|event| match event {
        ProgressEvent::PartRetry { part, failure, .. } => Some((*part, failure.clone())),
        _ => None,
    });
    assert_eq!(retry, Some((0, Failure::Timeout)));
    // The stopped attempt's task reports that it ended without an answer (its guard was
    // dropped), or answers after all: too late either way, it was stopped.
    harness
        .uploader
        .handle_part_result(first, Err(RequestError::Unanswered), harness.now, 0.0);
    harness
        .uploader
        .handle_part_result(first, Ok(id(0)), harness.now, 0.0);
    let due = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(due);
    assert_eq!(harness.in_flight(), [1, 0]);
    assert_eq!(harness.parts[1].attempt, 2);
    assert_eq!(harness.uploader.parts_in_flight(), 2);
    // The first attempt fails late, while the second is in flight: that is not the second's,
    // even as a failure no retry could fix.
    let retries = harness.uploader.progress().unwrap().retries;
    harness
        .uploader
        .handle_part_result(first, Err(reset()), harness.now, 0.0);
    harness
        .uploader
        .handle_part_result(first, Err(RequestError::Unanswered), harness.now, 0.0);
    harness.pump();
    assert_eq!(harness.stopped_parts, 1, "nothing gave up");
    assert_eq!(harness.uploader.progress().unwrap().retries, retries);
    assert_eq!(harness.uploader.parts_in_flight(), 2);
    harness.answer(0, Ok(id(7)));
    harness.answer(1, Ok(id(1)));
    let Transmit::Complete { request, .. } = harness.take_request() else {
        panic!("expected complete")
    };
    assert_eq!(request.part_ids, [id(7), id(1)]);
}

#[test]
fn a_silent_create_or_complete_is_stopped_and_sent_again() {
    let options = options(1).stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, 4);
    harness.pump();
    assert_eq!(harness.requests.len(), 1);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 30_000));
    harness.advance_to(NOW + 30_000);
    assert_eq!(harness.stopped_requests, 1);
    let due = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(due);
    harness.create();
    harness.answer(0, Ok(id(0)));
    assert!(matches!(harness.requests[..], [Transmit::Complete { .. }]));
    // A complete may read the Upload back first: it gets the stall time and more.
    let complete_stalls_at = harness.uploader.poll_timeout().unwrap();
    assert!(complete_stalls_at >= harness.now + 30_000);
    harness.advance_to(complete_stalls_at);
    assert_eq!(harness.stopped_requests, 2);
    let due = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(due);
    let Transmit::Complete { .. } = harness.take_request() else {
        panic!("expected complete again")
    };
    harness
        .uploader
        .handle_completed(Ok(completed(4)), harness.now, 0.0);
    assert_eq!(harness.finished().unwrap().unwrap(), completed(4));
}

#[test]
fn a_task_that_ends_without_an_answer_is_reported_once_and_not_retried() {
    let mut harness = Harness::new(&options(1), 4);
    harness.pump();
    let (sender, received) = std::sync::mpsc::channel();
    let action = Action::Send(harness.requests.remove(0));
    let guard = ReportGuard::new(&action, move |report| sender.send(report).unwrap()).unwrap();
    drop(guard);
    let report = received.recv().unwrap();
    assert!(received.try_recv().is_err(), "one report only");
    harness.uploader.handle(report, harness.now, 0.0);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(error, UploadError::Create(RequestError::Unanswered)),
        "{error:?}"
    );
    assert!(ReportGuard::<std::io::Error, _>::new(&Action::StopHash, |_| {}).is_none());
}

#[test]
fn the_kit_builds_each_request_and_reads_each_answer() {
    let config = crate::api::ClientConfig::new("http://127.0.0.1:9/v1").with_api_key("sk-test");
    let boundary = crate::multipart::Boundary::from_entropy([7; 16]);
    let job = PartJob {
        index: 3,
        offset: 12,
        len: 4,
        attempt: 2,
    };
    let transmit = Transmit::Part {
        upload_id: UploadId::new("upload_1"),
        job,
    };
    let (request, expect) = transmit
        .into_request::<std::io::Error>(&config, &boundary)
        .unwrap();
    assert_eq!(
        request.uri(),
        "http://127.0.0.1:9/v1/uploads/upload_1/parts"
    );
    assert_eq!(request.headers()["x-uploads-part-index"], "3");
    let OutgoingBody::Part(body) = request.body() else {
        panic!("a part streams its body")
    };
    assert_eq!(body.job, job);
    assert_eq!(
        request.headers()["content-length"],
        body.multipart.content_length.to_string().as_str()
    );
    assert_eq!(expect.part(), Some(job));
    let stored = http::Response::new(
        br#"{"id":"part_9","object":"upload.part","created_at":1,"upload_id":"upload_1"}"#.to_vec(),
    );
    assert!(
        matches!(expect.report(Ok(stored)), Report::<std::io::Error>::Part(reported, Ok(id)) if reported == job && id == PartId::new("part_9"))
    );
    let busy = http::Response::builder()
        .status(503)
        .header("retry-after", "2")
        .body(Vec::new())
        .unwrap();
    let Report::Part(_, Err(error)) = expect.report::<std::io::Error, _>(Ok(busy)) else {
        panic!()
    };
    assert_eq!(error.api_error().map(|api| api.status.as_u16()), Some(503));

    let (request, expect) = Transmit::Cancel {
        upload_id: UploadId::new("upload_1"),
    }
    .into_request::<std::io::Error>(&config, &boundary)
    .unwrap();
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(expect.part(), None);
    let refused = expect
        .report::<std::io::Error, Vec<u8>>(Err(RequestError::Timeout(Duration::from_secs(1))));
    assert!(matches!(
        refused,
        Report::Cancelled(Err(RequestError::Timeout(_)))
    ));
    // A request that cannot be built is its own report.
    let unbuildable = Transmit::Cancel {
        upload_id: UploadId::new(""),
    }
    .into_request::<std::io::Error>(&config, &boundary);
    assert!(matches!(
        unbuildable,
        Err(Report::Cancelled(Err(RequestError::Build(_))))
    ));
}

#[test]
fn a_part_body_reads_as_head_data_and_tail_counting_and_stopping() {
    use std::io::Read;

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::PermissionDenied.into())
        }
    }

    let config = crate::api::ClientConfig::new("http://127.0.0.1:9/v1");
    let boundary = crate::multipart::Boundary::from_entropy([7; 16]);
    let job = PartJob {
        index: 1,
        offset: 4,
        len: 4,
        attempt: 1,
    };
    let transmit = Transmit::Part {
        upload_id: UploadId::new("upload_1"),
        job,
    };
    let body = || match transmit
        .clone()
        .into_request::<std::io::Error>(&config, &boundary)
    {
        Ok((request, _)) => match request.into_body() {
            OutgoingBody::Part(body) => body,
            other => panic!("{other:?}"),
        },
        Err(report) => panic!("{report:?}"),
    };
    let expected = body().multipart.assemble(b"4567");

    // The source is already at the part's offset; only `len` bytes of it are sent.
    let mut counted = 0;
    let mut wire = Vec::new();
    let mut reader = body().reader(&b"4567and more"[..], |bytes| {
        counted += bytes;
        true
    });
    assert!(format!("{reader:?}").starts_with("PartReader"));
    reader.read_to_end(&mut wire).unwrap();
    assert_eq!(wire, expected);
    assert_eq!(counted, 4);

    // Stopped: reading fails, and it is not the source's failure.
    let mut stopped = body().reader(&b"4567"[..], |_| false);
    let failed = stopped.source_error();
    let error = stopped.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(error.to_string(), "the part was stopped");
    assert!(failed.take().is_none());

    // A source that fails: its error is kept apart from the transport's.
    let mut broken = body().reader(Broken, |_| true);
    let failed = broken.source_error();
    assert!(broken.read_to_end(&mut Vec::new()).is_err());
    assert_eq!(
        failed.take().map(|error| error.kind()),
        Some(std::io::ErrorKind::PermissionDenied)
    );
}

#[test]
fn a_complete_may_stay_silent_longer_in_proportion_to_the_upload() {
    let size = 64 * 1024 * 1024;
    let options = options(1)
        .part_size(size)
        .stall_timeout(Duration::from_secs(30));
    let harness = Harness::new(&options, size);
    let upload_id = UploadId::new("upload_1");
    let part = Transmit::Part {
        upload_id: upload_id.clone(),
        job: PartJob {
            index: 0,
            offset: 0,
            len: 4,
            attempt: 1,
        },
    };
    assert_eq!(
        harness.uploader.stall_timeout(&part),
        Duration::from_secs(30)
    );
    let complete = Transmit::Complete {
        upload_id,
        request: CompleteUploadRequest {
            part_ids: vec![],
            md5: None,
        },
    };
    // 64 MiB read back at 32 MiB/s: two seconds more.
    assert_eq!(
        harness.uploader.stall_timeout(&complete),
        Duration::from_secs(32)
    );
    assert_eq!(
        format!("{:?}", harness.uploader).split(' ').next(),
        Some("Uploader")
    );
}

#[test]
fn a_late_answer_while_the_retry_waits_is_ignored() {
    let mut harness = Harness::new(&options(1), 4);
    harness.create();
    harness.answer(0, Ok(id(0)));
    assert_eq!(harness.uploader.parts_in_flight(), 0);
    harness.pump();
    assert!(matches!(harness.requests[..], [Transmit::Complete { .. }]));
    harness.requests.clear();
    harness
        .uploader
        .handle_completed(Err(status(503, Some("1"))), harness.now, 0.0);
    // The complete waits for its retry; a duplicate answer of the failed attempt is stale.
    harness
        .uploader
        .handle_completed(Ok(completed(4)), harness.now, 0.0);
    assert!(harness.uploader.poll_finished().is_none());
    assert!(!harness.uploader.is_done());
    // Time passes by the machine's own timeout alone, with no poll_action in between.
    let due = harness.uploader.poll_timeout().unwrap();
    harness.now = due;
    harness.uploader.handle_timeout(due);
    assert_eq!(
        harness.uploader.poll_timeout(),
        None,
        "the retry is ready to send"
    );
    let Transmit::Complete { .. } = harness.take_request() else {
        panic!("expected the complete again")
    };
    harness
        .uploader
        .handle_completed(Ok(completed(4)), harness.now, 0.0);
    assert_eq!(harness.finished().unwrap().unwrap(), completed(4));
    assert!(harness.uploader.is_done());
}

#[test]
fn no_wake_up_for_a_retry_while_every_slot_is_taken() {
    let options = options(1).stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, 8);
    harness.create();
    assert_eq!(harness.in_flight(), [0]);
    harness.answer(0, Err(reset()));
    // Part 0 waits for its retry; part 1 takes the only slot.
    assert_eq!(harness.in_flight(), [1]);
    // The machine wakes for part 1's stall, not for a retry it has no room to send.
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 30_000));
}

#[test]
fn the_result_waits_for_the_snapshot_to_be_removed() {
    let options = options(1).snapshot_path("/state.json");
    let mut harness = Harness::new(&options, 4);
    harness.create();
    harness.settle_snapshot();
    harness.answer(0, Ok(id(0)));
    harness.settle_snapshot();
    harness.pump();
    harness
        .uploader
        .handle_completed(Ok(completed(4)), harness.now, 0.0);
    // Not handed out while the snapshot's removal is neither asked for nor done.
    assert!(harness.uploader.poll_finished().is_none());
    assert!(matches!(
        harness.uploader.poll_action(harness.now),
        Some(Action::RemoveSnapshot { .. })
    ));
    assert!(harness.uploader.poll_finished().is_none());
    harness.uploader.handle_snapshot_done(Ok(()), harness.now);
    assert_eq!(
        harness.uploader.poll_finished().unwrap().unwrap(),
        completed(4)
    );
}

#[test]
fn a_part_failing_as_the_deadline_passes_is_the_deadline_not_a_retry() {
    let options = options(1).deadline(Duration::from_secs(5));
    let mut harness = Harness::new(&options, 4);
    harness.create();
    let job = harness.parts.remove(0);
    harness.now = NOW + 5_000;
    harness
        .uploader
        .handle_part_result(job, Err(status(400, None)), harness.now, 0.0);
    harness.pump();
    assert!(
        !harness.events.iter().any(|event| matches!(
            event,
            ProgressEvent::GaveUp(_) | ProgressEvent::PartRetry { .. }
        )),
        "{:?}",
        harness.events
    );
    harness.requests.clear();
    harness
        .uploader
        .handle_cancelled(Ok(upload(4, NOW)), harness.now, 0.0);
    let error = harness.finished().unwrap().unwrap_err();
    assert!(
        matches!(&error, UploadError::Aborted { cause, .. } if matches!(**cause, AbortCause::Deadline)),
        "{error:?}"
    );
}

#[test]
fn a_guard_sends_the_report_it_is_given_once() {
    let (sender, received) = std::sync::mpsc::channel();
    let guard = ReportGuard::new(&Action::Hash { offset: 0, len: 4 }, move |report| {
        sender.send(report).unwrap();
    })
    .unwrap();
    assert!(format!("{guard:?}").contains("answered: false"));
    guard.send(Report::<std::io::Error>::Hashed(Ok("abc".into())));
    assert!(matches!(received.recv(), Ok(Report::Hashed(Ok(md5))) if md5 == "abc"));
    assert!(
        received.try_recv().is_err(),
        "the guard sent nothing more when dropped"
    );
}

#[test]
fn parts_stalled_together_do_not_retry_together() {
    let options = options(3).stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, 12);
    harness.create();
    assert_eq!(harness.in_flight(), [0, 1, 2]);
    harness.uploader.handle(
        Report::Sent {
            job: harness.parts[0],
            bytes: 1,
        },
        NOW,
        0.25,
    );
    harness.advance_to(NOW + 30_000);
    let delays: Vec<u64> = harness
        .events
        .iter()
        .filter_map(|event| match event {
            ProgressEvent::PartRetry { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 3, "{:?}", harness.events);
    // The backoff is 100 ms, jittered to between 75 and 100 ms, differently for each part:
    // part 0 takes the caller's jitter (0.25), each next part's moves on by the golden
    // ratio's 0.618 (to 0.868 and 0.486), so no two parts wait alike.
    assert_eq!(delays, [93, 78, 87]);
}

#[test]
fn a_stalled_complete_says_how_long_it_was_given() {
    let size = 64 * 1024 * 1024;
    let options = options(1)
        .part_size(size)
        .retry(policy(1))
        .cancel_on_failure(false)
        .stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, size);
    harness.create();
    harness.answer(0, Ok(id(0)));
    let at = harness.uploader.poll_timeout().unwrap();
    harness.advance_to(at);
    let error = harness.finished().unwrap().unwrap_err();
    let UploadError::Aborted { cause, .. } = error else {
        panic!("{error:?}")
    };
    // 30 s, and 2 s more to read 64 MiB back at 32 MiB/s.
    assert!(
        matches!(*cause, AbortCause::Complete(RequestError::Stalled(silent)) if silent == Duration::from_secs(32)),
        "{cause:?}"
    );
}

#[test]
fn a_driver_that_reports_its_sockets_is_woken_to_sample_them_while_parts_are_in_flight() {
    let options = options(1).stall_timeout(Duration::from_secs(30));
    let mut harness = Harness::new(&options, 8);
    harness.create();
    assert_eq!(harness.in_flight(), [0]);
    // A driver that never reports its sockets is woken for the stall only.
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 30_000));
    let job = harness.parts[0];
    harness
        .uploader
        .handle(Report::Sent { job, bytes: 4 }, NOW, 0.5);
    harness
        .uploader
        .handle(Report::Unacknowledged { bytes: 3 }, NOW + 10, 0.5);
    assert_eq!(harness.uploader.progress().unwrap().bytes_delivered, 1);
    assert_eq!(
        harness.uploader.poll_timeout(),
        Some(NOW + 10 + SAMPLE_INTERVAL_MS)
    );
    let delivered: Vec<_> = std::iter::from_fn(|| harness.uploader.poll_event())
        .filter(|event| matches!(event, ProgressEvent::Delivered { .. }))
        .collect();
    assert_eq!(
        delivered,
        [ProgressEvent::Delivered {
            total_delivered: 1,
            total: 8
        }]
    );
}

#[test]
fn a_throttled_part_cuts_the_adaptive_level_and_pauses_new_parts_for_the_retry_after() {
    let options = UploadOptions::new(Purpose::Batch)
        .part_size(4)
        .md5(false)
        .retry(policy(3))
        .max_concurrency(4);
    let mut harness = Harness::new(&options, 32);
    harness.create();
    assert_eq!(harness.in_flight(), [0, 1, 2, 3]);
    harness.answer(0, Err(status(429, Some("2"))));
    // A quarter off: three in flight at most, and none starts for two seconds.
    assert_eq!(harness.uploader.parts_in_flight_limit(), 3);
    harness.answer(1, Ok(id(1)));
    assert_eq!(harness.in_flight(), [2, 3]);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 2_000));
    harness.advance_to(NOW + 1_999);
    assert_eq!(harness.in_flight(), [2, 3]);
    harness.advance_to(NOW + 2_000);
    // The retry first, in the one free slot.
    assert_eq!(harness.in_flight(), [2, 3, 0]);
}

#[test]
fn a_fixed_concurrency_is_not_cut_by_throttling() {
    let mut harness = Harness::new(&options(2), 16);
    harness.create();
    harness.answer(0, Err(status(429, Some("2"))));
    assert_eq!(harness.uploader.parts_in_flight_limit(), 2);
    // The next part takes the free slot at once; only the throttled one waits.
    assert_eq!(harness.in_flight(), [1, 2]);
}

#[test]
fn an_adaptive_upload_wakes_to_measure_its_windows_when_nothing_else_would() {
    let options = UploadOptions::new(Purpose::Batch)
        .part_size(4)
        .md5(false)
        .stall_timeout(Duration::from_mins(1));
    let mut harness = Harness::new(&options, 64);
    harness.create();
    // Create was answered at once: the shortest window (500 ms), measured from a third in.
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 166));
    harness.advance_to(NOW + 166);
    assert_eq!(harness.uploader.poll_timeout(), Some(NOW + 500));
    // A fixed number of parts in flight measures nothing: only the stall wakes it.
    let mut fixed = Harness::new(&options.clone().concurrency(8), 64);
    fixed.create();
    assert_eq!(fixed.uploader.poll_timeout(), Some(NOW + 60_000));
}
