//! A bounded load: 200 concurrent small uploads and 4 large ones (32 MiB in 8 MiB parts)
//! against one in-process server. Every File must come back byte-exact (md5 of its content);
//! each request's latency is recorded and p50/p99 per kind printed for docs/BENCHMARKS.md
//! (measured, never asserted).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use uploads_core::types::Upload;
use uploads_server::Server;

use crate::support::{Client, Reply, Rng, block_on, exclusive_memory, md5_hex};

const SMALL_UPLOADS: u64 = 200;
const LARGE_UPLOADS: u64 = 4;
const LARGE_PART: usize = 8 * 1024 * 1024;
const LARGE_PARTS: usize = 4;

/// Latencies per request kind.
#[derive(Default)]
struct Latencies(Mutex<BTreeMap<&'static str, Vec<Duration>>>);

impl Latencies {
    /// Times one request.
    async fn time(
        &self,
        kind: &'static str,
        request: impl Future<Output = std::io::Result<Reply>>,
    ) -> Reply {
        let started = Instant::now();
        let reply = request
            .await
            .unwrap_or_else(|error| panic!("{kind}: {error}"));
        let elapsed = started.elapsed();
        self.0
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .push(elapsed);
        reply
    }

    /// A Markdown table: kind, count, p50, p99, max.
    fn table(&self) -> String {
        let mut table = String::from(
            "| request | count | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|---:|\n",
        );
        for (kind, samples) in self.0.lock().unwrap().iter_mut() {
            samples.sort();
            // Nearest-rank percentile.
            let at = |percent: usize| {
                let rank = (samples.len() * percent).div_ceil(100).max(1);
                samples[rank - 1].as_secs_f64() * 1000.0
            };
            let _ = writeln!(
                table,
                "| {kind} | {} | {:.1} | {:.1} | {:.1} |",
                samples.len(),
                at(50),
                at(99),
                at(100)
            );
        }
        table
    }
}

/// Create, send `parts` in parallel, complete with the md5, download and compare.
async fn upload(
    client: Client,
    latencies: Arc<Latencies>,
    name: String,
    parts: Vec<Vec<u8>>,
    large: bool,
) {
    let (part_kind, complete_kind, download_kind) = if large {
        (
            "part (8 MiB)",
            "complete (32 MiB, md5)",
            "download (32 MiB)",
        )
    } else {
        ("part (small)", "complete (small, md5)", "download (small)")
    };
    let bytes = parts.iter().map(Vec::len).sum::<usize>() as u64;
    let md5 = md5_hex(parts.iter().map(Vec::as_slice));
    let created: Upload = latencies
        .time("create", client.create_upload(&name, bytes))
        .await
        .expect(200)
        .json();
    let upload_id = created.id.as_str().to_owned();
    let mut sends = JoinSet::new();
    for (index, data) in parts.into_iter().enumerate() {
        let (client, latencies, upload_id) =
            (client.clone(), Arc::clone(&latencies), upload_id.clone());
        sends.spawn(async move {
            let part: uploads_core::types::UploadPart = latencies
                .time(part_kind, client.add_part(&upload_id, &data))
                .await
                .expect(200)
                .json();
            (index, part.id.as_str().to_owned())
        });
    }
    let mut part_ids = vec![String::new(); sends.len()];
    while let Some(joined) = sends.join_next().await {
        let (index, id) = joined.unwrap();
        part_ids[index] = id;
    }
    let done: Upload = latencies
        .time(
            complete_kind,
            client.complete(&upload_id, &part_ids, Some(&md5)),
        )
        .await
        .expect(200)
        .json();
    let file = done.file.expect("completed with a file");
    assert_eq!(file.bytes, bytes);
    let content = latencies
        .time(download_kind, client.content(file.id.as_str()))
        .await
        .expect(200)
        .body
        .clone();
    assert_eq!(md5_hex([&content[..]]), md5, "{name} is not byte-exact");
}

#[test]
fn two_hundred_small_and_four_large_uploads_complete_byte_exact() {
    let _memory = exclusive_memory();
    block_on(two_hundred_small_and_four_large_uploads_complete_byte_exact_run());
}

async fn two_hundred_small_and_four_large_uploads_complete_byte_exact_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .data_dir(dir.path())
        .api_key("sk-load", "load")
        .start()
        .await
        .unwrap();
    let client = Client::new(server.local_addr(), Some("sk-load"));
    let latencies = Arc::new(Latencies::default());
    let mut rng = Rng::new(0x10ad_0001);
    let mut uploads = JoinSet::new();
    for n in 0..LARGE_UPLOADS {
        let parts = (0..LARGE_PARTS).map(|_| rng.bytes(LARGE_PART)).collect();
        uploads.spawn(upload(
            client.clone(),
            Arc::clone(&latencies),
            format!("large-{n}.bin"),
            parts,
            true,
        ));
    }
    for n in 0..SMALL_UPLOADS {
        let parts = (0..rng.below(1..3))
            .map(|_| {
                let len = rng.below(1..64 * 1024) as usize;
                rng.bytes(len)
            })
            .collect();
        uploads.spawn(upload(
            client.clone(),
            Arc::clone(&latencies),
            format!("small-{n}.bin"),
            parts,
            false,
        ));
    }
    let started = Instant::now();
    while let Some(joined) = uploads.join_next().await {
        joined.unwrap();
    }
    let elapsed = started.elapsed();
    let files = client.files().await;
    assert_eq!(files.len() as u64, SMALL_UPLOADS + LARGE_UPLOADS);
    println!(
        "\nLoad: {SMALL_UPLOADS} small uploads (1-2 parts of < 64 KiB) and {LARGE_UPLOADS} of \
         32 MiB (4 x 8 MiB parts), all at once, one in-process server ({} build), loopback, \
         fsync'd store; wall time {:.2} s\n\n{}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        elapsed.as_secs_f64(),
        latencies.table()
    );
}
