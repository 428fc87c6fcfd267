//! Both clients' progress through a link that stalls counts what has left the machine, not
//! what the sockets took: while the proxy in front of the server reads nothing, the
//! delivered bytes stay within what the server side has taken, though megabytes more were
//! handed to the client's sockets; released, the upload completes. (Linux: the clients read
//! each socket's `SIOCOUTQ`.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use uploads_core::types::Purpose;
use uploads_core::upload::UploadOptions;
use uploads_core::uploader::ProgressEvent;

use support::held_proxy::HeldProxy;
use support::{Adapter, Harness, Source};

with_both_adapters!(progress_through_a_stalled_link_counts_what_left_the_machine);

const MIB: u64 = 1024 * 1024;
const FILE: u64 = 48 * MIB;
/// What the proxy reads before it stops: the create request and the start of the parts.
const HOLD_AFTER: u64 = 4 * MIB;
const CONCURRENCY: u64 = 2;
/// What a part body may have reported sent before its client wrote it to the socket: the
/// chunk it handed over last (1 MiB for the async client, less for the blocking one), per
/// connection.
const HANDED_BUT_UNWRITTEN: u64 = CONCURRENCY * MIB;

/// The latest totals the progress callback saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    sent: u64,
    delivered: u64,
}

/// Polls every 10 ms until `done`, at most `tries` times; whether it happened.
fn eventually(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[cfg(target_os = "linux")]
fn progress_through_a_stalled_link_counts_what_left_the_machine<A: Adapter + Sync>() {
    let harness = Harness::start();
    let proxy = HeldProxy::start(harness.server().local_addr(), HOLD_AFTER);
    let (path, _) = harness.write_file("big.txt", FILE as usize);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorded = Arc::clone(&seen);
    let options = UploadOptions::new(Purpose::Assistants)
        .part_size(16 * MIB)
        .concurrency(CONCURRENCY as usize)
        .on_progress(move |event| {
            let mut seen = recorded.lock().unwrap();
            match *event {
                ProgressEvent::BytesSent {
                    total_sent,
                    total_delivered,
                    ..
                } => (seen.sent, seen.delivered) = (total_sent, total_delivered),
                ProgressEvent::Delivered {
                    total_delivered, ..
                } => seen.delivered = total_delivered,
                _ => {}
            }
        });
    let client = A::connect(&harness, &proxy.base_url(), None);
    let latest = || *seen.lock().unwrap();

    std::thread::scope(|scope| {
        let upload = scope.spawn(|| client.upload(Source::File(&path), options));
        // Held: the client's sockets fill, then nothing more is handed to them (the sent
        // total stays put for a second).
        let mut last = latest();
        let mut stable = 0;
        let settled = eventually(1_000, || {
            let now = latest();
            stable = if now.sent == last.sent && proxy.read() >= HOLD_AFTER {
                stable + 1
            } else {
                0
            };
            last = now;
            stable >= 100
        });
        assert!(
            settled,
            "the bytes sent never stopped growing: {last:?}, the proxy read {}",
            proxy.read()
        );
        // Samples of the sockets taken from now on see them as they stay: the delivered
        // bytes come down to what the server side took (a driver that does not sample
        // stays at sent).
        let (mut held, mut taken) = (latest(), proxy.taken());
        let came_down = eventually(6_000, || {
            (held, taken) = (latest(), proxy.taken());
            held.delivered <= taken + HANDED_BUT_UNWRITTEN
        });
        assert!(
            came_down,
            "delivered {} but the server side took {taken}: {held:?}",
            held.delivered
        );
        assert!(held.sent >= held.delivered + 2 * MIB, "{held:?}");

        proxy.release();
        let upload = upload.join().unwrap().unwrap();
        assert_eq!(upload.bytes, FILE);
        let done = latest();
        assert_eq!(done.delivered, FILE, "{done:?}");
    });
}

/// Elsewhere the clients cannot see their sockets: progress counts what was handed to them.
#[cfg(not(target_os = "linux"))]
fn progress_through_a_stalled_link_counts_what_left_the_machine<A: Adapter + Sync>() {}
