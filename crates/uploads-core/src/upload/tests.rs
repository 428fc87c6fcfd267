use super::*;

use std::time::Duration;

use crate::api::BuildError;
use crate::limits::GIB;
use crate::limits::{Limits, MIB};
use crate::retry::{Failure, GiveUpReason};
use crate::types::{ExpiresAfter, Purpose, UploadId};
use crate::uploader::{PartPlan, PlanError};
use proptest::prelude::*;

const NOW: u64 = 1_719_184_912_000;
#[test]
fn the_deadline_counts_from_now_and_saturates() {
    let options = UploadOptions::new(Purpose::Batch);
    assert_eq!(options.deadline_unix_ms(NOW), None);
    let options = options.deadline(Duration::from_secs(2));
    assert_eq!(options.deadline_unix_ms(NOW), Some(NOW + 2_000));
    assert_eq!(options.deadline_unix_ms(u64::MAX - 1), Some(u64::MAX));
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
    assert!(
        plan.is_adaptive(),
        "by default parts are cut as the upload goes"
    );
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
