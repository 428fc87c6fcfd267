use super::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::BuildError;
use crate::api::check_response_head;
use crate::limits::GIB;
use crate::limits::{Limits, MIB};
use crate::retry::{Failure, GiveUpReason, RetryPolicy};
use crate::session::{PartJob, PartPlan, PlanError, ResumeError, SessionSnapshot, UploadSession};
use crate::types::{ExpiresAfter, PartId, Purpose, UploadId};
use crate::types::{Upload, UploadStatus};
use http::{HeaderMap, StatusCode};
use proptest::prelude::*;

const NOW: u64 = 1_719_184_912_000;
const EXPIRES_AT: u64 = 1_719_188_511;

type Error = RequestError<std::io::Error>;

/// A pending Upload of `bytes` bytes, as create returns it.
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

/// A run of `parts` parts of 4 bytes, retried twice at most, 1 ms apart.
fn started(parts: u64, deadline: Option<u64>) -> UploadRun<std::io::Error> {
    let plan = PartPlan::new(parts * 4, 4, &Limits::default()).unwrap();
    let policy = RetryPolicy {
        max_attempts: 2,
        initial_backoff_ms: 1,
        max_backoff_ms: 1,
        max_retry_after_ms: 1,
    };
    UploadRun::new(UploadSession::new(
        upload(parts * 4),
        plan,
        policy,
        deadline,
    ))
}

fn send(run: &mut UploadRun<std::io::Error>, now: u64) -> PartJob {
    match run.next_step(now) {
        NextStep::Send(job) => job,
        other => panic!("expected a part to send, got {other:?}"),
    }
}

fn status(status: StatusCode) -> Error {
    let head = check_response_head(status, &HeaderMap::new()).unwrap_err();
    RequestError::Response(head.with_body(b"{}").into())
}

fn id(index: u32) -> PartId {
    PartId::new(format!("part_{index}"))
}

#[test]
fn a_run_retries_a_part_then_completes_with_the_ids_in_file_order() {
    let mut run = started(2, None);
    let first = send(&mut run, NOW);
    let second = send(&mut run, NOW);
    assert_eq!(run.next_step(NOW), NextStep::Wait(None));
    assert!(run.handle_part_result(second, Ok(id(1)), NOW, 0.0));
    let reset = RequestError::Transport(std::io::Error::other("reset"));
    assert!(!run.handle_part_result(first, Err(reset), NOW, 0.0));
    assert_eq!(run.next_step(NOW), NextStep::Wait(Some(NOW + 1)));
    let retry = send(&mut run, NOW + 1);
    assert_eq!((retry.index, retry.attempt), (0, 2));
    assert!(run.handle_part_result(retry, Ok(id(0)), NOW + 2, 0.0));
    assert_eq!(run.next_step(NOW + 2), NextStep::Stop);
    let complete = run.complete_request(Some("md5".into())).unwrap();
    assert_eq!(complete.part_ids, [id(0), id(1)]);
    assert_eq!(complete.md5.as_deref(), Some("md5"));
}

#[test]
fn a_part_that_fails_for_good_is_the_abort_cause() {
    let mut run = started(2, None);
    let job = send(&mut run, NOW);
    assert!(!run.handle_part_result(job, Err(status(StatusCode::BAD_REQUEST)), NOW, 0.0));
    assert_eq!(run.next_step(NOW), NextStep::Stop);
    let cause = run.complete_request(None).unwrap_err();
    assert!(
        matches!(
            &cause,
            AbortCause::Part { part: 0, reason: GiveUpReason::NotRetryable { status: 400 }, error }
                if error.api_error().is_some()
        ),
        "{cause:?}"
    );

    let mut run = started(1, None);
    let job = send(&mut run, NOW);
    run.handle_part_result(
        job,
        Err(RequestError::Timeout(Duration::from_secs(1))),
        NOW,
        0.0,
    );
    let retry = send(&mut run, NOW + 1);
    run.handle_part_result(
        retry,
        Err(RequestError::Timeout(Duration::from_secs(1))),
        NOW + 1,
        0.0,
    );
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Part {
            reason: GiveUpReason::AttemptsExhausted { attempts: 2 },
            ..
        })
    ));
}

