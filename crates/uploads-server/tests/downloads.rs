//! A download in flight when its File is deleted: it finishes with every byte it announced;
//! the Parts go once it ends (on the shared backend, where the download may run on another
//! instance, once the download grace has passed).

mod support;

use http::StatusCode;
use support::{KEY_A, TestServer, eventually, pattern, request_head, shared_backend, stored_parts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uploads_core::types::PartId;
use uploads_server::DOWNLOAD_GRACE_SECS;

/// Parts of the File: together far more than the socket buffers and the server's read-ahead,
/// so the download is still reading the first Part when the delete arrives.
const PARTS: usize = 3;
const PART_BYTES: usize = 8 << 20;

#[tokio::test]
async fn a_delete_during_a_download_never_truncates_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let data: Vec<Vec<u8>> = (0..PARTS).map(|i| pattern(PART_BYTES, i as u8)).collect();
    let upload = client.create_upload((PARTS * PART_BYTES) as u64).await.id;
    let mut parts = Vec::new();
    for part in &data {
        parts.push(client.add_part_ok(&upload, part).await.id);
    }
    let listed: Vec<&PartId> = parts.iter().collect();
    let file = client
        .complete_ok(&upload, &listed, None)
        .await
        .file
        .unwrap();

    let mut download = TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    download
        .write_all(&request_head(
            "GET",
            &format!("/v1/files/{}/content", file.id),
            Some(KEY_A),
            &[],
            None,
        ))
        .await
        .unwrap();
    let mut received = vec![0; 64 * 1024];
    download.read_exact(&mut received).await.unwrap();

    let deleted = client.delete(&file.id).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    // The Parts stay while the download reads them.
    assert_eq!(stored_parts(server.data_dir(), &upload).len(), PARTS);

    download.read_to_end(&mut received).await.unwrap();
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &received[head_end..];
    assert_eq!(body.len(), PARTS * PART_BYTES, "the download was cut short");
    assert!(body == data.concat(), "the download's bytes differ");
    if shared_backend() {
        // Another instance may be the one downloading: the bytes outlive the delete by the
        // download grace, then a sweep removes them.
        server.clock.advance(DOWNLOAD_GRACE_SECS + 1);
        let server = server.restart_after(|_| {}).await;
        assert!(stored_parts(server.data_dir(), &upload).is_empty());
    } else {
        let data_dir = server.data_dir().to_path_buf();
        eventually("the Parts are removed after the download", || {
            stored_parts(&data_dir, &upload).is_empty()
        })
        .await;
    }
}
