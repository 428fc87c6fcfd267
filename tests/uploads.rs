//! The clients against the real server over real HTTP: every scenario runs once with the
//! async client and once with the blocking one.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use uploads_core::api::{ApiError, CreateFileForm};
use uploads_core::digest::Md5Hasher;
use uploads_core::limits::MIB;
use uploads_core::retry::{Failure, GiveUpReason, RetryPolicy};
use uploads_core::types::{
    CompleteUploadRequest, CreateUploadRequest, ListFilesQuery, PartId, Purpose, UploadId,
    UploadStatus,
};
use uploads_core::upload::{AbortCause, ConnectFailure, RequestError, UploadError, UploadOptions};
use uploads_core::uploader::{ProgressEvent, ResumeError, SessionSnapshot, StopMode};

use support::proxy::Fault;
use support::{Adapter, Harness, PartData, Source};

const PART: u64 = 256 * 1024;

with_both_adapters!(
    a_multi_part_upload_arrives_byte_exact_with_parts_in_parallel,
    resets_500s_and_429s_are_survived,
    stalls_truncated_answers_and_503s_are_survived,
    the_deadline_gives_up_in_time_and_cancels,
    giving_up_cancels_the_upload_and_says_why,
    a_source_shorter_than_promised_gives_up_at_once_and_cancels,
    a_resume_sends_only_the_missing_parts,
    an_expired_snapshot_or_a_changed_file_is_refused,
    every_low_level_call_works_and_errors_carry_openai_bodies,
    a_refused_connection_names_its_address_and_is_final_on_this_machine,
    a_progress_callback_that_blocks_stalls_no_part,
    a_part_answered_while_the_driver_turns_to_wait_is_not_lost,
    a_stop_signal_cancels_the_upload_or_keeps_it,
    a_silent_server_is_left_after_the_stall_time_with_no_timeout_of_the_clients,
);

fn options(part_size: u64) -> UploadOptions {
    UploadOptions::new(Purpose::FineTune).part_size(part_size)
}

/// Retries without long waits, so fault tests stay quick; `Retry-After` is still obeyed.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(max_attempts)
        .with_backoff_ms(10, 50)
}

/// A progress callback that keeps every event.
fn recorder() -> (
    Arc<Mutex<Vec<ProgressEvent>>>,
    impl Fn(&ProgressEvent) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&events);
    (events, move |event: &ProgressEvent| {
        kept.lock().unwrap().push(event.clone());
    })
}

fn api_error<T: std::fmt::Debug, E: std::fmt::Debug>(
    result: Result<T, RequestError<E>>,
) -> ApiError {
    match result {
        Err(error) => error
            .api_error()
            .cloned()
            .unwrap_or_else(|| panic!("expected an API error, got {error:?}")),
        Ok(value) => panic!("expected an API error, got {value:?}"),
    }
}

fn a_multi_part_upload_arrives_byte_exact_with_parts_in_parallel<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (path, data) = harness.write_file("train.jsonl", (6 * MIB + 12_345) as usize);
    let (events, record) = recorder();

    let upload = client
        .upload(
            Source::File(&path),
            options(MIB).concurrency(4).on_progress(record),
        )
        .unwrap();

    assert_eq!(upload.status, UploadStatus::Completed);
    assert_eq!(upload.bytes, data.len() as u64);
    let file = upload.file.unwrap();
    assert_eq!(file.bytes, data.len() as u64);
    assert_eq!(file.filename, "train.jsonl");
    assert_eq!(client.file_content(&file.id).unwrap(), data);
    let stats = harness.server().stats();
    assert_eq!(stats.part_requests(), 7);
    assert!(stats.peak_parts_in_flight() > 1, "parts never overlapped");
    let events = events.lock().unwrap();
    let parts_done = events
        .iter()
        .filter(|event| matches!(event, ProgressEvent::PartDone { .. }))
        .count();
    assert_eq!(parts_done, 7);
    let last_sent = events.iter().rev().find_map(|event| match event {
        ProgressEvent::BytesSent {
            total_sent, total, ..
        } => Some((*total_sent, *total)),
        _ => None,
    });
    assert_eq!(last_sent, Some((data.len() as u64, data.len() as u64)));
}

