//! The whole life of an Upload over real HTTP, on http1 and on h2: create, Parts sent in
//! parallel, complete in a shuffled order with an md5, read the content back, retrieve, list
//! (order, limit, after, purpose), delete.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use support::{
    Client, Protocol, T0, TestServer, eventually, md5_hex, next_boundary, pattern, streamed_body,
};
use uploads_core::multipart::MultipartBody;
use uploads_core::types::{
    DeletedFile, FileId, FileList, FileObject, FileStatus, PartId, UploadId, UploadPart,
    UploadStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_lifecycle_over_http1() {
    lifecycle(Protocol::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_lifecycle_over_http2() {
    lifecycle(Protocol::Http2).await;
}

async fn lifecycle(protocol: Protocol) {
    let server = TestServer::start().await;
    let client = Client::connect(server.running.local_addr(), protocol, Some(support::KEY_A)).await;
    let (big_upload, big) = upload_in_parallel_and_complete_shuffled(&server, &client).await;

    server.clock.advance(1);
    let batch = upload_small(&client, "batch", "application/jsonl", b"{\"a\":1}\n").await;
    server.clock.advance(1);
    let user = upload_small(&client, "user_data", "text/plain", b"last").await;
    assert_eq!(
        (big.created_at, batch.created_at, user.created_at),
        (T0, T0 + 1, T0 + 2)
    );
    listing(&client, [&big.id, &batch.id, &user.id]).await;

    let deleted: DeletedFile = client.delete(&big.id).await.ok();
    assert_eq!(
        deleted,
        DeletedFile {
            id: big.id.clone(),
            object: "file".into(),
            deleted: true
        }
    );
    let gone = format!("No such File object: {}", big.id);
    client
        .retrieve(&big.id)
        .await
        .assert_error(StatusCode::NOT_FOUND, Some("file_id"), &gone);
    client
        .content(&big.id)
        .await
        .assert_error(StatusCode::NOT_FOUND, Some("file_id"), &gone);
    client
        .delete(&big.id)
        .await
        .assert_error(StatusCode::NOT_FOUND, Some("file_id"), &gone);
    assert_eq!(client.list_ids("").await, vec![user.id, batch.id]);
    if support::shared_backend() {
        // A download on another instance may still be reading them: they go after the
        // download grace (tests/downloads.rs).
        assert_eq!(
            support::stored_parts(server.data_dir(), &big_upload).len(),
            4
        );
    } else {
        assert_eq!(
            support::stored_parts(server.data_dir(), &big_upload),
            Vec::<String>::new(),
            "a deleted File's bytes are removed"
        );
    }
}

/// Four Parts sent at once (all four are provably in the handler together), listed in
/// another order than they were sent and created.
async fn upload_in_parallel_and_complete_shuffled(
    server: &TestServer,
    client: &Client,
) -> (UploadId, FileObject) {
    let parts: Vec<Vec<u8>> = [3000, 1, 777, 4096]
        .iter()
        .zip(1..)
        .map(|(&len, seed)| pattern(len, seed))
        .collect();
    let total: usize = parts.iter().map(Vec::len).sum();
    let upload = client.create_upload(total as u64).await;
    assert_eq!(upload.status, UploadStatus::Pending);
    assert_eq!((upload.created_at, upload.expires_at), (T0, T0 + 3600));

    let mut held = Vec::new();
    let mut sends = Vec::new();
    for data in &parts {
        let form = MultipartBody::upload_part(&next_boundary(), data.len() as u64);
        let body = Bytes::from(form.assemble(data));
        let (sender, request_body) = streamed_body(body.len() as u64);
        let (client, path) = (client.clone(), format!("/v1/uploads/{}/parts", upload.id));
        sends.push(tokio::spawn(async move {
            let reply = client
                .send(Method::POST, &path, Some(&form.content_type), request_body)
                .await;
            reply.ok::<UploadPart>().id
        }));
        let half = body.len() / 2;
        sender.send(body.slice(..half)).await.unwrap();
        held.push((sender, body.slice(half..)));
    }
    let stats = server.running.stats();
    eventually("four Parts in flight at once", || {
        stats.peak_parts_in_flight() == 4
    })
    .await;
    for (sender, rest) in held {
        sender.send(rest).await.unwrap();
    }
    let mut part_ids: Vec<PartId> = Vec::new();
    for send in sends {
        part_ids.push(send.await.unwrap());
    }

    let order = [2, 0, 3, 1];
    let listed: Vec<&PartId> = order.iter().map(|&index| &part_ids[index]).collect();
    let expected: Vec<u8> = order
        .iter()
        .flat_map(|&index| parts[index].clone())
        .collect();
    let completed = client
        .complete_ok(&upload.id, &listed, Some(&md5_hex(&[&expected])))
        .await;
    let file = completed.file.unwrap();
    assert_eq!(completed.id, upload.id);
    assert_eq!(
        (
            file.bytes,
            file.filename.as_str(),
            file.purpose.as_str(),
            file.object.as_str()
        ),
        (total as u64, "data.bin", "user_data", "file")
    );
    assert_eq!(file.status, Some(FileStatus::Processed));
    assert_eq!(file.expires_at, None);

    assert_eq!(client.content_ok(&file.id).await, expected);
    let retrieved: FileObject = client.retrieve(&file.id).await.ok();
    assert_eq!(retrieved, file);
    (upload.id, file)
}

/// A one-Part Upload of `data` with this purpose and MIME type.
async fn upload_small(client: &Client, purpose: &str, mime: &str, data: &[u8]) -> FileObject {
    let upload: uploads_core::types::Upload = client
        .create_upload_json(&format!(
            r#"{{"filename":"small","purpose":"{purpose}","bytes":{},"mime_type":"{mime}"}}"#,
            data.len()
        ))
        .await
        .ok();
    let part = client.add_part_ok(&upload.id, data).await;
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, data);
    file
}

/// `GET /files` with every query parameter, over Files created oldest to newest.
async fn listing(client: &Client, [oldest, middle, newest]: [&FileId; 3]) {
    let page: FileList = client.list("").await.ok();
    assert_eq!(page.object, "list");
    let ids: Vec<&FileId> = page.data.iter().map(|file| &file.id).collect();
    assert_eq!(ids, [newest, middle, oldest], "desc by default");
    assert_eq!(
        (page.first_id.as_ref(), page.last_id.as_ref(), page.has_more),
        (Some(newest), Some(oldest), false)
    );

    assert_eq!(
        client.list_ids("order=asc").await,
        [oldest.clone(), middle.clone(), newest.clone()]
    );
    let first: FileList = client.list("limit=2").await.ok();
    assert_eq!(first.data.len(), 2);
    assert!(first.has_more);
    assert_eq!(first.last_id.as_ref(), Some(middle));
    let second: FileList = client.list(&format!("limit=2&after={middle}")).await.ok();
    assert_eq!(
        second.data.iter().map(|file| &file.id).collect::<Vec<_>>(),
        [oldest]
    );
    assert!(!second.has_more);
    let ascending: FileList = client
        .list(&format!("order=asc&limit=1&after={oldest}"))
        .await
        .ok();
    assert_eq!(ascending.first_id.as_ref(), Some(middle));
    assert!(ascending.has_more);

    assert_eq!(
        client.list_ids("purpose=batch").await,
        std::slice::from_ref(middle)
    );
    assert_eq!(
        client.list_ids("purpose=user_data").await,
        [newest.clone(), oldest.clone()]
    );
    assert_eq!(
        client.list_ids("purpose=vision").await,
        Vec::<FileId>::new()
    );
}

/// Parts sent in parallel reach the server in any order: those naming their position in the
/// file (as this workspace's clients do) are hashed in file order all the same, so a
/// complete with an md5 reads nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_naming_their_position_are_hashed_in_file_order_whatever_order_they_arrive_in() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let parts: Vec<Vec<u8>> = (0..5_u8).map(|seed| pattern(3000, seed)).collect();
    let chunks: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let upload = client.create_upload(15_000).await;
    let mut ids: Vec<Option<PartId>> = vec![None; 5];
    for index in [3, 1, 4, 0, 2] {
        ids[index] = Some(
            client
                .add_part_at(&upload.id, index as u32, chunks[index])
                .await
                .id,
        );
    }
    let ids: Vec<PartId> = ids.into_iter().map(Option::unwrap).collect();
    let listed: Vec<&PartId> = ids.iter().collect();
    let completed = client
        .complete_ok(&upload.id, &listed, Some(&md5_hex(&chunks)))
        .await;
    assert_eq!(server.running.stats().parts_reread_for_md5(), 0);
    assert_eq!(
        client.content_ok(&completed.file.unwrap().id).await,
        chunks.concat()
    );
}

/// Parts sent front to back are hashed while they arrive: a complete listing them in that
/// order reads nothing again; one listing another order reads what the chain cannot reuse,
/// and both verify the md5 of the listed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_md5_of_parts_sent_in_order_is_ready_at_complete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let parts: Vec<Vec<u8>> = (0..5_u8).map(|seed| pattern(3000, seed)).collect();
    let chunks: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();

    let upload = client.create_upload(15_000).await;
    let mut ids = Vec::new();
    for data in &chunks {
        ids.push(client.add_part_ok(&upload.id, data).await.id);
    }
    let listed: Vec<&PartId> = ids.iter().collect();
    let completed = client
        .complete_ok(&upload.id, &listed, Some(&md5_hex(&chunks)))
        .await;
    // The shared backend chains only Parts that name their position (those of one Upload
    // arrive on many instances, in any order): these are read at complete.
    let first_read = if support::shared_backend() { 5 } else { 0 };
    assert_eq!(server.running.stats().parts_reread_for_md5(), first_read);
    let file = completed.file.unwrap();
    assert_eq!(client.content_ok(&file.id).await, chunks.concat());

    let upload = client.create_upload(15_000).await;
    let mut ids = Vec::new();
    for data in &chunks {
        ids.push(client.add_part_ok(&upload.id, data).await.id);
    }
    // Listed with the first two swapped: nothing of the chain is the listed order's prefix.
    let listed: Vec<&PartId> = [1, 0, 2, 3, 4].iter().map(|&index| &ids[index]).collect();
    let swapped: Vec<&[u8]> = [1, 0, 2, 3, 4].iter().map(|&index| chunks[index]).collect();
    // The md5 of the order sent is not the md5 of the order listed.
    let refused = client
        .complete(&upload.id, &listed, Some(&md5_hex(&chunks)))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.error().param.as_deref(), Some("md5"));
    client
        .complete_ok(&upload.id, &listed, Some(&md5_hex(&swapped)))
        .await;
    assert_eq!(
        server.running.stats().parts_reread_for_md5(),
        first_read + 10,
        "two completes read all five"
    );
}

