//! Isolation: two keys, two owners. Every endpoint given the other owner's ids answers 404
//! and changes nothing (not a byte in the data dir); no key, a wrong key and a malformed
//! `Authorization` header answer 401 `invalid_api_key`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use uploads_core::types::{FileObject, Upload};
use uploads_server::Server;

use crate::support::{
    Client, RawOutcome, Reply, block_on, file_body, md5_hex, multipart_content_type, part_body,
    raw_body, raw_exchange, raw_head, shared_memory, tree,
};

const KEY_A: &str = "sk-alpha-0123456789";
const KEY_B: &str = "sk-beta-9876543210";

/// Every file under `root` with its bytes: equal snapshots mean nothing changed on disk.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    tree(root)
        .into_iter()
        .map(|path| {
            let full = root.join(&path);
            let bytes = full.is_file().then(|| std::fs::read(&full).unwrap());
            (path, bytes)
        })
        .collect()
}

/// One request of every endpoint, aimed at the given ids.
fn every_endpoint(upload: &str, file: &str) -> Vec<(Method, String, Option<String>, Bytes)> {
    let json = Some("application/json".to_owned());
    let multipart = Some(multipart_content_type());
    vec![
        (
            Method::POST,
            "/v1/uploads".to_owned(),
            json.clone(),
            Bytes::from_static(
                br#"{"filename":"x.txt","purpose":"user_data","bytes":1,"mime_type":"text/plain"}"#,
            ),
        ),
        (
            Method::POST,
            format!("/v1/uploads/{upload}/parts"),
            multipart.clone(),
            Bytes::from(part_body(b"intruder")),
        ),
        (
            Method::POST,
            format!("/v1/uploads/{upload}/complete"),
            json,
            Bytes::from(r#"{"part_ids":[]}"#),
        ),
        (
            Method::POST,
            format!("/v1/uploads/{upload}/cancel"),
            None,
            Bytes::new(),
        ),
        (Method::GET, "/v1/files".to_owned(), None, Bytes::new()),
        (
            Method::POST,
            "/v1/files".to_owned(),
            multipart,
            Bytes::from(file_body(b"filename=\"x.txt\"", "user_data", b"intruder")),
        ),
        (Method::GET, format!("/v1/files/{file}"), None, Bytes::new()),
        (
            Method::DELETE,
            format!("/v1/files/{file}"),
            None,
            Bytes::new(),
        ),
        (
            Method::GET,
            format!("/v1/files/{file}/content"),
            None,
            Bytes::new(),
        ),
    ]
}

#[track_caller]
fn assert_not_found(reply: &Reply, kind: &str, id: &str, case: &str) {
    assert_eq!(
        reply.status.as_u16(),
        404,
        "{case}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let error = reply.error().error;
    assert_eq!(
        error.message,
        format!("No such {kind} object: {id}"),
        "{case}"
    );
    assert_eq!(error.kind, "invalid_request_error", "{case}");
}

#[test]
fn another_owners_ids_answer_404_and_change_nothing() {
    let _memory = shared_memory();
    block_on(another_owners_ids_answer_404_and_change_nothing_run());
}

/// What owner A holds: a pending upload with a part, a completed one, a cancelled one and a
/// File made by `POST /files`.
struct Holdings {
    pending: Upload,
    pending_part: String,
    completed: Upload,
    completed_part: String,
    cancelled: Upload,
    direct: FileObject,
}

impl Holdings {
    async fn create(a: &Client) -> Self {
        let pending = a.new_upload("pending.txt", 5).await;
        let pending_part = a.new_part(pending.id.as_str(), b"hello").await;
        let completed = a.new_upload("completed.txt", 5).await;
        let completed_part = a.new_part(completed.id.as_str(), b"world").await;
        let completed: Upload = a
            .complete(
                completed.id.as_str(),
                std::slice::from_ref(&completed_part),
                None,
            )
            .await
            .unwrap()
            .expect(200)
            .json();
        let cancelled = a.new_upload("cancelled.txt", 5).await;
        a.cancel(cancelled.id.as_str()).await.unwrap().expect(200);
        let direct: FileObject = a
            .create_file_raw(file_body(
                b"filename=\"direct.txt\"",
                "user_data",
                b"direct",
            ))
            .await
            .unwrap()
            .expect(200)
            .json();
        Self {
            pending,
            pending_part,
            completed,
            completed_part,
            cancelled,
            direct,
        }
    }

    fn completed_file(&self) -> &FileObject {
        self.completed.file.as_ref().expect("completed")
    }

    /// Owner B aims every endpoint at these objects: each answers 404.
    async fn assert_hidden_from(&self, b: &Client) {
        for upload in [&self.pending.id, &self.completed.id, &self.cancelled.id] {
            let upload = upload.as_str();
            let reply = b.add_part(upload, b"intruder").await.unwrap();
            assert_not_found(&reply, "Upload", upload, "add part");
            let reply = b
                .complete(upload, std::slice::from_ref(&self.pending_part), None)
                .await
                .unwrap();
            assert_not_found(&reply, "Upload", upload, "complete");
            let reply = b.cancel(upload).await.unwrap();
            assert_not_found(&reply, "Upload", upload, "cancel");
        }
        for file in [&self.completed_file().id, &self.direct.id] {
            let file = file.as_str();
            let reply = b.retrieve_file(file).await.unwrap();
            assert_not_found(&reply, "File", file, "retrieve");
            let reply = b.content(file).await.unwrap();
            assert_not_found(&reply, "File", file, "content");
            let reply = b.delete_file(file).await.unwrap();
            assert_not_found(&reply, "File", file, "delete");
        }
        assert!(b.files().await.is_empty(), "B lists A's files");
        // Nor can B borrow A's parts into an upload of its own.
        let own = b.new_upload("own.txt", 5).await;
        for part in [&self.pending_part, &self.completed_part] {
            let reply = b
                .complete(own.id.as_str(), std::slice::from_ref(part), None)
                .await
                .unwrap();
            reply.expect(400);
            assert_eq!(reply.error().error.param.as_deref(), Some("part_ids"));
        }
    }

    /// Owner A still finds everything as it was, and can finish its pending upload.
    async fn assert_intact_for(self, a: &Client) {
        for (file, bytes) in [
            (&self.completed_file().id, &b"world"[..]),
            (&self.direct.id, b"direct"),
        ] {
            let content = a
                .content(file.as_str())
                .await
                .unwrap()
                .expect(200)
                .body
                .clone();
            assert_eq!(&content[..], bytes);
        }
        let replayed: Upload = a
            .complete(self.completed.id.as_str(), &[self.completed_part], None)
            .await
            .unwrap()
            .expect(200)
            .json();
        assert_eq!(replayed, self.completed);
        let still_cancelled: Upload = a
            .cancel(self.cancelled.id.as_str())
            .await
            .unwrap()
            .expect(200)
            .json();
        assert_eq!(still_cancelled.status.as_str(), "cancelled");
        let done: Upload = a
            .complete(
                self.pending.id.as_str(),
                &[self.pending_part],
                Some(&md5_hex([&b"hello"[..]])),
            )
            .await
            .unwrap()
            .expect(200)
            .json();
        let content = a
            .content(done.file.unwrap().id.as_str())
            .await
            .unwrap()
            .expect(200)
            .body
            .clone();
        assert_eq!(&content[..], b"hello");
    }
}

async fn another_owners_ids_answer_404_and_change_nothing_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .data_dir(dir.path())
        .api_key(KEY_A, "owner-a")
        .api_key(KEY_B, "owner-b")
        .start()
        .await
        .unwrap();
    let a = Client::new(server.local_addr(), Some(KEY_A));
    let b = Client::new(server.local_addr(), Some(KEY_B));
    let holdings = Holdings::create(&a).await;
    let a_files = a.files().await;
    let before = snapshot(dir.path());
    holdings.assert_hidden_from(&b).await;
    // B's own new upload aside, not a byte on disk changed.
    let mut after = snapshot(dir.path());
    after.retain(|path, _| before.contains_key(path));
    assert_eq!(after, before, "B's requests changed A's data");
    assert_eq!(a.files().await, a_files);
    holdings.assert_intact_for(&a).await;
}

#[test]
fn no_key_a_wrong_key_and_a_malformed_header_answer_401_on_every_endpoint() {
    let _memory = shared_memory();
    block_on(no_key_a_wrong_key_and_a_malformed_header_answer_401_on_every_endpoint_run());
}

async fn no_key_a_wrong_key_and_a_malformed_header_answer_401_on_every_endpoint_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .data_dir(dir.path())
        .api_key(KEY_A, "owner-a")
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let a = Client::new(addr, Some(KEY_A));
    let upload = a.new_upload("mine.txt", 4).await;
    let part = a.new_part(upload.id.as_str(), b"mine").await;
    let direct: FileObject = a
        .create_file_raw(file_body(b"filename=\"mine.txt\"", "user_data", b"mine"))
        .await
        .unwrap()
        .expect(200)
        .json();
    let before = snapshot(dir.path());
    let strangers = [
        ("no key", Client::new(addr, None)),
        (
            "a wrong key",
            Client::new(addr, Some("sk-not-a-key-at-all")),
        ),
        (
            "another owner's key with a typo",
            Client::new(addr, Some("sk-alpha-012345678")),
        ),
        ("no Bearer scheme", Client::with_authorization(addr, KEY_A)),
        (
            "Basic auth",
            Client::with_authorization(addr, "Basic c2stYWxwaGE6"),
        ),
        (
            "an empty bearer",
            Client::with_authorization(addr, "Bearer "),
        ),
    ];
    for (case, stranger) in &strangers {
        for (method, path, content_type, body) in
            every_endpoint(upload.id.as_str(), direct.id.as_str())
        {
            let reply = stranger
                .send(method.clone(), &path, content_type.as_deref(), body)
                .await
                .unwrap();
            assert_eq!(
                reply.status.as_u16(),
                401,
                "{case}, {method} {path}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            let error = reply.error().error;
            assert_eq!(error.code.as_deref(), Some("invalid_api_key"), "{case}");
            assert_eq!(error.kind, "invalid_request_error", "{case}");
        }
    }
    // Bytes that are not UTF-8 in the header, over raw TCP.
    for (method, path, content_type, body) in every_endpoint(upload.id.as_str(), direct.id.as_str())
    {
        let mut headers = vec![("content-length", body.len().to_string())];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let mut request = raw_head(method.as_str(), &path, &headers);
        // Insert `authorization: Bearer \xff\xfe` as the first header.
        let line_end = request.iter().position(|&b| b == b'\n').unwrap() + 1;
        request.splice(
            line_end..line_end,
            b"authorization: Bearer \xff\xfe\r\n".iter().copied(),
        );
        request.extend_from_slice(&body);
        let outcome = raw_exchange(addr, &request).await;
        let RawOutcome::Answered { status: 401, bytes } = &outcome else {
            panic!("non-UTF-8 key, {method} {path}: {outcome:?}");
        };
        let error: uploads_core::types::ErrorBody =
            serde_json::from_slice(raw_body(bytes)).unwrap();
        assert_eq!(error.error.code.as_deref(), Some("invalid_api_key"));
    }
    assert_eq!(
        snapshot(dir.path()),
        before,
        "refused requests changed data"
    );
    // The owner is still served.
    a.complete(upload.id.as_str(), &[part], None)
        .await
        .unwrap()
        .expect(200);
}