fn resets_500s_and_429s_are_survived<A: Adapter>() {
    let harness = Harness::start();
    let proxy = harness.proxy(vec![
        Fault::Reset,
        Fault::Status(500),
        Fault::TooManyRequests {
            retry_after_seconds: 1,
        },
    ]);
    let client = A::connect(&harness, &proxy.base_url(), None);
    let (path, data) = harness.write_file("train.jsonl", (4 * PART + 1000) as usize);
    let (events, record) = recorder();

    let upload = client
        .upload(
            Source::File(&path),
            options(PART)
                .concurrency(2)
                .retry(quick_retries(5))
                .on_progress(record),
        )
        .unwrap();

    assert_eq!(upload.status, UploadStatus::Completed);
    let file = upload.file.unwrap();
    let direct: A = harness.client();
    assert_eq!(direct.file_content(&file.id).unwrap(), data);
    assert_eq!(proxy.faults_injected(), 3);
    assert_eq!(proxy.part_requests(), 5 + 3);
    assert_eq!(harness.server().stats().parts_stored(), 5);
    let retries: Vec<u64> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            ProgressEvent::PartRetry { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(
        retries.contains(&1000),
        "Retry-After: 1 was not obeyed: {retries:?}"
    );
}

fn stalls_truncated_answers_and_503s_are_survived<A: Adapter>() {
    let harness = Harness::start();
    let proxy = harness.proxy(vec![Fault::Stall, Fault::Truncate, Fault::Status(503)]);
    // Short enough that a stalled part is given up on quickly.
    let client = A::connect(
        &harness,
        &proxy.base_url(),
        Some(Duration::from_millis(500)),
    );
    let (path, data) = harness.write_file("train.jsonl", (3 * PART + 10) as usize);

    let upload = client
        .upload(
            Source::File(&path),
            options(PART).concurrency(1).retry(quick_retries(4)),
        )
        .unwrap();

    let file = upload.file.unwrap();
    let direct: A = harness.client();
    assert_eq!(direct.file_content(&file.id).unwrap(), data);
    assert_eq!(proxy.faults_injected(), 3);
    // The truncated answer's Part reached the server; its retry is the one listed.
    assert_eq!(harness.server().stats().parts_stored(), 4 + 1);
}

fn the_deadline_gives_up_in_time_and_cancels<A: Adapter>() {
    let harness = Harness::start();
    let proxy = harness.proxy(vec![Fault::Stall; 20]);
    let client = A::connect(
        &harness,
        &proxy.base_url(),
        Some(Duration::from_millis(300)),
    );
    let (path, _) = harness.write_file("train.jsonl", PART as usize);

    let error = client
        .upload(
            Source::File(&path),
            options(PART)
                .concurrency(1)
                .retry(quick_retries(20))
                .deadline(Duration::from_millis(800)),
        )
        .unwrap_err();

    let UploadError::Aborted {
        upload_id,
        cancelled,
        cause,
    } = error
    else {
        panic!("expected the upload to give up, got {error:?}");
    };
    assert!(
        cancelled,
        "the Upload is cancelled when the deadline passes"
    );
    assert!(
        matches!(
            *cause,
            AbortCause::Deadline
                | AbortCause::Part {
                    reason: GiveUpReason::Deadline { .. },
                    ..
                }
        ),
        "the deadline is the cause: {cause:?}"
    );
    // Far fewer attempts than the policy allows: the deadline stopped them.
    assert!(proxy.part_requests() < 20, "{}", proxy.part_requests());
    let direct: A = harness.client();
    let refused = api_error(direct.add_part(&upload_id, PartData::Bytes(b"late")));
    assert_eq!(refused.status, 400, "{refused}");
}

fn giving_up_cancels_the_upload_and_says_why<A: Adapter>() {
    let harness = Harness::start();
    let proxy = harness.proxy(vec![Fault::Status(503); 10]);
    let client = A::connect(&harness, &proxy.base_url(), None);
    let (path, _) = harness.write_file("train.jsonl", PART as usize);

    let error = client
        .upload(
            Source::File(&path),
            options(PART).concurrency(1).retry(quick_retries(2)),
        )
        .unwrap_err();

    let message = uploads_core::upload::error_chain(&error);
    let UploadError::Aborted {
        upload_id,
        cancelled,
        cause,
    } = error
    else {
        panic!("expected the upload to give up, got {error:?}");
    };
    let AbortCause::Part {
        part,
        reason,
        error: last,
    } = *cause
    else {
        panic!("expected a part to give up, got {cause:?}");
    };
    assert!(cancelled);
    assert_eq!(part, 0);
    assert_eq!(reason, GiveUpReason::AttemptsExhausted { attempts: 2 });
    assert_eq!(last.api_error().map(|api| api.status.as_u16()), Some(503));
    assert!(message.contains("(cancelled)"), "{message}");
    assert!(message.contains("attempts exhausted after 2"), "{message}");
    assert_eq!(proxy.part_requests(), 2);

    let direct: A = harness.client();
    let refused = api_error(direct.add_part(&upload_id, PartData::Bytes(b"late")));
    assert_eq!(refused.status, 400, "{refused}");
    let complete = CompleteUploadRequest {
        part_ids: vec![PartId::new("part_none")],
        md5: None,
    };
    let refused = api_error(direct.complete_upload(&upload_id, &complete));
    assert_eq!(refused.status, 400, "{refused}");
}

fn a_source_shorter_than_promised_gives_up_at_once_and_cancels<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (events, record) = recorder();
    let options = options(PART)
        .concurrency(1)
        .retry(quick_retries(5))
        .on_progress(record);

    // Two parts of data behind a promise of three: the third part's read comes up short.
    let data = vec![b'x'; (2 * PART) as usize];
    let error = client
        .upload(
            Source::Reader {
                data,
                len: 3 * PART,
                name: "short.jsonl",
            },
            options,
        )
        .unwrap_err();

    let UploadError::Aborted {
        upload_id,
        cancelled,
        cause,
    } = error
    else {
        panic!("expected the upload to give up, got {error:?}");
    };
    assert!(cancelled);
    assert!(
        matches!(&*cause, AbortCause::Source(read) if read.kind() == std::io::ErrorKind::UnexpectedEof),
        "{cause:?}"
    );
    let retried = events
        .lock()
        .unwrap()
        .iter()
        .any(|event| matches!(event, ProgressEvent::PartRetry { .. }));
    assert!(!retried, "a read that came up short is not retried");
    let refused = api_error(client.add_part(&upload_id, PartData::Bytes(b"late")));
    assert_eq!(refused.status, 400, "{refused}");
}