/// The clock jumps past an Upload's expiry, the sweeper removes its Parts, and the clock
/// steps back (NTP): the Upload stays expired, and its complete is refused (400), never
/// answered with a File whose bytes are gone. The same after a restart.
#[tokio::test]
async fn a_clock_stepped_back_never_completes_an_upload_whose_parts_were_swept() {
    async fn assert_stays_expired(server: &TestServer, upload: &UploadId, part: &PartId) {
        let client = server.client().await;
        client.complete(upload, &[part], None).await.assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Cannot complete an Upload that is already expired.",
        );
        client.add_part(upload, b"d").await.assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Cannot add parts to an Upload that is already expired.",
        );
        assert!(client.list_ids("").await.is_empty(), "no File was made");
    }

    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(3).await.id;
    let part = client.add_part_ok(&upload, b"abc").await.id;
    server.clock.set(T0 + 3600 + 60);
    // A restart sweeps at once.
    let server = server.restart_after(|_| {}).await;
    server.clock.set(T0 + 10);
    assert_stays_expired(&server, &upload, &part).await;
    let server = server.restart_after(|_| {}).await;
    assert_stays_expired(&server, &upload, &part).await;
}

/// A listed Part's bytes removed behind the server (an operator's cleanup, a bucket's
/// lifecycle rule): the complete is refused with 400 `part_ids` naming it, with or without
/// an md5, instead of acknowledging a File that can never be read; the Upload stays pending,
/// and completes once the Part is sent again.
#[tokio::test]
async fn a_part_removed_behind_the_server_is_refused_at_complete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(6).await.id;
    let kept = client.add_part_ok(&upload, b"abc").await.id;
    let lost = client.add_part_ok(&upload, b"def").await.id;
    support::remove_part_bytes(server.data_dir(), &upload, &lost).await;
    let md5 = md5_hex(&[b"abcdef"]);
    for md5 in [None, Some(md5.as_str())] {
        let reply = client.complete(&upload, &[&kept, &lost], md5).await;
        reply.assert_error(
            StatusCode::BAD_REQUEST,
            Some("part_ids"),
            &format!(
                "The data of these Parts is no longer stored: {lost}. Add them again and complete with the new Part ids."
            ),
        );
    }
    assert!(client.list_ids("").await.is_empty(), "no File was made");
    let again = client.add_part_ok(&upload, b"def").await.id;
    let completed = client
        .complete_ok(&upload, &[&kept, &again], Some(&md5))
        .await;
    assert_eq!(
        client.content_ok(&completed.file.unwrap().id).await,
        &b"abcdef"[..]
    );
}
