//! Every row of the behaviour table in ARCHITECTURE.md, over HTTP: the status, OpenAI's
//! `type`, `param` and message, and the Upload's state afterwards, proved by a follow-up
//! request (a complete that works, a cancel that answers the same, the content read back).

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use support::{
    Client, KEY_A, Protocol, T0, TestServer, eventually, full, md5_hex, no_temp_files_eventually,
    stored_parts,
};
use uploads_core::limits::{Limits, NOT_JSON_MESSAGE};
use uploads_core::types::{FileObject, Upload, UploadStatus};

const PURPOSES: &str = "['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals']";

#[tokio::test]
async fn invalid_create_fields_are_400_naming_the_param_and_create_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let cases = [
        (
            r#"{"purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#,
            Some("filename"),
            "'filename' is a required property".to_owned(),
        ),
        (
            r#"{"filename":"a","purpose":"user_data","mime_type":"text/plain"}"#,
            Some("bytes"),
            "'bytes' is a required property".to_owned(),
        ),
        (
            r#"{"filename":"a","purpose":"user_data","bytes":"ten","mime_type":"text/plain"}"#,
            Some("bytes"),
            "'ten' is not of type 'integer' - 'bytes'".to_owned(),
        ),
        (
            r#"{"filename":"a","purpose":"nope","bytes":1,"mime_type":"text/plain"}"#,
            Some("purpose"),
            format!("'nope' is not one of {PURPOSES} - 'purpose'"),
        ),
        (
            r#"{"filename":"a.png","purpose":"batch","bytes":1,"mime_type":"image/png"}"#,
            Some("mime_type"),
            "Invalid MIME type 'image/png' for purpose 'batch'. Supported MIME types: \
             text/jsonl, application/jsonl, application/x-jsonlines, application/x-ndjson, \
             application/json, text/plain"
                .to_owned(),
        ),
        (
            r#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain","expires_after":{"anchor":"created_at","seconds":3599}}"#,
            Some("expires_after.seconds"),
            "3599 is less than the minimum of 3600 - 'expires_after.seconds'".to_owned(),
        ),
        (
            r#"{"filename":"a","purpose":"user_data","bytes":1,"mime_type":"text/plain","expires_after":{"anchor":"created_at","seconds":2592001}}"#,
            Some("expires_after.seconds"),
            "2592001 is greater than the maximum of 2592000 - 'expires_after.seconds'".to_owned(),
        ),
        ("{not json", None, NOT_JSON_MESSAGE.to_owned()),
    ];
    for (body, param, message) in cases {
        client.create_upload_json(body).await.assert_error(
            StatusCode::BAD_REQUEST,
            param,
            &message,
        );
    }
    assert_eq!(
        support::stored_uploads(server.data_dir()),
        0,
        "a refused create stored an Upload"
    );
}

#[tokio::test]
async fn unknown_uploads_and_files_are_404_with_openai_messages() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = "upload_doesnotexist".into();
    let missing_upload = "No such Upload object: upload_doesnotexist";
    for reply in [
        client.add_part(&upload, b"x").await,
        client.complete(&upload, &[&"part_x".into()], None).await,
        client.cancel(&upload).await,
    ] {
        reply.assert_error(StatusCode::NOT_FOUND, Some("upload_id"), missing_upload);
    }
    let file = "file-doesnotexist".into();
    let missing_file = "No such File object: file-doesnotexist";
    for reply in [
        client.retrieve(&file).await,
        client.content(&file).await,
        client.delete(&file).await,
    ] {
        reply.assert_error(StatusCode::NOT_FOUND, Some("file_id"), missing_file);
    }
}