fn a_resume_sends_only_the_missing_parts<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (path, data) = harness.write_file("train.jsonl", (8 * PART) as usize);
    let snapshot_path = harness.path("train.upload.json");

    client.upload_until_parts_done(
        &path,
        options(PART).concurrency(2).snapshot_path(&snapshot_path),
        3,
    );

    let snapshot =
        SessionSnapshot::from_json(&std::fs::read_to_string(&snapshot_path).unwrap()).unwrap();
    // Each part is in the snapshot soon after its PartDone event, so it may lag by the
    // parts that finished last; a worker writes its part's snapshot before taking another.
    let done = snapshot.part_ids.iter().flatten().count();
    assert!((1..8).contains(&done), "{done} parts in the snapshot");
    // A request the stopped upload had already written reaches the server before this round
    // trip ends; once the server has none in flight, the count below is of the resume's
    // requests alone.
    client.list_files(&ListFilesQuery::default()).unwrap();
    while harness.server().stats().parts_in_flight() > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = harness.server().stats().part_requests();

    // Resumed from the snapshot as read: a write the stopped upload had under way may still
    // land in the file.
    let resumed_path = harness.path("train.resumed.json");
    let upload = client
        .upload(
            Source::Resume(snapshot.clone().into(), &path),
            options(PART).concurrency(2).snapshot_path(&resumed_path),
        )
        .unwrap();

    assert_eq!(upload.status, UploadStatus::Completed);
    assert_eq!(upload.id, snapshot.upload.id);
    assert_eq!(
        harness.server().stats().part_requests() - before,
        (8 - done) as u64
    );
    let file = upload.file.unwrap();
    assert_eq!(client.file_content(&file.id).unwrap(), data);
    assert!(!resumed_path.exists(), "the snapshot outlived the upload");
}