#[test]
fn a_request_that_cannot_be_built_says_so_and_is_not_retried() {
    let mut run = started(1, None);
    let job = send(&mut run, NOW);
    let unbuildable = RequestError::Build(BuildError::EmptyId { param: "upload_id" });
    run.handle_part_result(job, Err(unbuildable), NOW, 0.0);
    assert_eq!(run.session().progress().retries, 0);
    let cause = run.complete_request(None).unwrap_err();
    assert!(
        matches!(
            cause,
            AbortCause::Part {
                part: 0,
                reason: GiveUpReason::CannotSend,
                error: RequestError::Build(_)
            }
        ),
        "{cause:?}"
    );
}

#[test]
fn an_unreadable_source_and_the_deadline_are_their_own_causes() {
    let mut run = started(2, None);
    let job = send(&mut run, NOW);
    let short = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    run.handle_part_result(job, Err(RequestError::Source(short)), NOW, 0.0);
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Source(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof
    ));

    // A failure once the deadline has come: the attempt was cut short by it.
    let mut run = started(2, Some(NOW + 10));
    let job = send(&mut run, NOW);
    run.handle_part_result(
        job,
        Err(RequestError::Timeout(Duration::from_millis(10))),
        NOW + 10,
        0.0,
    );
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Deadline)
    ));

    // No worker starts a part once it has come.
    let mut run = started(2, Some(NOW + 10));
    assert_eq!(run.next_step(NOW + 10), NextStep::Stop);
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Deadline)
    ));
}

#[test]
fn the_first_cause_wins_and_parts_stored_after_it_still_count() {
    let mut run = started(2, None);
    let first = send(&mut run, NOW);
    let second = send(&mut run, NOW);
    run.abort(AbortCause::Interrupted);
    run.abort(AbortCause::Deadline);
    assert!(run.is_aborted());
    assert_eq!(run.next_step(NOW), NextStep::Stop);
    assert!(!run.handle_part_result(first, Err(status(StatusCode::BAD_REQUEST)), NOW, 0.0));
    assert!(run.handle_part_result(second, Ok(id(1)), NOW, 0.0));
    assert_eq!(run.session().snapshot().part_ids, [None, Some(id(1))]);
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Interrupted)
    ));
}

#[test]
fn workers_stopped_short_without_a_cause_are_reported_not_completed() {
    let mut run = started(3, None);
    let job = send(&mut run, NOW);
    run.handle_part_result(job, Ok(id(0)), NOW, 0.0);
    assert!(matches!(
        run.complete_request(None),
        Err(AbortCause::Unfinished { missing: 2 })
    ));
}

#[test]
fn the_deadline_counts_from_now_and_saturates() {
    let options = UploadOptions::new(Purpose::Batch);
    assert_eq!(options.deadline_unix_ms(NOW), None);
    let options = options.deadline(Duration::from_secs(2));
    assert_eq!(options.deadline_unix_ms(NOW), Some(NOW + 2_000));
    assert_eq!(options.deadline_unix_ms(u64::MAX - 1), Some(u64::MAX));
}