#[tokio::test]
async fn missing_wrong_and_malformed_keys_are_401_and_change_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    let path = format!("/v1/uploads/{}/parts", upload.id);
    let part_form = |data: &[u8]| {
        let form = uploads_core::multipart::MultipartBody::upload_part(
            &support::next_boundary(),
            data.len() as u64,
        );
        (form.content_type.clone(), form.assemble(data))
    };
    let without_key = client.with_key(None);
    let (content_type, body) = part_form(b"no");
    let reply = without_key
        .send(Method::POST, &path, Some(&content_type), full(body))
        .await;
    assert_401(&reply, "You didn't provide an API key.");
    let wrong = client.with_key(Some("sk-wrong-key-000000000"));
    assert_401(
        &wrong.add_part(&upload.id, b"no").await,
        "Incorrect API key provided: sk-w**************0000.",
    );
    let raw = support::raw_exchange(
        server.running.local_addr(),
        &support::request_head(
            "POST",
            "/v1/uploads",
            None,
            &[("Authorization", &format!("Basic {KEY_A}"))],
            Some(2),
        )
        .into_iter()
        .chain(*b"{}")
        .collect::<Vec<u8>>(),
    )
    .await;
    assert_401(
        &raw,
        "Invalid authorization header: expected 'Bearer YOUR_KEY'.",
    );

    // Nothing was stored: the Upload still takes exactly two bytes and completes.
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
    let part = client.add_part_ok(&upload.id, b"ok").await;
    client.complete_ok(&upload.id, &[&part.id], None).await;
    assert_eq!(support::stored_uploads(server.data_dir()), 1);
}

#[track_caller]
fn assert_401(reply: &support::Reply, message_start: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let error = reply.error();
    assert_eq!(error.kind, support::INVALID_REQUEST);
    assert_eq!(error.code.as_deref(), Some("invalid_api_key"));
    assert_eq!(error.param, None);
    assert!(
        error.message.starts_with(message_start),
        "{:?} does not start with {message_start:?}",
        error.message
    );
}

#[tokio::test]
async fn a_part_over_the_limit_is_413_on_data_and_nothing_is_stored() {
    let server = TestServer::start_with(|builder| {
        builder.limits(Limits::default().with_max_part_bytes(1024))
    })
    .await;
    let client = server.client().await;
    let upload = client.create_upload(10).await;
    client.add_part(&upload.id, &[7; 1025]).await.assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("data"),
        "'data' is larger than the maximum of 1024 bytes.",
    );
    no_temp_files_eventually(server.data_dir()).await;
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
    let part = client.add_part_ok(&upload.id, b"0123456789").await;
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, "0123456789");
}

#[tokio::test]
async fn parts_and_complete_on_a_completed_upload_are_400_and_change_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(4).await;
    let first = client.add_part_ok(&upload.id, b"ab").await;
    let second = client.add_part_ok(&upload.id, b"cd").await;
    let completed = client
        .complete_ok(&upload.id, &[&first.id, &second.id], None)
        .await;
    client.add_part(&upload.id, b"ef").await.assert_error(
        StatusCode::BAD_REQUEST,
        None,
        "Cannot add parts to an Upload that is already completed.",
    );
    client
        .complete(&upload.id, &[&second.id, &first.id], None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            Some("part_ids"),
            &format!(
                "Upload {} is already completed with a different list of part_ids.",
                upload.id
            ),
        );
    client
        .complete(
            &upload.id,
            &[&first.id, &second.id],
            Some(&md5_hex(&[b"abcd"])),
        )
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            Some("md5"),
            &format!(
                "Upload {} is already completed with a different md5.",
                upload.id
            ),
        );
    // Unchanged: the same File, the same bytes, and a retry with the same list replays.
    let file = completed.file.clone().unwrap();
    assert_eq!(client.content_ok(&file.id).await, "abcd");
    let replay = client
        .complete_ok(&upload.id, &[&first.id, &second.id], None)
        .await;
    assert_eq!(replay, completed);
    assert_eq!(client.retrieve(&file.id).await.ok::<FileObject>(), file);
}

#[tokio::test]
async fn parts_complete_and_cancel_after_cancel() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    let part = client.add_part_ok(&upload.id, b"ab").await;
    let cancelled: Upload = client.cancel(&upload.id).await.ok();
    assert_eq!(cancelled.status, UploadStatus::Cancelled);
    assert_eq!(cancelled.file, None);
    client.add_part(&upload.id, b"cd").await.assert_error(
        StatusCode::BAD_REQUEST,
        None,
        "Cannot add parts to an Upload that is already cancelled.",
    );
    client
        .complete(&upload.id, &[&part.id], None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Cannot complete an Upload that is already cancelled.",
        );
    // Cancel twice: 200, the same Upload; its Parts' bytes are gone.
    let again: Upload = client.cancel(&upload.id).await.ok();
    assert_eq!(again, cancelled);
    assert!(stored_parts(server.data_dir(), &upload.id).is_empty());
}