fn an_expired_snapshot_or_a_changed_file_is_refused<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (path, mut data) = harness.write_file("train.jsonl", (4 * PART) as usize);
    let snapshot_path = harness.path("train.upload.json");
    client.upload_until_parts_done(
        &path,
        options(PART).concurrency(1).snapshot_path(&snapshot_path),
        1,
    );
    let text = std::fs::read_to_string(&snapshot_path).unwrap();
    let mut expired = SessionSnapshot::from_json(&text).unwrap();
    // Expired by the service's clock and by this machine's (which the uploader judges by).
    expired.upload.expires_at = 1_000;
    expired.expires_locally_at_ms = Some(1_000_000);
    let expired_path = harness.path("expired.upload.json");
    std::fs::write(&expired_path, expired.to_json()).unwrap();
    client.list_files(&ListFilesQuery::default()).unwrap();
    let before = harness.server().stats().part_requests();

    let refused = client
        .upload(
            Source::Resume(expired_path.as_path().into(), &path),
            options(PART),
        )
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            UploadError::Resume(ResumeError::Expired { expires_at: 1_000, upload_id })
                if *upload_id == expired.upload.id
        ),
        "{refused:?}"
    );

    data.push(b'\n');
    std::fs::write(&path, &data).unwrap();
    let refused = client
        .upload(
            Source::Resume(snapshot_path.as_path().into(), &path),
            options(PART),
        )
        .unwrap_err();
    assert!(
        matches!(refused, UploadError::SourceChanged { .. }),
        "{refused:?}"
    );
    assert_eq!(harness.server().stats().part_requests(), before);
}

fn every_low_level_call_works_and_errors_carry_openai_bodies<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (path, data) = harness.write_file("notes.jsonl", 1000);
    let create = CreateUploadRequest {
        filename: "notes.jsonl".to_owned(),
        purpose: Purpose::FineTune,
        bytes: 1000,
        mime_type: "text/jsonl".to_owned(),
        expires_after: None,
    };

    let upload = client.create_upload(&create).unwrap();
    assert_eq!(upload.status, UploadStatus::Pending);
    assert_eq!(upload.bytes, 1000);
    let first = client
        .add_part(&upload.id, PartData::Bytes(&data[..400]))
        .unwrap();
    let second = client
        .add_part(
            &upload.id,
            PartData::File {
                path: &path,
                offset: 400,
                len: 600,
            },
        )
        .unwrap();
    assert_eq!(first.upload_id, upload.id);
    let mut md5 = Md5Hasher::new();
    md5.update(&data);
    let complete = CompleteUploadRequest {
        part_ids: vec![first.id, second.id],
        md5: Some(md5.finish_hex()),
    };
    let completed = client.complete_upload(&upload.id, &complete).unwrap();
    assert_eq!(completed.status, UploadStatus::Completed);
    let file = completed.file.unwrap();

    let retrieved = client.retrieve_file(&file.id).unwrap();
    assert_eq!(
        (retrieved.id.clone(), retrieved.bytes),
        (file.id.clone(), 1000)
    );
    assert_eq!(client.file_content(&file.id).unwrap(), data);
    let listed = client.list_files(&ListFilesQuery::default()).unwrap();
    assert!(listed.data.iter().any(|listed| listed.id == file.id));

    let form = CreateFileForm {
        purpose: Purpose::FineTune,
        filename: "small.jsonl".to_owned(),
        content_type: "text/jsonl".to_owned(),
        expires_after: None,
    };
    let small = client.create_file(&form, b"{}\n").unwrap();
    assert_eq!((small.bytes, small.filename.as_str()), (3, "small.jsonl"));
    assert_eq!(client.file_content(&small.id).unwrap(), b"{}\n");

    let other = client.create_upload(&create).unwrap();
    let cancelled = client.cancel_upload(&other.id).unwrap();
    assert_eq!(cancelled.status, UploadStatus::Cancelled);
    assert_eq!(client.cancel_upload(&other.id).unwrap(), cancelled);

    let deleted = client.delete_file(&file.id).unwrap();
    assert!(deleted.deleted);
    assert_eq!(deleted.id, file.id);

    let missing = api_error(client.retrieve_file(&file.id));
    assert_eq!(missing.status, 404);
    let detail = missing.detail().unwrap();
    assert_eq!(detail.message, format!("No such File object: {}", file.id));
    assert_eq!(detail.kind, "invalid_request_error");
    assert_eq!(detail.param.as_deref(), Some("file_id"));
    let missing = api_error(client.file_content(&file.id));
    assert_eq!(missing.status, 404);

    let unknown = UploadId::new("upload_missing");
    let missing = api_error(client.complete_upload(&unknown, &complete));
    assert_eq!(missing.status, 404);
    let detail = missing.detail().unwrap();
    assert_eq!(detail.message, "No such Upload object: upload_missing");
    assert_eq!(detail.param.as_deref(), Some("upload_id"));

    let invalid = CreateUploadRequest {
        mime_type: "application/x-unknown".to_owned(),
        ..create
    };
    let refused = api_error(client.create_upload(&invalid));
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.detail().unwrap().param.as_deref(),
        Some("mime_type")
    );
}

