//! Both clients' uploads through a server whose key may make few requests per minute: the
//! server answers 429 with `retry-after-ms`, the core's uploader waits that long and sends
//! the request again, and the upload completes with no give-up.
//!
//! The server's bucket is on the system clock here (the clients wait real time). Before each
//! upload the key's bucket is spent until a request is refused, so the upload starts against
//! an empty bucket (unless a whole second passed in between) and every one of its requests
//! waits for a token; the test depends on waits being at least as long as asked, never on an
//! upper bound.

mod support;

use std::sync::{Arc, Mutex};

use uploads_core::limits::Limits;
use uploads_core::retry::Failure;
use uploads_core::types::{Purpose, UploadStatus};
use uploads_core::upload::UploadOptions;
use uploads_core::uploader::ProgressEvent;

use support::{API_KEY, Adapter, Harness, Source};

with_both_adapters!(the_upload_waits_out_429s_and_completes);

/// One token back every second.
const REQUESTS_PER_MINUTE: u32 = 60;
const PART: u64 = 16 * 1024;
/// Create, three Parts, complete: five requests, each waiting for its token.
const PARTS: u64 = 3;

/// Each Part retry: its delay and why.
type Retried = Arc<Mutex<Vec<(u64, Failure)>>>;

/// Parts one at a time: a refused Part waits the time the server named and then finds its
/// token (no other request of the key is in flight to take it first).
fn options(retried: &Retried) -> UploadOptions {
    let retried = Arc::clone(retried);
    UploadOptions::new(Purpose::UserData)
        .part_size(PART)
        .concurrency(1)
        .on_progress(move |event: &ProgressEvent| {
            if let ProgressEvent::PartRetry {
                delay_ms, failure, ..
            } = event
            {
                retried.lock().unwrap().push((*delay_ms, failure.clone()));
            }
        })
}

/// Spends the key's bucket: `GET /v1/files` until one is refused with 429.
fn spend_the_bucket(server: &uploads_server::RunningServer) {
    use std::io::{Read, Write};
    loop {
        let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
        write!(
            stream,
            "GET /v1/files HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        if reply.starts_with("HTTP/1.1 429") {
            return;
        }
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

fn the_upload_waits_out_429s_and_completes<A: Adapter>() {
    let harness = Harness::start_with(|builder| {
        builder.limits(Limits::default().with_requests_per_minute(REQUESTS_PER_MINUTE))
    });
    let (path, data) = harness.write_file("data.txt", (PART * PARTS) as usize);
    let retried = Retried::default();
    spend_the_bucket(harness.server());
    let upload = harness
        .client::<A>()
        .upload(Source::File(&path), options(&retried))
        .unwrap();
    assert_eq!(upload.status, UploadStatus::Completed);
    assert_eq!(upload.file.unwrap().bytes, data.len() as u64);
    assert_waited_for_tokens(&retried.lock().unwrap());
}

/// Parts were refused, every time with a 429 the client read (never a connection broken
/// while it still sent the Part's body), and each refused Part waited as long as the server
/// said: one token's time (1 s) at most, never up to a minute.
fn assert_waited_for_tokens(retried: &[(u64, Failure)]) {
    assert!(!retried.is_empty(), "no Part was refused");
    for (delay, failure) in retried {
        let Failure::Status {
            status: 429,
            retry_after_ms,
            ..
        } = failure
        else {
            panic!("a Part failed otherwise than with a 429: {retried:?}");
        };
        assert_eq!(Some(*delay), *retry_after_ms, "{retried:?}");
        assert!((1..=1000).contains(delay), "{retried:?}");
    }
}
