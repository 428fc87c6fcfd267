use std::collections::BTreeMap;

use super::*;
use crate::limits::Limits;
use crate::limits::MIB;
use crate::retry::GiveUpReason;
use crate::types::Purpose;
use crate::types::{UploadId, UploadStatus};
use crate::uploader::plan::{MIN_CUT, PlanError};
use crate::uploader::snapshot::Inconsistency;
use proptest::prelude::*;

const NOW: u64 = 1_719_184_912_000;
const EXPIRES_AT: u64 = 1_719_188_511;

fn upload(bytes: u64) -> Upload {
    Upload {
        id: UploadId::new("upload_abc123"),
        object: "upload".to_owned(),
        bytes,
        created_at: EXPIRES_AT - 3600,
        filename: "train.jsonl".to_owned(),
        purpose: Purpose::FineTune,
        status: UploadStatus::Pending,
        expires_at: EXPIRES_AT,
        file: None,
    }
}

fn started(file_size: u64, part_size: u64) -> Parts {
    let plan = PartPlan::new(file_size, part_size, &Limits::default()).unwrap();
    Parts::new(upload(file_size), plan, RetryPolicy::default(), None)
}

fn job(index: u32, offset: u64, len: u64, attempt: u32) -> PartJob {
    PartJob {
        index,
        offset,
        len,
        attempt,
    }
}

fn id(index: u32) -> PartId {
    PartId::new(format!("part_{index}"))
}

fn events(session: &mut Parts) -> Vec<ProgressEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

fn unavailable() -> Failure {
    Failure::Status {
        status: 503,
        retry_after_ms: None,
        should_retry: None,
    }
}

/// The tests name parts by index; the attempt in flight is looked up (a part not in flight
/// gets attempt 0, which no report matches).
impl Parts {
    fn job_in_flight(&self, index: u32) -> PartJob {
        self.in_flight_jobs()
            .find(|job| job.index == index)
            .unwrap_or(PartJob {
                index,
                offset: 0,
                len: 0,
                attempt: 0,
            })
    }

    fn done_at(&mut self, index: u32, part_id: PartId) -> bool {
        let job = self.job_in_flight(index);
        self.handle_part_done(job, part_id)
    }

    fn failed_at(
        &mut self,
        index: u32,
        failure: Failure,
        now: u64,
        jitter: f64,
    ) -> Option<RetryDecision> {
        let job = self.job_in_flight(index);
        self.handle_part_failed(job, failure, now, jitter)
    }

    fn sent_at(&mut self, index: u32, bytes: u64) {
        let job = self.job_in_flight(index);
        self.handle_bytes_sent(job, bytes, NOW);
    }

    fn plan(&self) -> &PartPlan {
        &self.plan
    }

    fn part_ids(&self) -> Vec<Option<PartId>> {
        self.snapshot().part_ids
    }

    fn missing_parts(&self) -> Vec<u32> {
        (0..)
            .zip(self.part_ids())
            .filter(|(_, part_id)| part_id.is_none())
            .map(|(index, _)| index)
            .collect()
    }
}

#[test]
fn parts_are_planned_with_exact_offsets_and_a_short_last_part() {
    let plan = PartPlan::new(10, 4, &Limits::default()).unwrap();
    assert_eq!(plan.count(), 3);
    assert_eq!(
        plan.parts().collect::<Vec<_>>(),
        [job(0, 0, 4, 1), job(1, 4, 4, 1), job(2, 8, 2, 1)]
    );
    assert_eq!(plan.part(3), None);
    let even = PartPlan::new(12, 4, &Limits::default()).unwrap();
    assert_eq!(even.parts().last(), Some(job(2, 8, 4, 1)));
    let big = PartPlan::new(8 * 1024 * MIB, 64 * MIB, &Limits::default()).unwrap();
    assert_eq!(big.count(), 128);
    assert_eq!(big.part(127), Some(job(127, 127 * 64 * MIB, 64 * MIB, 1)));
}

#[test]
fn an_empty_file_is_one_empty_part() {
    let plan = PartPlan::new(0, 4, &Limits::default()).unwrap();
    assert_eq!(plan.parts().collect::<Vec<_>>(), [job(0, 0, 0, 1)]);
    let mut session = started(0, 4);
    assert_eq!(session.next_job(NOW, CutHint::NONE), Some(job(0, 0, 0, 1)));
    session.done_at(0, id(0));
    assert_eq!(session.complete_request(None).unwrap().part_ids, [id(0)]);
    assert_eq!(
        events(&mut session),
        [ProgressEvent::PartDone {
            part: 0,
            parts_done: 1,
            parts_total: 1
        }]
    );
}

#[test]
fn plans_beyond_the_limits_are_refused() {
    let limits = Limits::default();
    assert_eq!(PartPlan::new(10, 0, &limits), Err(PlanError::ZeroPartSize));
    assert_eq!(
        PartPlan::new(10, 64 * MIB + 1, &limits),
        Err(PlanError::PartTooLarge {
            part_size: 64 * MIB + 1,
            max: 64 * MIB
        })
    );
    let too_big = PartPlan::new(8 * 1024 * MIB + 1, 64 * MIB, &limits).unwrap_err();
    assert_eq!(
        too_big.to_string(),
        "file size 8589934593 is over the upload limit of 8589934592 bytes"
    );
    let tiny_parts = PartPlan::new(8 * 1024 * MIB, 1, &limits);
    assert_eq!(
        tiny_parts,
        Err(PlanError::TooManyParts {
            count: 8 * 1024 * MIB,
            max: 10_000,
            smallest_part_size: 858_994,
        })
    );
}

