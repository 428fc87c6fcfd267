//! The service's clock and this machine's may disagree by hours: the uploader trusts only
//! the Upload's lifetime (`expires_at - created_at`), counted on its own clock from the
//! moment create was answered (found by the simulator: `uploads-sim` seed 69).

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::api::check_response_head;
use crate::types::{Purpose, UploadStatus};

const NOW: u64 = 1_719_184_912_000;
/// The service's clock is this far behind ours: more than an Upload's lifetime.
const SERVICE_BEHIND_SECS: u64 = 4000;
const LIFETIME_SECS: u64 = 3600;

fn options() -> UploadOptions {
    UploadOptions::new(Purpose::Batch)
        .part_size(4)
        .concurrency(1)
        .md5(false)
        .cancel_on_failure(false)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 400,
            max_retry_after_ms: 5_000,
        })
        .deadline(Duration::from_hours(2))
}

/// The Upload as a service whose clock reads `SERVICE_BEHIND_SECS` behind ours creates it.
fn upload_from_a_service_behind() -> Upload {
    let created_at = NOW / 1000 - SERVICE_BEHIND_SECS;
    Upload {
        id: UploadId::new("upload_1"),
        object: "upload".to_owned(),
        bytes: 6,
        created_at,
        filename: "a.jsonl".to_owned(),
        purpose: Purpose::Batch,
        status: UploadStatus::Pending,
        expires_at: created_at + LIFETIME_SECS,
        file: None,
    }
}

fn unavailable() -> RequestError<std::io::Error> {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("1"));
    let head = check_response_head(StatusCode::SERVICE_UNAVAILABLE, &headers).unwrap_err();
    RequestError::Response(head.with_body(b"{}").into())
}

/// An uploader whose Upload was created (by a service behind) at `NOW`; its first part.
fn created() -> (Uploader<std::io::Error>, PartJob) {
    let mut uploader = Uploader::new(&options(), "a.jsonl", 6, Some("fp".into()), NOW).unwrap();
    let Some(Action::Send(Transmit::Create(_))) = uploader.poll_action(NOW) else {
        panic!("create first")
    };
    uploader.handle(
        Report::Created(Ok(upload_from_a_service_behind())),
        NOW,
        0.0,
    );
    loop {
        match uploader.poll_action(NOW) {
            Some(Action::Send(Transmit::Part { job, .. })) => return (uploader, job),
            Some(Action::WriteSnapshot { .. }) => {
                uploader.handle(Report::SnapshotDone(Ok(())), NOW, 0.0);
            }
            other => panic!("expected a part, got {other:?}"),
        }
    }
}

#[test]
fn a_service_whose_clock_is_behind_by_more_than_a_lifetime_still_gets_its_retries() {
    let (mut uploader, first) = created();
    uploader.handle(Report::Part(first, Err(unavailable())), NOW + 10, 0.0);
    assert!(
        uploader.poll_finished().is_none(),
        "gave up at once: the service's expires_at was read on this machine's clock"
    );
    let retry_at = uploader.poll_timeout().expect("a retry is scheduled");
    assert!(retry_at <= NOW + 10 + 1_500, "{retry_at}");
    let retried =
        std::iter::from_fn(|| uploader.poll_action(retry_at)).find_map(|action| match action {
            Action::Send(Transmit::Part { job, .. }) if job.index == first.index => Some(job),
            _ => None,
        });
    assert_eq!(retried.map(|job| job.attempt), Some(2));
}

#[test]
fn no_retry_is_scheduled_past_the_upload_s_lifetime_on_this_machine_s_clock() {
    let (mut uploader, first) = created();
    // An hour later by our clock: the Upload's lifetime is over, whatever the service's
    // clock reads.
    let late = NOW + LIFETIME_SECS * 1000;
    uploader.handle(Report::Part(first, Err(unavailable())), late, 0.0);
    assert!(
        uploader
            .poll_finished()
            .is_some_and(|result| result.is_err())
    );
}

#[test]
fn a_snapshot_resumes_within_the_lifetime_on_this_machine_s_clock_and_not_after() {
    let (uploader, _) = created();
    let snapshot = uploader.snapshot().expect("the parts phase has a snapshot");
    let json = snapshot.to_json();
    let resumed = |at: u64| {
        let snapshot = SessionSnapshot::from_json(&json).unwrap();
        Uploader::<std::io::Error>::resume(&options(), snapshot, 6, "fp", at)
    };
    assert!(
        resumed(NOW + 60_000).is_ok(),
        "the service's expires_at is in our past, but the Upload lives"
    );
    assert!(matches!(
        resumed(NOW + LIFETIME_SECS * 1000),
        Err(UploadError::Resume(ResumeError::Expired { .. }))
    ));
}

#[test]
fn a_snapshot_written_before_the_local_expiry_was_kept_is_judged_by_expires_at() {
    let (uploader, _) = created();
    let mut json: serde_json::Value =
        serde_json::from_str(&uploader.snapshot().unwrap().to_json()).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("expires_locally_at_ms");
    let snapshot = SessionSnapshot::from_json(&json.to_string()).unwrap();
    assert_eq!(snapshot.expires_locally_at_ms, None);
    // Without it, the service's expires_at is all there is (in our past here).
    assert!(matches!(
        Uploader::<std::io::Error>::resume(&options(), snapshot, 6, "fp", NOW),
        Err(UploadError::Resume(ResumeError::Expired { .. }))
    ));
}
