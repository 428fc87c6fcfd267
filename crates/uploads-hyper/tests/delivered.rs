//! Progress through a link that stalls counts what has left the machine, not what the
//! sockets took: while the proxy in front of the server reads nothing, the delivered bytes
//! stay within what the server side has taken, though megabytes more were handed to the
//! client's sockets; released, the upload completes.

#[path = "support/held_proxy.rs"]
mod held_proxy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use held_proxy::HeldProxy;
use uploads_core::api::ClientConfig;
use uploads_core::types::Purpose;
use uploads_hyper::{Client, ProgressEvent, UploadOptions};

const MIB: u64 = 1024 * 1024;
const FILE: u64 = 48 * MIB;
/// What the proxy reads before it stops: the create request and the start of the parts.
const HOLD_AFTER: u64 = 4 * MIB;
const CONCURRENCY: u64 = 2;
/// What a part body may have reported sent before hyper wrote it to the socket: the chunk
/// (1 MiB) it handed over last, per connection.
const HANDED_BUT_UNWRITTEN: u64 = CONCURRENCY * MIB;

/// The latest totals the progress callback saw, and how many events carried them.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    sent: u64,
    delivered: u64,
    events: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_through_a_stalled_link_counts_what_left_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let server = uploads_server::Server::builder()
        .data_dir(dir.path().join("server"))
        .api_key("sk-test", "owner-a")
        .start()
        .await
        .unwrap();
    let proxy = HeldProxy::start(server.local_addr(), HOLD_AFTER);
    let path = dir.path().join("big.txt");
    std::fs::write(&path, vec![7u8; FILE as usize]).unwrap();

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
                } => {
                    seen.sent = total_sent;
                    seen.delivered = total_delivered;
                }
                ProgressEvent::Delivered {
                    total_delivered, ..
                } => {
                    seen.delivered = total_delivered;
                }
                _ => return,
            }
            seen.events += 1;
        });
    let client = Client::new(ClientConfig::new(proxy.base_url()).with_api_key("sk-test"));
    let upload = tokio::spawn(async move { client.upload_file(&path, options).await });

    let latest = || *seen.lock().unwrap();
    // Held: the client's sockets fill, then nothing more is handed to them.
    let mut stable = 0;
    let mut last = latest();
    for _ in 0..1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = latest();
        stable = if now.sent == last.sent && proxy.read() >= HOLD_AFTER {
            stable + 1
        } else {
            0
        };
        last = now;
        if stable == 100 {
            break;
        }
    }
    assert_eq!(
        stable,
        100,
        "the bytes sent never stopped growing: {last:?}, the proxy read {}, the upload ended: {}",
        proxy.read(),
        if upload.is_finished() {
            format!("{:?}", upload.await)
        } else {
            String::new()
        }
    );
    // Samples of the sockets taken from now on see them as they stay: the delivered bytes
    // come down to what the server side took (a driver that does not sample stays at sent).
    let mut held = latest();
    let mut taken = proxy.taken();
    for _ in 0..6_000 {
        if held.delivered <= taken + HANDED_BUT_UNWRITTEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        (held, taken) = (latest(), proxy.taken());
    }
    assert!(
        held.delivered <= taken + HANDED_BUT_UNWRITTEN,
        "delivered {} but the server side took {taken}: {held:?}",
        held.delivered
    );
    assert!(held.sent >= held.delivered + 2 * MIB, "{held:?}");

    proxy.release();
    let upload = tokio::time::timeout(Duration::from_mins(10), upload)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(upload.bytes, FILE);
    let done = latest();
    assert!(
        done.delivered > held.delivered && done.delivered <= FILE,
        "{done:?}"
    );
}