#[test]
fn a_plan_over_the_part_count_limit_names_the_smallest_part_size_that_fits() {
    let limits = Limits::default();
    // `uploads put` of a 3.7 MiB file in parts of 100 bytes: 38,798 parts.
    let file_size = 3_879_731;
    let refused = PartPlan::new(file_size, 100, &limits).unwrap_err();
    assert_eq!(
        refused,
        PlanError::TooManyParts {
            count: 38_798,
            max: 10_000,
            smallest_part_size: 388,
        }
    );
    assert_eq!(
        refused.to_string(),
        "the file would need 38798 parts, over the limit of 10000: use parts of at least 388 bytes"
    );
    let fits = PartPlan::new(file_size, 388, &limits).unwrap();
    assert_eq!(fits.count(), 10_000);
    assert!(PartPlan::new(file_size, 387, &limits).is_err());
    let fewer = limits.with_max_parts_per_upload(3);
    assert!(PartPlan::new(12, 4, &fewer).is_ok());
    assert!(PartPlan::new(13, 4, &fewer).is_err());
}

#[test]
fn a_part_in_flight_is_never_handed_out_again() {
    let mut session = started(8, 4);
    assert_eq!(session.next_job(NOW, CutHint::NONE), Some(job(0, 0, 4, 1)));
    assert_eq!(session.next_job(NOW, CutHint::NONE), Some(job(1, 4, 4, 1)));
    assert_eq!(session.next_job(NOW + 60_000, CutHint::NONE), None);
    let decision = session.failed_at(0, Failure::Timeout, NOW, 0.0);
    assert_eq!(
        decision,
        Some(RetryDecision::RetryAt {
            at_unix_ms: NOW + 500,
            delay_ms: 500
        })
    );
    assert_eq!(session.next_job(NOW + 499, CutHint::NONE), None);
    assert_eq!(
        session.next_job(NOW + 500, CutHint::NONE),
        Some(job(0, 0, 4, 2))
    );
    assert_eq!(session.next_job(NOW + 60_000, CutHint::NONE), None);
    assert_eq!(session.next_wakeup(), None);
    assert!(!session.all_done());
}

#[test]
fn part_ids_come_out_in_file_order() {
    let mut session = started(40, 4);
    let jobs: Vec<PartJob> = std::iter::from_fn(|| session.next_job(NOW, CutHint::NONE)).collect();
    assert_eq!(jobs.len(), 10);
    for index in [7, 3, 9, 0, 1, 8, 2, 6, 5] {
        session.done_at(index, id(index));
    }
    assert_eq!(session.complete_request(None), None);
    assert_eq!(session.missing_parts(), [4]);
    session.done_at(4, id(4));
    let complete = session
        .complete_request(Some("d41d8cd98f00b204e9800998ecf8427e".to_owned()))
        .unwrap();
    assert_eq!(complete.part_ids, (0..10).map(id).collect::<Vec<_>>());
    assert_eq!(
        serde_json::to_string(&complete).unwrap(),
        r#"{"part_ids":["part_0","part_1","part_2","part_3","part_4","part_5","part_6","part_7","part_8","part_9"],"md5":"d41d8cd98f00b204e9800998ecf8427e"}"#
    );
    assert!(session.all_done());
}

#[test]
fn retries_wait_for_next_wakeup_earliest_first() {
    let mut session = started(12, 4);
    let _ = [
        session.next_job(NOW, CutHint::NONE),
        session.next_job(NOW, CutHint::NONE),
        session.next_job(NOW, CutHint::NONE),
    ];
    let slow = Failure::Status {
        status: 429,
        retry_after_ms: Some(3_000),
        should_retry: None,
    };
    assert!(session.failed_at(0, slow, NOW, 0.0).is_some());
    assert!(
        session
            .failed_at(2, Failure::Connection, NOW + 100, 0.0)
            .is_some()
    );
    assert_eq!(session.next_wakeup(), Some(NOW + 600));
    assert_eq!(session.next_job(NOW + 599, CutHint::NONE), None);
    assert_eq!(
        session.next_job(NOW + 600, CutHint::NONE),
        Some(job(2, 8, 4, 2))
    );
    assert_eq!(session.next_wakeup(), Some(NOW + 3_000));
    assert_eq!(session.next_job(NOW + 2_999, CutHint::NONE), None);
    assert_eq!(
        session.next_job(NOW + 3_000, CutHint::NONE),
        Some(job(0, 0, 4, 2))
    );
    assert_eq!(session.next_wakeup(), None);
    assert_eq!(session.progress().retries, 2);
}

#[test]
fn a_due_retry_goes_before_parts_never_sent() {
    let mut session = started(12, 4);
    let _ = session.next_job(NOW, CutHint::NONE);
    let _ = session.failed_at(0, Failure::Timeout, NOW, 0.0);
    assert_eq!(
        session.next_job(NOW + 500, CutHint::NONE),
        Some(job(0, 0, 4, 2))
    );
    assert_eq!(
        session.next_job(NOW + 500, CutHint::NONE),
        Some(job(1, 4, 4, 1))
    );
}