#[test]
fn a_resume_checks_the_source_and_the_options_before_any_request() {
    let plan = PartPlan::new(8, 4, &Limits::default()).unwrap();
    let session = UploadSession::new(upload(8), plan, RetryPolicy::default(), None)
        .with_source("8:5:/data/a.jsonl");
    let snapshot = session.snapshot();
    let options = UploadOptions::new(Purpose::FineTune).deadline(Duration::from_secs(1));

    let resumed = options
        .prepare_resume::<std::io::Error>(snapshot.clone(), 8, "8:5:/data/a.jsonl", NOW)
        .unwrap();
    assert_eq!(resumed.missing_parts().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(resumed.deadline_unix_ms(), Some(NOW + 1_000));
    assert_eq!(resumed.source(), Some("8:5:/data/a.jsonl"));

    let touched = options
        .prepare_resume::<std::io::Error>(snapshot.clone(), 8, "8:6:/data/a.jsonl", NOW)
        .unwrap_err();
    assert!(
        matches!(&touched, UploadError::SourceChanged { expected, found }
            if expected == "8:5:/data/a.jsonl" && found == "8:6:/data/a.jsonl"),
        "{touched:?}"
    );

    // A snapshot of an upload from a reader has no fingerprint: only the length counts.
    let unfingerprinted = SessionSnapshot {
        source: None,
        ..snapshot.clone()
    };
    assert!(
        options
            .prepare_resume::<std::io::Error>(unfingerprinted.clone(), 8, "any", NOW)
            .is_ok()
    );
    let shorter = options
        .prepare_resume::<std::io::Error>(unfingerprinted, 7, "7:1:/b", NOW)
        .unwrap_err();
    assert!(
        matches!(&shorter, UploadError::SourceChanged { expected, .. } if expected == "8 bytes"),
        "{shorter:?}"
    );

    let expired = options
        .prepare_resume::<std::io::Error>(
            snapshot.clone(),
            8,
            "8:5:/data/a.jsonl",
            EXPIRES_AT * 1000,
        )
        .unwrap_err();
    assert!(matches!(
        expired,
        UploadError::Resume(ResumeError::Expired { .. })
    ));
    let idle = options.concurrency(0);
    assert!(matches!(
        idle.prepare_resume::<std::io::Error>(snapshot, 8, "8:5:/data/a.jsonl", NOW),
        Err(UploadError::Options(OptionsError::ZeroConcurrency))
    ));
}

#[test]
fn a_snapshot_source_loads_through_the_callers_reader() {
    let plan = PartPlan::new(8, 4, &Limits::default()).unwrap();
    let snapshot = UploadSession::new(upload(8), plan, RetryPolicy::default(), None).snapshot();

    let (read, path) = SnapshotSource::from(snapshot.clone())
        .load(|_| panic!("nothing to read"))
        .unwrap();
    assert_eq!((read, path), (snapshot.clone(), None));

    let json = snapshot.to_json();
    let (read, path) = SnapshotSource::from(Path::new("/tmp/a.upload"))
        .load(|path| {
            assert_eq!(path, Path::new("/tmp/a.upload"));
            Ok(json.clone())
        })
        .unwrap();
    assert_eq!(
        (read, path),
        (snapshot, Some(PathBuf::from("/tmp/a.upload")))
    );

    let missing = SnapshotSource::from(PathBuf::from("/tmp/gone.upload"))
        .load(|_| Err(std::io::ErrorKind::NotFound.into()))
        .unwrap_err();
    assert!(
        matches!(&missing, ResumeError::Malformed { message } if message.starts_with("cannot read /tmp/gone.upload: ")),
        "{missing:?}"
    );
}

/// What one worker's attempt ends with in the property test.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Stored,
    Retryable,
    Refused,
    Unbuildable,
    Unreadable,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Stored),
        3 => Just(Outcome::Retryable),
        1 => Just(Outcome::Refused),
        1 => Just(Outcome::Unbuildable),
        1 => Just(Outcome::Unreadable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_run_completes_exactly_when_every_part_was_stored_and_nothing_gave_up(
        parts in 1_u64..6,
        outcomes in proptest::collection::vec(outcome(), 1..40),
    ) {
        let mut run = started(parts, None);
        let mut now = NOW;
        let mut first_cause = None;
        for outcome in outcomes {
            now += 1;
            let NextStep::Send(job) = run.next_step(now) else { break };
            let result = match outcome {
                Outcome::Stored => Ok(id(job.index)),
                Outcome::Retryable => Err(RequestError::Timeout(Duration::from_secs(1))),
                Outcome::Refused => Err(status(StatusCode::BAD_REQUEST)),
                Outcome::Unbuildable => Err(RequestError::Build(BuildError::EmptyId { param: "upload_id" })),
                Outcome::Unreadable => Err(RequestError::Source(std::io::ErrorKind::UnexpectedEof.into())),
            };
            let stored = run.handle_part_result(job, result, now, 0.5);
            prop_assert_eq!(stored, matches!(outcome, Outcome::Stored));
            if first_cause.is_none() && run.is_aborted() {
                first_cause = Some(outcome);
            }
        }
        let all_stored = run.session().missing_parts().next().is_none();
        match run.complete_request(None) {
            Ok(complete) => {
                prop_assert!(first_cause.is_none());
                prop_assert!(all_stored);
                let expected: Vec<PartId> = (0..).map(id).take(parts as usize).collect();
                prop_assert_eq!(complete.part_ids, expected);
            }
            Err(AbortCause::Unfinished { missing }) => {
                prop_assert!(first_cause.is_none());
                prop_assert!(missing > 0);
            }
            Err(cause) => {
                let matches_first = matches!(
                    (&cause, first_cause),
                    (AbortCause::Part { reason: GiveUpReason::AttemptsExhausted { .. }, .. }, Some(Outcome::Retryable))
                        | (AbortCause::Part { reason: GiveUpReason::NotRetryable { status: 400 }, .. }, Some(Outcome::Refused))
                        | (AbortCause::Part { reason: GiveUpReason::CannotSend, .. }, Some(Outcome::Unbuildable))
                        | (AbortCause::Source(_), Some(Outcome::Unreadable))
                );
                prop_assert!(matches_first, "{:?} after {:?}", cause, first_cause);
            }
        }
    }
}

