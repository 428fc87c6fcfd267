//! Peak memory of uploads much larger than one part, with both clients. This binary counts
//! every allocation with a global allocator (its own: a global allocator is per binary), so
//! the bound covers the client and the in-process server together; the server streams parts
//! to disk too, so the bound still says that no part is ever held whole.

mod support;

use peak_alloc::PeakAlloc;
use uploads_core::limits::MIB;
use uploads_core::types::{Purpose, UploadStatus};
use uploads_core::upload::UploadOptions;

use support::{Adapter, Harness, Hyper, Source, Ureq};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const PART: u64 = 16 * MIB;
const FILE: u64 = 4 * PART;

/// Uploads a file of four 16 MiB parts, three in flight with the md5 on, and returns the
/// most bytes allocated at once beyond what was allocated before.
fn peak_while_uploading<A: Adapter>(harness: &Harness, name: &str) -> usize {
    let (path, data) = harness.write_file(name, FILE as usize);
    drop(data);
    let client: A = harness.client();
    let options = UploadOptions::new(Purpose::FineTune)
        .part_size(PART)
        .concurrency(3);
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let upload = client.upload(Source::File(&path), options).unwrap();
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    assert_eq!(upload.status, UploadStatus::Completed);
    assert_eq!(upload.file.unwrap().bytes, FILE);
    peak
}

#[test]
fn peak_memory_stays_below_one_part_with_both_clients() {
    let harness = Harness::start();
    let hyper = peak_while_uploading::<Hyper>(&harness, "hyper.jsonl");
    let ureq = peak_while_uploading::<Ureq>(&harness, "ureq.jsonl");
    eprintln!(
        "peak allocated while uploading 64 MiB in 16 MiB parts: hyper {hyper} B, ureq {ureq} B"
    );
    assert!(hyper < PART as usize, "hyper peaked at {hyper} bytes");
    assert!(ureq < PART as usize, "ureq peaked at {ureq} bytes");
}