#[test]
fn giving_up_puts_the_part_back_and_ignores_late_answers() {
    let mut session = started(12, 4);
    let _ = [
        session.next_job(NOW, CutHint::NONE),
        session.next_job(NOW, CutHint::NONE),
    ];
    let _ = session.failed_at(0, Failure::Timeout, NOW, 0.0);
    let bad_request = Failure::Status {
        status: 400,
        retry_after_ms: None,
        should_retry: None,
    };
    let decision = session.failed_at(1, bad_request, NOW, 0.0);
    let reason = GiveUpReason::NotRetryable { status: 400 };
    assert_eq!(decision, Some(RetryDecision::GiveUp(reason)));
    assert_eq!(session.in_flight(), 0);
    assert_eq!(session.missing_parts(), [0, 1, 2]);
    let _ = events(&mut session);

    // Late and duplicate answers of the attempt change nothing and panic nowhere.
    let gave_up = job(1, 4, 4, 1);
    assert!(!session.handle_part_done(gave_up, id(1)));
    session.handle_bytes_sent(gave_up, 4, NOW);
    assert_eq!(
        session.handle_part_failed(gave_up, Failure::Timeout, NOW, 0.0),
        None
    );
    assert_eq!(session.progress().bytes_sent, 0);
    assert_eq!(session.poll_event(), None);
}

#[test]
fn a_late_answer_of_an_earlier_attempt_is_not_taken_for_the_retry() {
    let mut session = started(4, 4);
    let first = session.next_job(NOW, CutHint::NONE).unwrap();
    let _ = session.handle_part_failed(first, Failure::Timeout, NOW, 0.0);
    let second = session.next_job(NOW + 500, CutHint::NONE).unwrap();
    assert_eq!(second.attempt, 2);
    // The first attempt was abandoned (it stalled, say) and still answers.
    session.handle_bytes_sent(first, 4, NOW + 600);
    assert!(!session.handle_part_done(first, id(0)));
    assert_eq!(session.in_flight_jobs().collect::<Vec<_>>(), [second]);
    assert!(session.handle_part_done(second, id(1)));
    assert_eq!(session.part_ids(), [Some(id(1))]);
}

#[test]
fn a_part_stalls_when_it_has_not_moved_since_a_time() {
    let mut session = started(8, 4);
    let first = session.next_job(NOW, CutHint::NONE).unwrap();
    let second = session.next_job(NOW + 10, CutHint::NONE).unwrap();
    assert_eq!(session.least_recently_active(), Some(NOW));
    assert_eq!(session.stalled(NOW - 1), []);
    assert_eq!(session.stalled(NOW), [first]);
    session.handle_bytes_sent(first, 1, NOW + 20);
    assert_eq!(session.least_recently_active(), Some(NOW + 10));
    assert_eq!(session.stalled(NOW + 15), [second]);
    assert_eq!(session.stalled(NOW + 20), [first, second]);
}

#[test]
fn answers_for_parts_not_in_flight_are_ignored() {
    let mut session = started(12, 4);
    let _ = session.next_job(NOW, CutHint::NONE);
    session.done_at(0, id(0));
    session.done_at(0, PartId::new("part_duplicate"));
    session.done_at(1, id(1)); // never handed out
    session.done_at(99, id(99)); // no such part
    session.sent_at(99, 1);
    assert_eq!(session.failed_at(0, Failure::Timeout, NOW, 0.0), None);
    assert_eq!(session.failed_at(7, Failure::Timeout, NOW, 0.0), None);
    assert_eq!(session.part_ids(), [Some(id(0)), None, None]);
    assert_eq!(session.missing_parts(), [1, 2]);
    assert_eq!(session.progress().bytes_sent, 4);
}

#[test]
fn progress_winds_back_on_a_retry() {
    let mut session = started(10, 4);
    let _ = [
        session.next_job(NOW, CutHint::NONE),
        session.next_job(NOW, CutHint::NONE),
    ];
    session.sent_at(0, 3);
    session.sent_at(1, 4);
    session.sent_at(1, 1); // over-reported: the part holds 4 bytes
    assert_eq!(session.progress().bytes_sent, 7);
    let _ = session.failed_at(0, unavailable(), NOW, 0.5);
    assert_eq!(
        session.progress(),
        Progress {
            bytes_sent: 4,
            bytes_delivered: 4,
            bytes_total: 10,
            parts_done: 0,
            parts_total: 3,
            retries: 1
        }
    );
    session.done_at(1, id(1));
    assert_eq!(
        events(&mut session),
        [
            ProgressEvent::BytesSent {
                part: 0,
                bytes: 3,
                total_sent: 3,
                total_delivered: 3,
                total: 10
            },
            ProgressEvent::BytesSent {
                part: 1,
                bytes: 4,
                total_sent: 7,
                total_delivered: 7,
                total: 10
            },
            ProgressEvent::PartRetry {
                part: 0,
                attempt: 2,
                delay_ms: 437,
                bytes_wound_back: 3,
                total_sent: 4,
                total_delivered: 4,
                failure: unavailable()
            },
            ProgressEvent::PartDone {
                part: 1,
                parts_done: 1,
                parts_total: 3
            },
        ]
    );
}

#[test]
fn no_retry_past_the_deadline_or_the_upload_expiry() {
    let plan = PartPlan::new(4, 4, &Limits::default()).unwrap();
    let mut session = Parts::new(upload(4), plan, RetryPolicy::default(), Some(NOW + 400));
    let _ = session.next_job(NOW, CutHint::NONE);
    let decision = session.failed_at(0, Failure::Timeout, NOW, 0.0);
    assert_eq!(
        decision,
        Some(RetryDecision::GiveUp(GiveUpReason::Deadline {
            retry_at_unix_ms: NOW + 500,
            deadline_unix_ms: NOW + 400
        }))
    );

    let mut session = started(4, 4);
    let _ = session.next_job(NOW, CutHint::NONE);
    let just_before_expiry = EXPIRES_AT * 1000 - 100;
    let decision = session.failed_at(0, Failure::Timeout, just_before_expiry, 0.0);
    assert!(matches!(
        decision,
        Some(RetryDecision::GiveUp(GiveUpReason::Deadline { .. }))
    ));
}