#[test]
fn prepare_guesses_the_mime_type_and_checks_everything_before_any_request() {
    let options = UploadOptions::new(Purpose::FineTune).part_size(4);
    let (request, plan) = options.prepare("train.jsonl", 10).unwrap();
    assert_eq!(request.mime_type, "text/jsonl");
    assert_eq!(request.filename, "train.jsonl");
    assert_eq!(request.bytes, 10);
    assert_eq!(plan.count(), 3);

    let named = UploadOptions::new(Purpose::Assistants).filename("notes.md");
    assert_eq!(
        named.prepare("ignored.bin", 1).unwrap().0.mime_type,
        "text/markdown"
    );

    let cases: Vec<(UploadOptions, OptionsError)> = vec![
        (
            UploadOptions::new(Purpose::FineTune).concurrency(0),
            OptionsError::ZeroConcurrency,
        ),
        (
            UploadOptions::new(Purpose::FineTune),
            OptionsError::UnknownMimeType {
                filename: "data.bin".into(),
            },
        ),
        (
            UploadOptions::new(Purpose::FineTune)
                .part_size(65 * MIB)
                .mime_type("text/jsonl"),
            OptionsError::Plan(PlanError::PartTooLarge {
                part_size: 65 * MIB,
                max: 64 * MIB,
            }),
        ),
    ];
    for (options, expected) in cases {
        assert_eq!(options.prepare("data.bin", 10).unwrap_err(), expected);
    }
    let refused = UploadOptions::new(Purpose::Vision)
        .prepare("doc.pdf", 1)
        .unwrap_err();
    assert!(
        matches!(&refused, OptionsError::Refused { param: Some(param), message }
            if param == "mime_type" && message.starts_with("Invalid MIME type 'application/pdf'")),
        "{refused:?}"
    );
    let too_big = UploadOptions::new(Purpose::Batch)
        .prepare("a.jsonl", 9 * GIB)
        .unwrap_err();
    assert!(matches!(
        too_big,
        OptionsError::Plan(PlanError::FileTooLarge { .. })
    ));
    let expiry = UploadOptions::new(Purpose::Batch)
        .expires_after(ExpiresAfter::after_creation(10))
        .prepare("a.jsonl", 1)
        .unwrap_err();
    assert_eq!(
        expiry,
        OptionsError::Refused {
            param: Some("expires_after.seconds".into()),
            message: "10 is less than the minimum of 3600 - 'expires_after.seconds'".into()
        }
    );
}

#[test]
fn the_default_part_size_keeps_every_connection_busy_within_the_limits() {
    let limits = Limits::default();
    // Four rounds per connection, in whole MiB.
    assert_eq!(default_part_size(512 * MIB, 4, &limits), 32 * MIB);
    assert_eq!(default_part_size(512 * MIB + 1, 4, &limits), 33 * MIB);
    assert_eq!(default_part_size(1024 * MIB, 16, &limits), 16 * MIB);
    // The floor for small files, and an empty one.
    assert_eq!(default_part_size(1, 4, &limits), MIN_DEFAULT_PART_SIZE);
    assert_eq!(default_part_size(0, 4, &limits), MIN_DEFAULT_PART_SIZE);
    // The ceiling is the service's part limit.
    let small_parts = Limits {
        max_part_bytes: 4 * MIB,
        ..Limits::default()
    };
    assert_eq!(default_part_size(GIB, 1, &small_parts), 4 * MIB);
    // Never more than 10,000 parts, even past the part limit's ceiling.
    let huge = Limits {
        max_part_bytes: MIB,
        max_upload_bytes: 100 * GIB,
        ..Limits::default()
    };
    let size = default_part_size(20 * GIB, 64, &huge);
    assert!(
        20 * GIB / size <= Limits::default().max_parts_per_upload,
        "{size}"
    );
    // A concurrency of 0 is refused by prepare; here it counts as 1.
    assert_eq!(default_part_size(128 * MIB, 0, &limits), 32 * MIB);
}