#[tokio::test]
async fn cancel_after_complete_is_400_and_the_file_stays() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    let part = client.add_part_ok(&upload.id, b"ab").await;
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    client.cancel(&upload.id).await.assert_error(
        StatusCode::BAD_REQUEST,
        None,
        "Cannot cancel an Upload that is already completed.",
    );
    assert_eq!(client.content_ok(&file.id).await, "ab");
}

#[tokio::test]
async fn complete_with_a_bad_part_list_is_400_on_part_ids_and_stays_pending() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(4).await;
    let other = client.create_upload(2).await;
    let foreign = client.add_part_ok(&other.id, b"zz").await;
    let parts = [
        client.add_part_ok(&upload.id, b"ab").await,
        client.add_part_ok(&upload.id, b"cd").await,
    ];
    let [first, second] = [&parts[0].id, &parts[1].id];
    let unknown = "part_unknown".into();
    let cases = [
        (
            vec![first, &unknown],
            format!("Part part_unknown does not belong to Upload {}.", upload.id),
        ),
        (
            vec![first, &foreign.id],
            format!(
                "Part {} does not belong to Upload {}.",
                foreign.id, upload.id
            ),
        ),
        (
            vec![first, first],
            format!("Part {first} is listed more than once."),
        ),
        (vec![], "[] is too short - 'part_ids'".to_owned()),
        (
            vec![second],
            "The number of bytes uploaded upon completion (2) does not match the number of \
             bytes initially specified when creating the Upload (4)."
                .to_owned(),
        ),
    ];
    for (listed, message) in cases {
        client
            .complete(&upload.id, &listed, None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, Some("part_ids"), &message);
    }
    // Still pending: it takes another Part, and completes with the right list.
    let extra = client.add_part_ok(&upload.id, b"ef").await;
    let file = client
        .complete_ok(&upload.id, &[&extra.id, second], None)
        .await
        .file
        .unwrap();
    assert_eq!(client.content_ok(&file.id).await, "efcd");
    // The other Upload's Part is still its own.
    client.complete_ok(&other.id, &[&foreign.id], None).await;
}

#[tokio::test]
async fn a_bad_md5_is_400_on_md5_and_stays_pending() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(5).await;
    let part = client.add_part_ok(&upload.id, b"hello").await;
    client
        .complete(&upload.id, &[&part.id], Some("xyz"))
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            Some("md5"),
            "'xyz' does not match '^[0-9a-fA-F]{32}$' - 'md5'",
        );
    let wrong = md5_hex(&[b"world"]);
    client
        .complete(&upload.id, &[&part.id], Some(&wrong))
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            Some("md5"),
            &format!(
                "The md5 of the uploaded bytes (5d41402abc4b2a76b9719d911017c592) does not \
                 match the md5 given ({wrong})."
            ),
        );
    // Still pending; an upper-case md5 is the same md5.
    let right = md5_hex(&[b"hello"]).to_ascii_uppercase();
    let completed = client
        .complete_ok(&upload.id, &[&part.id], Some(&right))
        .await;
    // Retried with the same ids and md5: 200, the same Upload and File.
    let replay = client
        .complete_ok(&upload.id, &[&part.id], Some(&right))
        .await;
    assert_eq!(replay, completed);
    assert_eq!(replay.file.unwrap().id, completed.file.unwrap().id);
}

#[tokio::test]
async fn expiry_follows_the_clock() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    assert_eq!(upload.expires_at, T0 + 3600);
    server.clock.set(upload.expires_at - 1);
    let part = client.add_part_ok(&upload.id, b"ab").await;
    server.clock.set(upload.expires_at);
    for (reply, action) in [
        (client.add_part(&upload.id, b"cd").await, "add parts to"),
        (
            client.complete(&upload.id, &[&part.id], None).await,
            "complete",
        ),
        (client.cancel(&upload.id).await, "cancel"),
    ] {
        reply.assert_error(
            StatusCode::BAD_REQUEST,
            None,
            &format!("Cannot {action} an Upload that is already expired."),
        );
    }
}