/// How long a test waits for what must happen at once before it calls it a hang.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Runs `upload` on a thread of its own and returns its result, or panics once
/// [`HANG_GUARD`] passes: a hung upload fails the test instead of hanging it.
fn within_hang_guard<T: Send + 'static>(upload: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(upload());
    });
    receiver
        .recv_timeout(HANG_GUARD * 2)
        .expect("the upload hung")
}

/// Waits until `done` holds, for at most [`HANG_GUARD`]; returns whether it held.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > HANG_GUARD {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A slow progress callback (a terminal redraw, a blocked pipe) must not hold up the parts:
/// the callback of the first bytes sent waits for the server to answer both parts, which it
/// can only do if the parts keep streaming while the callback runs.
fn a_progress_callback_that_blocks_stalls_no_part<A: Adapter + Send + 'static>() {
    let harness = Harness::start();
    let proxy = Arc::new(harness.proxy(Vec::new()));
    let client = A::connect(&harness, &proxy.base_url(), None);
    let (path, data) = harness.write_file("train.jsonl", (2 * PART) as usize);
    let streamed_on = Arc::new(Mutex::new(None));
    let (seen, watched) = (Arc::clone(&streamed_on), Arc::clone(&proxy));
    let options = options(PART).concurrency(2).on_progress(move |event| {
        if matches!(event, ProgressEvent::BytesSent { .. }) && seen.lock().unwrap().is_none() {
            let answered = wait_until(|| watched.parts_answered() >= 2);
            *seen.lock().unwrap() = Some(answered);
        }
    });
    let upload = within_hang_guard(move || client.upload(Source::File(&path), options)).unwrap();
    assert_eq!(
        *streamed_on.lock().unwrap(),
        Some(true),
        "the parts stalled while the progress callback ran"
    );
    let client: A = harness.client();
    assert_eq!(client.file_content(&upload.file.unwrap().id).unwrap(), data);
}