#[test]
fn attempts_run_out_per_part() {
    let policy = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let plan = PartPlan::new(4, 4, &Limits::default()).unwrap();
    let mut session = Parts::new(upload(4), plan, policy, None);
    let _ = session.next_job(NOW, CutHint::NONE);
    let _ = session.failed_at(0, Failure::Connection, NOW, 0.0);
    assert_eq!(
        session.next_job(NOW + 500, CutHint::NONE),
        Some(job(0, 0, 4, 2))
    );
    assert_eq!(
        session.failed_at(0, Failure::Connection, NOW + 600, 0.0),
        Some(RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted {
            attempts: 2
        }))
    );
}

#[test]
fn the_snapshot_json_is_stable() {
    let mut session = started(10, 4).with_source("/data/train.jsonl:10:1719184900");
    let _ = [
        session.next_job(NOW, CutHint::NONE),
        session.next_job(NOW, CutHint::NONE),
    ];
    session.done_at(1, id(1));
    let json = session.snapshot().to_json();
    assert_eq!(
        json,
        r#"{"version":1,"upload":{"id":"upload_abc123","object":"upload","bytes":10,"created_at":1719184911,"filename":"train.jsonl","purpose":"fine-tune","status":"pending","expires_at":1719188511},"file_size":10,"part_size":4,"part_ids":[null,"part_1",null],"source":"/data/train.jsonl:10:1719184900"}"#
    );
    let mut resumed = Parts::resume(
        SessionSnapshot::from_json(&json).unwrap(),
        &Limits::default(),
        RetryPolicy::default(),
        NOW + 10_000,
        None,
    )
    .unwrap();
    assert_eq!(
        resumed.snapshot().source.as_deref(),
        Some("/data/train.jsonl:10:1719184900")
    );
    assert_eq!(resumed.progress().bytes_sent, 4);
    // Part 0 was in flight when the snapshot was taken: it starts over.
    assert_eq!(resumed.next_job(NOW, CutHint::NONE), Some(job(0, 0, 4, 1)));
    assert_eq!(resumed.next_job(NOW, CutHint::NONE), Some(job(2, 8, 2, 1)));
    assert_eq!(resumed.next_job(NOW, CutHint::NONE), None);
}

#[test]
fn a_snapshot_with_every_part_resumes_ready_to_complete() {
    let mut session = started(4, 4);
    let _ = session.next_job(NOW, CutHint::NONE);
    session.done_at(0, id(0));
    let resumed = Parts::resume(
        session.snapshot(),
        &Limits::default(),
        RetryPolicy::default(),
        NOW,
        None,
    )
    .unwrap();
    assert!(resumed.all_done());
    assert_eq!(resumed.complete_request(None).unwrap().part_ids, [id(0)]);
}

fn resume_error(snapshot: SessionSnapshot, now: u64) -> ResumeError {
    Parts::resume(
        snapshot,
        &Limits::default(),
        RetryPolicy::default(),
        now,
        None,
    )
    .unwrap_err()
}

#[test]
fn stale_snapshots_are_refused() {
    let snapshot = started(10, 4).snapshot();
    assert_eq!(
        resume_error(snapshot.clone(), EXPIRES_AT * 1000),
        ResumeError::Expired {
            upload_id: UploadId::new("upload_abc123"),
            expires_at: EXPIRES_AT
        }
    );
    let mut cancelled = snapshot.clone();
    cancelled.upload.status = UploadStatus::Cancelled;
    assert_eq!(
        resume_error(cancelled, NOW).to_string(),
        "upload upload_abc123 is cancelled, not pending"
    );
    let mut future = snapshot;
    future.version = 3;
    assert_eq!(
        resume_error(future, NOW),
        ResumeError::UnsupportedVersion {
            found: 3,
            supported: 2
        }
    );
}

#[test]
fn inconsistent_snapshots_are_refused() {
    let snapshot = started(10, 4).snapshot();
    let mut short = snapshot.clone();
    short.part_ids.pop();
    assert_eq!(
        resume_error(short, NOW),
        ResumeError::Inconsistent(Inconsistency::PartCountMismatch {
            expected: 3,
            found: 2
        })
    );
    let mut resized = snapshot.clone();
    resized.file_size = 11;
    assert_eq!(
        resume_error(resized, NOW),
        ResumeError::Inconsistent(Inconsistency::SizeMismatch {
            file_size: 11,
            upload_bytes: 10
        })
    );
    let mut twice = snapshot.clone();
    twice.part_ids = vec![Some(id(5)), None, Some(id(5))];
    assert_eq!(
        resume_error(twice, NOW),
        ResumeError::Inconsistent(Inconsistency::DuplicatePartId { part_id: id(5) })
    );
    let mut huge_parts = snapshot;
    huge_parts.part_size = 65 * MIB;
    assert_eq!(
        resume_error(huge_parts, NOW),
        ResumeError::InvalidPlan(PlanError::PartTooLarge {
            part_size: 65 * MIB,
            max: 64 * MIB
        })
    );
}