#[tokio::test]
async fn parts_beyond_the_declared_size_are_accepted_and_only_listed_ones_count() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(4).await;
    let parts = [
        client.add_part_ok(&upload.id, b"ab").await,
        client.add_part_ok(&upload.id, b"xx").await,
        client.add_part_ok(&upload.id, b"cd").await,
    ];
    assert_eq!(stored_parts(server.data_dir(), &upload.id).len(), 3);
    let file = client
        .complete_ok(&upload.id, &[&parts[0].id, &parts[2].id], None)
        .await
        .file
        .unwrap();
    assert_eq!(file.bytes, 4);
    assert_eq!(client.content_ok(&file.id).await, "abcd");
    let mut listed = vec![parts[0].id.to_string(), parts[2].id.to_string()];
    listed.sort();
    assert_eq!(
        stored_parts(server.data_dir(), &upload.id),
        listed,
        "the unlisted Part's bytes are removed"
    );
}

#[tokio::test]
async fn expires_after_on_create_sets_the_files_expires_at() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload: Upload = client
        .create_upload_json(
            r#"{"filename":"a.txt","purpose":"user_data","bytes":2,"mime_type":"text/plain","expires_after":{"anchor":"created_at","seconds":7200}}"#,
        )
        .await
        .ok();
    let part = client.add_part_ok(&upload.id, b"ab").await;
    server.clock.advance(10);
    let file = client
        .complete_ok(&upload.id, &[&part.id], None)
        .await
        .file
        .unwrap();
    assert_eq!(
        (file.created_at, file.expires_at),
        (T0 + 10, Some(T0 + 10 + 7200))
    );
    assert_eq!(client.retrieve(&file.id).await.ok::<FileObject>(), file);
    server.clock.set(T0 + 10 + 7200 - 1);
    assert_eq!(client.content_ok(&file.id).await, "ab");
    server.clock.set(T0 + 10 + 7200);
    client.retrieve(&file.id).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("file_id"),
        &format!("No such File object: {}", file.id),
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.get("/v1/nope").await.assert_error(
        StatusCode::NOT_FOUND,
        None,
        "Invalid URL (GET /v1/nope)",
    );
    client.get("/v2/files").await.assert_error(
        StatusCode::NOT_FOUND,
        None,
        "Invalid URL (GET /v2/files)",
    );
    client.get("/v1/uploads").await.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "Method not allowed (GET /v1/uploads)",
    );
    client
        .send(Method::PUT, "/v1/files/file-1", None, full(""))
        .await
        .assert_error(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "Method not allowed (PUT /v1/files/file-1)",
        );
}

#[tokio::test]
async fn a_405_says_which_methods_are_allowed() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let reply = client.get("/v1/uploads").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers.get(http::header::ALLOW).unwrap(), "POST");
}

#[tokio::test]
async fn an_http2_client_gets_the_same_answers() {
    let server = TestServer::start().await;
    let client = Client::connect(server.running.local_addr(), Protocol::Http2, Some(KEY_A)).await;
    let upload = client.create_upload(3).await;
    client.complete(&upload.id, &[], None).await.assert_error(
        StatusCode::BAD_REQUEST,
        Some("part_ids"),
        "[] is too short - 'part_ids'",
    );
    let part = client.add_part_ok(&upload.id, b"abc").await;
    client.complete_ok(&upload.id, &[&part.id], None).await;
}