/// The other part's answer arrives while the driver has just decided to wait for one (the
/// first part's `PartDone` callback runs between that decision and the wait, and holds until
/// the server has answered the second part): the driver must still see it and complete,
/// with no deadline and no stop signal to wake it otherwise.
fn a_part_answered_while_the_driver_turns_to_wait_is_not_lost<A: Adapter + Send + 'static>() {
    let harness = Harness::start();
    let proxy = Arc::new(harness.proxy(Vec::new()));
    let client = A::connect(&harness, &proxy.base_url(), None);
    let (path, data) = harness.write_file("train.jsonl", (2 * PART) as usize);
    let first_done = Arc::new(Mutex::new(None));
    let (seen, watched) = (Arc::clone(&first_done), Arc::clone(&proxy));
    let options = options(PART).concurrency(2).on_progress(move |event| {
        if matches!(event, ProgressEvent::PartDone { .. }) && seen.lock().unwrap().is_none() {
            let answered = wait_until(|| watched.parts_answered() >= 2);
            *seen.lock().unwrap() = Some(answered);
        }
    });
    let upload = within_hang_guard(move || client.upload(Source::File(&path), options)).unwrap();
    assert_eq!(*first_done.lock().unwrap(), Some(true));
    assert_eq!(upload.status, UploadStatus::Completed);
    let client: A = harness.client();
    assert_eq!(client.file_content(&upload.file.unwrap().id).unwrap(), data);
}

fn a_refused_connection_names_its_address_and_is_final_on_this_machine<A: Adapter>() {
    let harness = Harness::start();
    // Port 9 on loopback: nothing listens there.
    let client = A::connect(&harness, "http://127.0.0.1:9/v1", None);
    let error = client
        .cancel_upload(&UploadId::new("upload_1"))
        .unwrap_err();
    assert!(
        matches!(&error, RequestError::Connect { kind: ConnectFailure::Refused, address, .. } if address == "127.0.0.1:9"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot connect to 127.0.0.1:9 (connection refused)"
    );
    assert_eq!(
        error.as_failure(0),
        Some(Failure::Refused { loopback: true })
    );
}

/// The same signal stops either client; `cancel` cancels the Upload, `stop` keeps it.
fn a_stop_signal_cancels_the_upload_or_keeps_it<A: Adapter>() {
    let harness = Harness::start();
    let client: A = harness.client();
    let (path, _) = harness.write_file("train.jsonl", (8 * PART) as usize);
    for (mode, cancelled_as_asked) in [(StopMode::Cancel, true), (StopMode::Keep, false)] {
        let stopped = client.upload_stopped_after(&path, options(PART).concurrency(2), 2, mode);
        let Err(UploadError::Aborted {
            upload_id,
            cancelled,
            cause,
        }) = stopped
        else {
            panic!("expected an interrupted upload, got {stopped:?}")
        };
        assert!(matches!(*cause, AbortCause::Interrupted), "{cause:?}");
        assert_eq!(cancelled, cancelled_as_asked);
        // The server agrees: a cancelled Upload refuses parts, a kept one takes them.
        let late = client.add_part(&upload_id, PartData::Bytes(b"late"));
        assert_eq!(late.is_ok(), !cancelled_as_asked, "{mode:?}: {late:?}");
    }
}

/// A server that takes a part and never answers: with no request timeout of the client's
/// own (10 minutes by default), the stall rule gives up on the part and retries it.
fn a_silent_server_is_left_after_the_stall_time_with_no_timeout_of_the_clients<A: Adapter>() {
    let harness = Harness::start();
    let proxy = harness.proxy(vec![Fault::Stall]);
    let client = A::connect(&harness, &proxy.base_url(), None);
    let (path, data) = harness.write_file("train.jsonl", (2 * PART) as usize);
    let (events, record) = recorder();

    let upload = client
        .upload(
            Source::File(&path),
            options(PART)
                .concurrency(1)
                .retry(quick_retries(3))
                .stall_timeout(Duration::from_millis(300))
                .on_progress(record),
        )
        .unwrap();

    let direct: A = harness.client();
    assert_eq!(direct.file_content(&upload.file.unwrap().id).unwrap(), data);
    assert_eq!(proxy.faults_injected(), 1);
    let stalled = events.lock().unwrap().iter().any(|event| {
        matches!(
            event,
            ProgressEvent::PartRetry {
                failure: Failure::Timeout,
                ..
            }
        )
    });
    assert!(stalled, "the silent part was retried as a timeout");
}