proptest! {
    #[test]
    fn the_default_part_size_always_makes_a_valid_plan(
        file_size in 0_u64..=8 * GIB,
        concurrency in 1_usize..64,
    ) {
        let limits = Limits::default();
        let size = default_part_size(file_size, concurrency, &limits);
        let plan = PartPlan::new(file_size, size, &limits).unwrap();
        prop_assert!(u64::from(plan.count()) <= Limits::default().max_parts_per_upload);
        prop_assert!((MIN_DEFAULT_PART_SIZE..=limits.max_part_bytes).contains(&size));
    }
}

#[test]
fn explicit_part_sizes_win_over_the_default() {
    let (_, plan) = UploadOptions::new(Purpose::Batch)
        .prepare("a.jsonl", 256 * MIB)
        .unwrap();
    assert_eq!(plan.part_size(), 8 * MIB, "8 in flight: 32 parts");
    let (_, plan) = UploadOptions::new(Purpose::Batch)
        .concurrency(4)
        .prepare("a.jsonl", 256 * MIB)
        .unwrap();
    assert_eq!(plan.part_size(), 16 * MIB);
    let (_, plan) = UploadOptions::new(Purpose::Batch)
        .part_size(64 * MIB)
        .prepare("a.jsonl", 256 * MIB)
        .unwrap();
    assert_eq!(plan.count(), 4);
}

#[test]
fn a_refused_connection_keeps_its_address_and_is_final_on_this_machine() {
    let refused = |address: &str| -> RequestError<std::io::Error> {
        RequestError::Connect {
            address: address.to_owned(),
            kind: ConnectFailure::Refused,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }
    };
    assert_eq!(
        refused("127.0.0.1:18099").to_string(),
        "cannot connect to 127.0.0.1:18099 (connection refused)"
    );
    for local in [
        "127.0.0.1:18099",
        "127.1.2.3:80",
        "[::1]:8000",
        "localhost:8000",
        "LOCALHOST",
    ] {
        assert_eq!(
            refused(local).as_failure(0),
            Some(Failure::Refused { loopback: true }),
            "{local}"
        );
    }
    for remote in ["api.openai.com:443", "10.0.0.1:80", "[2001:db8::1]:443"] {
        assert_eq!(
            refused(remote).as_failure(0),
            Some(Failure::Refused { loopback: false }),
            "{remote}"
        );
    }
    let timed_out: RequestError<std::io::Error> = RequestError::Connect {
        address: "10.0.0.1:443".into(),
        kind: ConnectFailure::TimedOut,
        source: std::io::ErrorKind::TimedOut.into(),
    };
    assert_eq!(timed_out.as_failure(0), Some(Failure::Timeout));
}

#[test]
fn messages_leave_their_cause_to_the_chain() {
    let error: UploadError<std::io::Error> = UploadError::Aborted {
        upload_id: UploadId::new("upload_1"),
        cancelled: true,
        cause: Box::new(AbortCause::Part {
            part: 3,
            reason: GiveUpReason::AttemptsExhausted { attempts: 5 },
            error: RequestError::Transport(std::io::Error::other("reset by peer")),
        }),
    };
    assert_eq!(error.to_string(), "upload upload_1 failed (cancelled)");
    assert_eq!(
        error_chain(&error),
        "upload upload_1 failed (cancelled): part 3 gave up (attempts exhausted after 5): transport error: reset by peer"
    );
}

#[test]
fn request_errors_map_to_retry_failures() {
    let timeout: RequestError<std::io::Error> = RequestError::Timeout(Duration::from_secs(1));
    assert_eq!(timeout.as_failure(0), Some(Failure::Timeout));
    let transport: RequestError<std::io::Error> =
        RequestError::Transport(std::io::Error::other("reset"));
    assert_eq!(transport.as_failure(0), Some(Failure::Connection));
    let build: RequestError<std::io::Error> =
        RequestError::Build(BuildError::EmptyId { param: "upload_id" });
    assert_eq!(build.as_failure(0), None);
}

#[test]
fn fingerprints_name_length_time_and_path() {
    assert_eq!(
        source_fingerprint("/data/a.jsonl", 10, Some(5)),
        "10:5:/data/a.jsonl"
    );
    assert_eq!(source_fingerprint("a", 0, None), "0:-:a");
}
