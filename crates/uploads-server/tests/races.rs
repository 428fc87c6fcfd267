//! Requests racing on one Upload: whoever loses gets the answer it would get had it arrived
//! second (a 400 for a complete that a cancel beat), never a 500 the SDKs would retry.

mod support;

use http::StatusCode;
use support::{TestServer, md5_hex, pattern};

/// Rounds of the race; each is a fresh Upload.
const ROUNDS: usize = 12;
/// Parts per Upload, listed in reverse so a complete's md5 reads them all again.
const PARTS: usize = 4;
const PART_BYTES: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_that_loses_to_a_cancel_gets_400_never_500() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let data: Vec<Vec<u8>> = (0..PARTS).map(|i| pattern(PART_BYTES, i as u8)).collect();
    let reversed: Vec<&[u8]> = data.iter().rev().map(Vec::as_slice).collect();
    let md5 = md5_hex(&reversed);
    let mut outcomes = Vec::new();
    for _ in 0..ROUNDS {
        let upload = client.create_upload((PARTS * PART_BYTES) as u64).await;
        let mut ids = Vec::new();
        for part in &data {
            ids.push(client.add_part_ok(&upload.id, part).await.id);
        }
        let listed: Vec<_> = ids.iter().rev().collect();
        let (completed, cancelled) = tokio::join!(
            client.complete(&upload.id, &listed, Some(&md5)),
            client.cancel(&upload.id),
        );
        // Exactly one wins; the loser is refused as if it came second.
        match (completed.status, cancelled.status) {
            (StatusCode::OK, StatusCode::BAD_REQUEST)
            | (StatusCode::BAD_REQUEST, StatusCode::OK) => {}
            other => panic!(
                "{other:?}: complete {} / cancel {}",
                completed.text(),
                cancelled.text()
            ),
        }
        outcomes.push(completed.status);
    }
    println!(
        "complete won {} of {ROUNDS}",
        outcomes.iter().filter(|s| **s == StatusCode::OK).count()
    );
}