#[tokio::test]
async fn the_sweeper_drops_expired_bytes_keeps_answering_expired_then_forgets() {
    let server =
        TestServer::start_with(|builder| builder.sweep_interval(Duration::from_millis(10))).await;
    let client = server.client().await;
    let upload = client.create_upload(2).await;
    let part = client.add_part_ok(&upload.id, b"ab").await;
    server.clock.set(upload.expires_at);
    eventually("the expired Upload's Parts are removed", || {
        stored_parts(server.data_dir(), &upload.id).is_empty()
    })
    .await;
    client
        .complete(&upload.id, &[&part.id], None)
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            None,
            "Cannot complete an Upload that is already expired.",
        );
    // Kept for one more upload lifetime, then unknown.
    server.clock.set(upload.expires_at + 3600);
    eventually("the expired Upload is forgotten", || {
        !support::upload_stored(server.data_dir(), &upload.id)
    })
    .await;
    client.cancel(&upload.id).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("upload_id"),
        &format!("No such Upload object: {}", upload.id),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_completes_racing_get_the_same_file() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = client.create_upload(6).await;
    let part = client.add_part_ok(&upload.id, b"racing").await;
    let md5 = md5_hex(&[b"racing"]);
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (client, upload, part, md5) = (
                client.clone(),
                upload.id.clone(),
                part.id.clone(),
                md5.clone(),
            );
            tokio::spawn(async move { client.complete_ok(&upload, &[&part], Some(&md5)).await })
        })
        .collect();
    let mut files = Vec::new();
    for racer in racers {
        files.push(racer.await.unwrap().file.unwrap());
    }
    assert!(files.iter().all(|file| *file == files[0]), "{files:?}");
    assert_eq!(client.list_ids("").await, [files[0].id.clone()]);
    assert_eq!(client.content_ok(&files[0].id).await, "racing");
}

#[tokio::test]
async fn bad_list_queries_are_400_naming_the_param() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let file = client.upload_file(&[b"listed"]).await;
    for (query, param, message) in [
        (
            "limit=0",
            "limit",
            "0 is less than the minimum of 1 - 'limit'".to_owned(),
        ),
        (
            "limit=10001",
            "limit",
            "10001 is greater than the maximum of 10000 - 'limit'".to_owned(),
        ),
        (
            "limit=ten",
            "limit",
            "'ten' is not of type 'integer' - 'limit'".to_owned(),
        ),
        (
            "order=up",
            "order",
            "'up' is not one of ['asc', 'desc'] - 'order'".to_owned(),
        ),
        (
            "after=file-gone",
            "after",
            "No such File object: file-gone".to_owned(),
        ),
    ] {
        client
            .list(query)
            .await
            .assert_error(StatusCode::BAD_REQUEST, Some(param), &message);
    }
    assert_eq!(client.list_ids("limit=10000").await, [file.id]);
}

#[tokio::test]
async fn ids_that_would_be_paths_are_unknown_not_errors() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let upload = "..%2F..%2Fetc";
    client.cancel(&upload.into()).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("upload_id"),
        "No such Upload object: ../../etc",
    );
    client.content(&"..%2Ffiles%2Fx".into()).await.assert_error(
        StatusCode::NOT_FOUND,
        Some("file_id"),
        "No such File object: ../files/x",
    );
    if support::shared_backend() {
        assert!(support::stored_objects(server.data_dir()).is_empty());
    } else {
        assert_eq!(
            support::paths_under(server.data_dir()),
            [
                server.data_dir().join("files"),
                server.data_dir().join(uploads_server::store::LOCK_FILE),
                server.data_dir().join("uploads")
            ]
        );
    }
}

/// A file name is metadata, returned exactly as given, whatever it holds: a NUL too, on
/// every backend (PostgreSQL's `jsonb` cannot hold one, so the records are `json`), through
/// an Upload and through `POST /files`.
#[tokio::test]
async fn a_file_name_holding_a_nul_is_returned_exactly() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let filename = "nul\0byte.txt";
    let body = serde_json::json!({
        "filename": filename, "purpose": "user_data", "bytes": 3, "mime_type": "text/plain"
    });
    let reply = client.create_upload_json(&body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let upload: Upload = reply.json();
    assert_eq!(upload.filename, filename);
    let part = client.add_part_ok(&upload.id, b"abc").await;
    let completed = client.complete_ok(&upload.id, &[&part.id], None).await;
    let file = completed.file.unwrap();
    assert_eq!(file.filename, filename);
    let retrieved: FileObject = client.retrieve(&file.id).await.json();
    assert_eq!(retrieved.filename, filename);

    let (content_type, form) = support::file_form(&[("purpose", "user_data")], filename, b"abc");
    let reply = client
        .send(
            Method::POST,
            "/v1/files",
            Some(&content_type),
            support::full(form),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let direct: FileObject = reply.json();
    assert_eq!(direct.filename, filename);
    let listed: uploads_core::types::FileList = client.list("").await.json();
    let names: Vec<&str> = listed
        .data
        .iter()
        .map(|file| file.filename.as_str())
        .collect();
    assert_eq!(names, vec![filename, filename]);
}