#[test]
fn snapshot_json_is_checked_for_version_first() {
    assert_eq!(
        SessionSnapshot::from_json(r#"{"version":3,"something":"new"}"#),
        Err(ResumeError::UnsupportedVersion {
            found: 3,
            supported: 2
        })
    );
    assert!(matches!(
        SessionSnapshot::from_json(r#"{"version":1}"#),
        Err(ResumeError::Malformed { .. })
    ));
    assert!(matches!(
        SessionSnapshot::from_json("not json"),
        Err(ResumeError::Malformed { .. })
    ));
}

/// One thing that can happen to a session, in a random interleaving.
#[derive(Debug, Clone)]
enum Step {
    /// A worker asks for a job.
    Take,
    /// The in-flight part at position `pick` (modulo their number) reports.
    Report { pick: usize, outcome: Outcome },
    /// Time passes.
    Advance(u64),
}

#[derive(Debug, Clone)]
enum Outcome {
    Sent(u64),
    Done,
    Failed(Failure, f64),
}

fn failure_strategy() -> impl Strategy<Value = Failure> {
    prop_oneof![
        8 => Just(Failure::Connection),
        8 => Just(Failure::Timeout),
        8 => proptest::option::of(0_u64..50).prop_map(|retry_after_ms| Failure::Status {
            status: 503,
            retry_after_ms,
            should_retry: None,
        }),
        4 => Just(Failure::Status { status: 429, retry_after_ms: None, should_retry: None }),
        1 => Just(Failure::Status { status: 400, retry_after_ms: None, should_retry: None }),
        1 => Just(Failure::Status { status: 500, retry_after_ms: None, should_retry: Some(false) }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        3 => (0_u64..6).prop_map(Outcome::Sent),
        4 => Just(Outcome::Done),
        2 => (failure_strategy(), 0.0_f64..1.0).prop_map(|(f, j)| Outcome::Failed(f, j)),
    ];
    prop_oneof![
        3 => Just(Step::Take),
        4 => (any::<usize>(), outcome).prop_map(|(pick, outcome)| Step::Report { pick, outcome }),
        1 => (0_u64..200).prop_map(Step::Advance),
    ]
}

/// Drives a session and keeps, beside it, the test's own account of what happened.
struct Driver {
    session: Parts,
    now: u64,
    in_flight: BTreeMap<u32, PartJob>,
    bytes_in_flight: BTreeMap<u32, u64>,
    reported_ids: BTreeMap<u32, PartId>,
    failures: BTreeMap<u32, u32>,
    refused: BTreeSet<u32>,
    serial: u32,
    /// The part that gave up and its attempts: the uploader stops using the parts then.
    gave_up: Option<(u32, u32)>,
}

impl Driver {
    fn new(file_size: u64, part_size: u64, max_attempts: u32) -> Self {
        let policy = RetryPolicy {
            max_attempts,
            initial_backoff_ms: 10,
            max_backoff_ms: 80,
            max_retry_after_ms: 100,
        };
        let plan = PartPlan::new(file_size, part_size, &Limits::default()).unwrap();
        Self {
            session: Parts::new(upload(file_size), plan, policy, None),
            now: NOW,
            in_flight: BTreeMap::new(),
            bytes_in_flight: BTreeMap::new(),
            reported_ids: BTreeMap::new(),
            failures: BTreeMap::new(),
            refused: BTreeSet::new(),
            serial: 0,
            gave_up: None,
        }
    }

    fn take(&mut self) -> Option<PartJob> {
        if self.gave_up.is_some() {
            return None;
        }
        let job = self.session.next_job(self.now, CutHint::NONE)?;
        assert!(!self.in_flight.contains_key(&job.index), "{job:?} twice");
        assert!(
            !self.reported_ids.contains_key(&job.index),
            "{job:?} after done"
        );
        let planned = self.session.plan().part(job.index).unwrap();
        let attempt = self.failures.get(&job.index).copied().unwrap_or(0) + 1;
        assert_eq!(job, PartJob { attempt, ..planned });
        self.in_flight.insert(job.index, job);
        Some(job)
    }

    fn report(&mut self, index: u32, outcome: Outcome) {
        if self.gave_up.is_some() {
            return;
        }
        match outcome {
            Outcome::Sent(bytes) => {
                self.session.sent_at(index, bytes);
                let len = self.in_flight[&index].len;
                let sent = self.bytes_in_flight.entry(index).or_default();
                *sent = (*sent + bytes).min(len);
                return;
            }
            Outcome::Done => {
                self.in_flight.remove(&index);
                self.bytes_in_flight.remove(&index);
                self.serial += 1;
                let part_id = PartId::new(format!("part_{index}_{}", self.serial));
                assert!(self.session.done_at(index, part_id.clone()));
                self.reported_ids.insert(index, part_id);
            }
            Outcome::Failed(failure, jitter) => {
                self.in_flight.remove(&index);
                let wound_back = self.bytes_in_flight.remove(&index).unwrap_or(0);
                let decision = self
                    .session
                    .failed_at(index, failure.clone(), self.now, jitter);
                *self.failures.entry(index).or_default() += 1;
                if !failure.is_retryable() {
                    self.refused.insert(index);
                }
                match decision.unwrap() {
                    RetryDecision::RetryAt { at_unix_ms, .. } => {
                        assert!(self.session.next_wakeup().unwrap() <= at_unix_ms);
                        let retry = events(&mut self.session).pop();
                        let Some(ProgressEvent::PartRetry {
                            bytes_wound_back, ..
                        }) = retry
                        else {
                            panic!("expected a retry event, got {retry:?}")
                        };
                        assert_eq!(bytes_wound_back, wound_back);
                    }
                    RetryDecision::GiveUp(_) => {
                        self.gave_up = Some((index, self.failures[&index]));
                    }
                }
            }
        }
        self.check_progress();
    }

    fn check_progress(&self) {
        if self.gave_up.is_some() {
            return;
        }
        let plan = self.session.plan();
        let done: u64 = self
            .reported_ids
            .keys()
            .map(|&index| plan.part(index).unwrap().len)
            .sum();
        let in_flight: u64 = self.bytes_in_flight.values().sum();
        let progress = self.session.progress();
        assert_eq!(progress.bytes_sent, done + in_flight);
        assert!(progress.bytes_sent <= progress.bytes_total);
        assert_eq!(progress.parts_done as usize, self.reported_ids.len());
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Take => {
                let _ = self.take();
            }
            Step::Report { pick, outcome } => {
                if self.in_flight.is_empty() {
                    return;
                }
                let index = *self
                    .in_flight
                    .keys()
                    .nth(pick % self.in_flight.len())
                    .unwrap();
                self.report(index, outcome);
            }
            Step::Advance(ms) => self.now += ms,
        }
    }

    /// Runs to the end with every remaining part succeeding.
    fn finish(&mut self) {
        while self.gave_up.is_none() && !self.session.all_done() {
            while self.take().is_some() {}
            if let Some(&index) = self.in_flight.keys().next() {
                self.report(index, Outcome::Done);
            } else {
                let wakeup = self
                    .session
                    .next_wakeup()
                    .expect("stuck: nothing to wait for");
                self.now = self.now.max(wakeup);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_interleaving_completes_in_order_or_fails_for_a_reason(
        file_size in 0_u64..60,
        part_size in 1_u64..9,
        max_attempts in 1_u32..8,
        steps in proptest::collection::vec(step_strategy(), 0..300),
    ) {
        let mut driver = Driver::new(file_size, part_size, max_attempts);
        for step in steps {
            driver.apply(step);
        }
        driver.finish();
        match driver.gave_up {
            None => {
                let count = driver.session.plan().count();
                let expected: Vec<PartId> =
                    (0..count).map(|index| driver.reported_ids[&index].clone()).collect();
                let complete = driver.session.complete_request(None).unwrap();
                prop_assert_eq!(complete.part_ids, expected);
                prop_assert!(driver.refused.is_empty());
                prop_assert!(driver.failures.values().all(|&failures| failures < max_attempts));
                prop_assert_eq!(driver.session.progress().bytes_sent, file_size);
            }
            Some((part, attempts)) => {
                prop_assert_eq!(attempts, driver.failures[&part]);
                prop_assert!(
                    driver.refused.contains(&part) || attempts >= max_attempts,
                    "part {} gave up without cause", part
                );
                prop_assert_eq!(driver.session.complete_request(None), None);
            }
        }
    }

    #[test]
    fn a_snapshot_at_any_point_resumes_to_the_same_upload(
        file_size in 0_u64..60,
        part_size in 1_u64..9,
        steps in proptest::collection::vec(step_strategy(), 0..200),
    ) {
        let mut driver = Driver::new(file_size, part_size, 4);
        for step in steps {
            driver.apply(step);
        }
        let original = &driver.session;
        let json = original.clone().with_source("fingerprint").snapshot().to_json();
        let mut resumed = Parts::resume(
            SessionSnapshot::from_json(&json).unwrap(),
            &Limits::default(),
            RetryPolicy::default(),
            driver.now,
            None,
        ).unwrap();
        prop_assert_eq!(resumed.upload(), original.upload());
        prop_assert_eq!(resumed.plan(), original.plan());
        let source = resumed.snapshot().source;
        prop_assert_eq!(source.as_deref(), Some("fingerprint"));
        prop_assert_eq!(resumed.part_ids(), original.part_ids());
        let missing = original.missing_parts();
        prop_assert_eq!(resumed.missing_parts(), missing.clone());
        prop_assert_eq!(
            resumed.progress().parts_done as usize,
            original.part_ids().iter().flatten().count()
        );
        // In-flight and waiting parts are pending again: each missing part exactly once.
        let handed_out: Vec<PartJob> = std::iter::from_fn(|| resumed.next_job(driver.now, CutHint::NONE)).collect();
        prop_assert_eq!(
            handed_out,
            missing.iter().map(|&index| original.plan().part(index).unwrap()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_part_answered_without_progress_reports_counts_its_bytes_then() {
    let mut session = started(6, 4);
    let first = session.next_job(NOW, CutHint::NONE).unwrap();
    let _ = events(&mut session);
    assert!(session.handle_part_done(first, id(0)));
    assert_eq!(
        events(&mut session),
        [
            ProgressEvent::BytesSent {
                part: 0,
                bytes: 4,
                total_sent: 4,
                total_delivered: 4,
                total: 6
            },
            ProgressEvent::PartDone {
                part: 0,
                parts_done: 1,
                parts_total: 2
            },
        ]
    );
}

#[test]
fn an_abandoned_part_is_out_of_flight_and_handed_out_again() {
    let mut session = started(8, 4);
    let first = session.next_job(NOW, CutHint::NONE).unwrap();
    let second = session.next_job(NOW, CutHint::NONE).unwrap();
    session.handle_bytes_sent(first, 3, NOW);
    session.abandon(first);
    assert_eq!(session.in_flight(), 1);
    assert_eq!(session.in_flight_jobs().collect::<Vec<_>>(), [second]);
    assert_eq!(session.progress().bytes_sent, 0, "its bytes stop counting");
    assert_eq!(session.next_job(NOW, CutHint::NONE), Some(job(0, 0, 4, 1)));
    session.abandon(PartJob {
        attempt: 9,
        ..first
    }); // not the attempt in flight: nothing changes
    assert_eq!(session.in_flight(), 2);
}

#[test]
fn delivered_bytes_are_the_sent_ones_less_what_the_sockets_hold_never_below_the_stored_parts() {
    let mut session = started(10, 4);
    let first = session.next_job(NOW, CutHint::NONE).unwrap();
    let second = session.next_job(NOW, CutHint::NONE).unwrap();
    session.handle_bytes_sent(first, 4, NOW);
    session.handle_bytes_sent(second, 3, NOW);
    let _ = events(&mut session);
    // Nothing reported about the sockets yet: all that was handed over counts.
    assert_eq!(session.progress().bytes_delivered, 7);
    session.handle_unacknowledged(5);
    assert_eq!(session.progress().bytes_delivered, 2);
    assert_eq!(
        events(&mut session),
        [ProgressEvent::Delivered {
            total_delivered: 2,
            total: 10
        }]
    );
    // The same sample again moves nothing and says nothing.
    session.handle_unacknowledged(5);
    assert_eq!(events(&mut session), []);
    // A stored part is delivered whatever the sockets still hold (a request's tail, or
    // bytes of other connections), and says so.
    assert!(session.handle_part_done(first, id(0)));
    assert_eq!(
        events(&mut session)[0],
        ProgressEvent::Delivered {
            total_delivered: 4,
            total: 10
        }
    );
    session.handle_unacknowledged(9);
    assert_eq!(session.progress().bytes_delivered, 4);
    // The link carried 7 bytes, 9 are still in sockets: nothing measured yet.
    assert_eq!(session.bytes_carried(), 0);
    session.handle_unacknowledged(1);
    assert_eq!(session.progress().bytes_delivered, 6);
    assert_eq!(session.bytes_carried(), 6);
    // A failed attempt's bytes leave the progress, not what the link carried.
    let _ = session.failed_at(1, unavailable(), NOW, 0.5);
    assert_eq!(session.progress().bytes_delivered, 4);
    assert_eq!(session.bytes_carried(), 6);
}

/// An adaptive plan for `file_size` bytes, its parts cut as they are asked for.
fn adaptive(file_size: u64) -> Parts {
    let plan = PartPlan::adaptive(file_size, &Limits::default()).unwrap();
    Parts::new(upload(file_size), plan, RetryPolicy::default(), None)
}

fn hint(level: u32, throttled: bool) -> CutHint {
    CutHint {
        level,
        throttled,
        min_len: 0,
    }
}

#[test]
fn an_adaptive_plan_cuts_parts_as_asked_shrinking_as_the_file_runs_out() {
    let mut session = adaptive(1024 * MIB);
    // 16 in flight, two parts each of what is left: 32 MiB.
    let first = session.next_job(NOW, hint(16, false)).unwrap();
    assert_eq!((first.offset, first.len), (0, 32 * MIB));
    // More in flight: smaller parts, back to back.
    let second = session.next_job(NOW, hint(64, false)).unwrap();
    assert_eq!((second.offset, second.len), (32 * MIB, 8 * MIB));
    // A throttling service gets larger parts (fewer requests for the same bytes): one
    // round of the 1024 MiB left for 64 parts in flight, not two.
    let third = session.next_job(NOW, hint(64, true)).unwrap();
    assert_eq!((third.offset, third.len), (40 * MIB, 16 * MIB));
    // Never under what the path makes worth a request.
    let mut slow_path = hint(32, false);
    slow_path.min_len = 20 * MIB;
    let fourth = session.next_job(NOW, slow_path).unwrap();
    assert_eq!((fourth.offset, fourth.len), (56 * MIB, 20 * MIB));
    // Until the end, whatever the hint, parts shrink to the smallest cut and the last
    // takes the rest.
    let mut lens = Vec::new();
    while let Some(job) = session.next_job(NOW, hint(8, false)) {
        lens.push(job.len);
        assert!(session.handle_part_done(job, id(job.index)));
    }
    assert!(lens.windows(2).all(|pair| pair[0] >= pair[1]), "{lens:?}");
    assert_eq!(lens.last(), Some(&MIN_CUT));
    let early = [first, second, third, fourth];
    assert_eq!(
        early.iter().map(|job| job.len).sum::<u64>() + lens.iter().sum::<u64>(),
        1024 * MIB
    );
    // Four parts are in flight still: not done until they are.
    assert!(!session.all_done());
    for job in early {
        assert!(session.handle_part_done(job, id(job.index)));
    }
    assert!(session.all_done());
    let request = session.complete_request(None).unwrap();
    assert_eq!(request.part_ids.len(), early.len() + lens.len());
    assert_eq!(
        session.progress().parts_total,
        session.progress().parts_done
    );
}

#[test]
fn an_adaptive_plan_never_cuts_more_parts_than_the_service_takes() {
    let limits = Limits {
        max_parts_per_upload: 5,
        ..Limits::default()
    };
    let plan = PartPlan::adaptive(100 * MIB, &limits).unwrap();
    let mut session = Parts::new(upload(100 * MIB), plan, RetryPolicy::default(), None);
    let mut count = 0;
    while let Some(job) = session.next_job(NOW, hint(32, false)) {
        count += 1;
        assert!(session.handle_part_done(job, id(job.index)));
    }
    assert!(count <= 5, "{count} parts");
    assert!(session.all_done());
}

#[test]
fn an_empty_file_is_one_empty_part_when_cut_as_it_goes() {
    let mut session = adaptive(0);
    let job = session.next_job(NOW, hint(8, false)).unwrap();
    assert_eq!((job.offset, job.len), (0, 0));
    assert_eq!(session.next_job(NOW, hint(8, false)), None);
    assert!(session.handle_part_done(job, id(0)));
    assert!(session.all_done());
}

#[test]
fn a_snapshot_of_parts_cut_as_they_go_resumes_the_cut_ones_and_cuts_the_rest() {
    let mut session = adaptive(100 * MIB);
    let first = session.next_job(NOW, hint(2, false)).unwrap();
    let second = session.next_job(NOW, hint(2, false)).unwrap();
    assert!(session.handle_part_done(second, id(1)));
    let snapshot = session.snapshot();
    assert_eq!(snapshot.version, SNAPSHOT_VERSION);
    assert_eq!(snapshot.part_lens, Some(vec![first.len, second.len]));
    assert_eq!(snapshot.stored_bytes(), second.len);
    let json = snapshot.to_json();
    let mut resumed = Parts::resume(
        SessionSnapshot::from_json(&json).unwrap(),
        &Limits::default(),
        RetryPolicy::default(),
        NOW,
        None,
    )
    .unwrap();
    // The part cut and not stored goes again, as it was cut; then the rest is cut.
    let again = resumed.next_job(NOW, hint(2, false)).unwrap();
    assert_eq!((again.offset, again.len), (first.offset, first.len));
    let next = resumed.next_job(NOW, hint(2, false)).unwrap();
    assert_eq!(next.offset, first.len + second.len);
    // A snapshot whose parts hold more than the file is refused.
    let mut over = snapshot.clone();
    over.part_lens = Some(vec![first.len, 64 * MIB, 64 * MIB]);
    over.part_ids.push(None);
    assert_eq!(
        resume_error(over, NOW),
        ResumeError::Inconsistent(Inconsistency::PartsOverFile {
            cut: first.len + 128 * MIB,
            file_size: 100 * MIB
        })
    );
    // And one part over the service's part limit.
    let mut too_large = snapshot;
    too_large.part_lens = Some(vec![first.len, 65 * MIB]);
    assert!(matches!(
        resume_error(too_large, NOW),
        ResumeError::InvalidPlan(PlanError::PartTooLarge { .. })
    ));
}

#[test]
fn the_last_round_shares_what_is_left_evenly_so_connections_finish_together() {
    let mut session = adaptive(64 * MIB);
    // Two in flight: the first takes half of what is left over two rounds.
    let first = session.next_job(NOW, hint(2, false)).unwrap();
    assert_eq!(first.len, 16 * MIB);
    // The first has 16 MiB to send still and 48 MiB are uncut: the second part is at most
    // an even share of the 64 MiB left in all (32 MiB), and two rounds of 48 MiB is less.
    let second = session.next_job(NOW, hint(2, false)).unwrap();
    assert_eq!(second.len, 12 * MIB);
    // The first part went out in full; the second has 12 MiB to go and 36 MiB are uncut:
    // a connection free now takes no more than half of 48 MiB, and two rounds of 36 give
    // 9 MiB.
    session.handle_bytes_sent(first, first.len, NOW);
    assert!(session.handle_part_done(first, id(0)));
    let third = session.next_job(NOW, hint(2, false)).unwrap();
    assert_eq!(third.len, 9 * MIB);
    // A slow path asks for parts of 64 MiB at least, but 27 MiB uncut and 21 MiB in
    // flight make an even share of 24 MiB: no more, or this connection would end last.
    let mut slow_path = hint(2, false);
    slow_path.min_len = 64 * MIB;
    let fourth = session.next_job(NOW, slow_path).unwrap();
    assert_eq!(fourth.len, 24 * MIB);
    // The 3 MiB left: the even share is under the smallest cut, which takes them all.
    let last = session.next_job(NOW, slow_path).unwrap();
    assert_eq!((last.offset + last.len, last.len), (64 * MIB, 3 * MIB));
    assert_eq!(session.next_job(NOW, slow_path), None);
}

#[test]
fn an_adaptive_plan_leaves_no_sliver_for_a_request_of_its_own() {
    let plan = PartPlan::adaptive(100 * MIB, &Limits::default()).unwrap();
    let many = hint(64, false);
    // The smallest cut would leave 100 KiB: the part takes them along.
    assert_eq!(
        plan.cut_len(MIB + 100 * 1024, 0, 0, &many),
        MIB + 100 * 1024
    );
    // Half a MiB left over is worth a part of its own.
    assert_eq!(plan.cut_len(MIB + MIB / 2, 0, 0, &many), MIB);
    // Never over the part limit, even to take a sliver along.
    let throttled = hint(1, true);
    assert_eq!(
        plan.cut_len(64 * MIB + 100 * 1024, 0, 0, &throttled),
        64 * MIB
    );
}

#[test]
fn a_snapshot_listing_more_parts_than_the_service_takes_is_refused() {
    let mut session = adaptive(100 * MIB);
    for _ in 0..3 {
        let _ = session.next_job(NOW, hint(8, false)).unwrap();
    }
    let limits = Limits {
        max_parts_per_upload: 2,
        ..Limits::default()
    };
    let mut two = adaptive(100 * MIB);
    for _ in 0..2 {
        let _ = two.next_job(NOW, hint(8, false)).unwrap();
    }
    let resume = |snapshot| Parts::resume(snapshot, &limits, RetryPolicy::default(), NOW, None);
    assert!(
        resume(two.snapshot()).is_ok(),
        "as many as the service takes"
    );
    let refused = resume(session.snapshot()).unwrap_err();
    assert!(
        matches!(
            refused,
            ResumeError::InvalidPlan(PlanError::TooManyParts {
                count: 3,
                max: 2,
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn a_snapshot_of_a_file_cut_to_its_end_resumes_with_nothing_left_to_cut() {
    let mut session = adaptive(10 * MIB);
    let mut cut = Vec::new();
    while let Some(job) = session.next_job(NOW, hint(2, false)) {
        cut.push(job);
    }
    let mut resumed = Parts::resume(
        session.snapshot(),
        &Limits::default(),
        RetryPolicy::default(),
        NOW,
        None,
    )
    .unwrap();
    let again: Vec<_> = std::iter::from_fn(|| resumed.next_job(NOW, hint(2, false))).collect();
    assert_eq!(again, cut, "the same parts, and no more");
}
