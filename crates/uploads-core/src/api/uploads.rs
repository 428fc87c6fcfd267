//! The Uploads operations: create, add part, complete, cancel. Each builds its request here
//! and parses its response here.

use bytes::Bytes;
use http::{Method, Request, Response};

use super::config::{
    ACCEPT_JSON, BuildError, ClientConfig, id_path, set_content_length, with_data,
};
use super::response::{ResponseError, parse};
use crate::multipart::{Boundary, MultipartBody};
use crate::types::{CompleteUploadRequest, CreateUploadRequest, Upload, UploadId, UploadPart};

/// The header naming a Part's 0-based position in the file (`x-uploads-part-index: 3`),
/// which [`ClientConfig::add_upload_part_at`] sends. A hint only: OpenAI ignores headers it
/// does not know; this workspace's server hashes a pending Upload's Parts in that order as
/// they arrive (parts sent in parallel reach it in any order), so that a complete with an
/// md5 reads nothing again.
pub const PART_INDEX_HEADER: &str = "x-uploads-part-index";

/// The Part position a request names in [`PART_INDEX_HEADER`], when it names one that
/// parses (a hint: anything else is no position).
pub fn part_index(headers: &http::HeaderMap) -> Option<u32> {
    headers.get(PART_INDEX_HEADER)?.to_str().ok()?.parse().ok()
}

/// The path of one Upload, or of one of its actions.
fn upload_path(upload_id: &UploadId, action: &str) -> Result<String, BuildError> {
    id_path("uploads", "upload_id", upload_id.as_str(), action)
}

impl ClientConfig {
    /// `POST {base}/uploads` with the request as JSON. Parse the answer with
    /// [`parse_create_upload`].
    pub fn create_upload(
        &self,
        request: &CreateUploadRequest,
    ) -> Result<Request<Bytes>, BuildError> {
        self.json_request("/uploads", request)
    }

    /// The head of `POST {base}/uploads/{id}/parts` for a Part encoded as `body` (see
    /// [`MultipartBody::upload_part`]). The adapter MUST send exactly `body.head`, then the
    /// data (`content_length - head - tail` bytes), then `body.tail`: `Content-Length` says
    /// so. Parse the answer with [`parse_add_upload_part`].
    pub fn add_upload_part(
        &self,
        upload_id: &UploadId,
        body: &MultipartBody,
    ) -> Result<Request<()>, BuildError> {
        self.multipart_head(&upload_path(upload_id, "/parts")?, body)
    }

    /// [`Self::add_upload_part`] for the Part at 0-based `index` of the file, named in
    /// [`PART_INDEX_HEADER`] when known: what a driver of [`crate::uploader::Uploader`]
    /// sends for a `PartJob` (`Some(job.index)`).
    pub fn add_upload_part_at(
        &self,
        upload_id: &UploadId,
        index: Option<u32>,
        body: &MultipartBody,
    ) -> Result<Request<()>, BuildError> {
        let mut request = self.add_upload_part(upload_id, body)?;
        if let Some(index) = index {
            request
                .headers_mut()
                .insert(PART_INDEX_HEADER, http::HeaderValue::from(index));
        }
        Ok(request)
    }

    /// [`Self::add_upload_part`] with the Part's `data` in memory, as one whole request.
    pub fn add_upload_part_bytes(
        &self,
        upload_id: &UploadId,
        boundary: &Boundary,
        data: &[u8],
    ) -> Result<Request<Bytes>, BuildError> {
        let body = MultipartBody::upload_part(boundary, data.len() as u64);
        Ok(with_data(
            self.add_upload_part(upload_id, &body)?,
            &body,
            data,
        ))
    }

    /// `POST {base}/uploads/{id}/complete` with the ordered Part ids (and md5) as JSON. Parse
    /// the answer with [`parse_complete_upload`].
    pub fn complete_upload(
        &self,
        upload_id: &UploadId,
        request: &CompleteUploadRequest,
    ) -> Result<Request<Bytes>, BuildError> {
        self.json_request(&upload_path(upload_id, "/complete")?, request)
    }

    /// `POST {base}/uploads/{id}/cancel` with an empty body (`Content-Length: 0`, so proxies
    /// do not wait for a body). Parse the answer with [`parse_cancel_upload`].
    pub fn cancel_upload(&self, upload_id: &UploadId) -> Result<Request<Bytes>, BuildError> {
        let mut request = self.empty_request(
            Method::POST,
            &upload_path(upload_id, "/cancel")?,
            ACCEPT_JSON,
        )?;
        set_content_length(&mut request, 0);
        Ok(request)
    }
}

/// The Upload a create answered with (status `pending`).
pub fn parse_create_upload<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<Upload, ResponseError> {
    parse(response)
}

/// The Part an add-part answered with: its id goes into the complete request.
pub fn parse_add_upload_part<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<UploadPart, ResponseError> {
    parse(response)
}

/// The Upload a complete answered with (status `completed`, carrying its File).
pub fn parse_complete_upload<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<Upload, ResponseError> {
    parse(response)
}

/// The Upload a cancel answered with (status `cancelled`).
pub fn parse_cancel_upload<B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<Upload, ResponseError> {
    parse(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{config, expected_headers, headers, ok};
    use crate::types::{FileId, PartId, Purpose, UploadStatus};

    fn create_request() -> CreateUploadRequest {
        CreateUploadRequest {
            filename: "a.jsonl".to_owned(),
            purpose: Purpose::FineTune,
            bytes: 3,
            mime_type: "text/jsonl".to_owned(),
            expires_after: None,
        }
    }

    #[test]
    fn create_upload_request_is_exact() {
        let request = config().create_upload(&create_request()).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:8080/v1/uploads");
        let body =
            br#"{"filename":"a.jsonl","purpose":"fine-tune","bytes":3,"mime_type":"text/jsonl"}"#;
        assert_eq!(request.body(), &body[..]);
        assert_eq!(
            headers(&request),
            expected_headers(
                "application/json",
                &[
                    ("content-type", "application/json"),
                    ("content-length", &body.len().to_string())
                ]
            )
        );
        assert!(request.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn a_part_request_of_a_job_names_its_position_and_the_server_reads_it_back() {
        let body = MultipartBody::upload_part(&Boundary::from_entropy([7; 16]), 10);
        let upload = UploadId::new("upload_abc123");
        let request = config()
            .add_upload_part_at(&upload, Some(41), &body)
            .unwrap();
        assert_eq!(request.headers()[PART_INDEX_HEADER], "41");
        assert_eq!(part_index(request.headers()), Some(41));
        let plain = config().add_upload_part_at(&upload, None, &body).unwrap();
        assert_eq!(part_index(plain.headers()), None);
        let mut odd = plain.headers().clone();
        odd.insert(PART_INDEX_HEADER, http::HeaderValue::from_static("-1"));
        assert_eq!(
            part_index(&odd),
            None,
            "a hint that does not parse is no hint"
        );
    }

    #[test]
    fn create_upload_sends_expires_after_when_set() {
        let mut create = create_request();
        create.expires_after = Some(crate::types::ExpiresAfter::after_creation(3600));
        let request = ClientConfig::default().create_upload(&create).unwrap();
        assert_eq!(
            request.body(),
            &br#"{"filename":"a.jsonl","purpose":"fine-tune","bytes":3,"mime_type":"text/jsonl","expires_after":{"anchor":"created_at","seconds":3600}}"#[..]
        );
        assert_eq!(request.uri(), "https://api.openai.com/v1/uploads");
        assert_eq!(request.headers().get("authorization"), None);
        assert_eq!(request.headers().get("openai-organization"), None);
        assert_eq!(request.headers().get("openai-project"), None);
    }

    #[test]
    fn add_upload_part_head_says_how_to_stream_the_body() {
        let boundary = Boundary::new("b0undary").unwrap();
        let body = MultipartBody::upload_part(&boundary, 5);
        let head = config()
            .add_upload_part(&UploadId::new("upload_abc123"), &body)
            .unwrap();
        assert_eq!(head.method(), Method::POST);
        assert_eq!(
            head.uri(),
            "http://127.0.0.1:8080/v1/uploads/upload_abc123/parts"
        );
        assert_eq!(
            body.head,
            &b"--b0undary\r\nContent-Disposition: form-data; name=\"data\"; filename=\"upload\"\r\n\
Content-Type: application/octet-stream\r\n\r\n"[..]
        );
        assert_eq!(body.tail, &b"\r\n--b0undary--\r\n"[..]);
        assert_eq!(
            headers(&head),
            expected_headers(
                "application/json",
                &[
                    ("content-type", "multipart/form-data; boundary=b0undary"),
                    ("content-length", "139"),
                ]
            )
        );
        assert_eq!(body.head.len() + 5 + body.tail.len(), 139);
    }

    #[test]
    fn add_upload_part_bytes_is_the_head_with_the_whole_body() {
        let boundary = Boundary::new("b0undary").unwrap();
        let request = config()
            .add_upload_part_bytes(&UploadId::new("upload_abc123"), &boundary, b"hello")
            .unwrap();
        let expected =
            b"--b0undary\r\nContent-Disposition: form-data; name=\"data\"; filename=\"upload\"\r\n\
Content-Type: application/octet-stream\r\n\r\nhello\r\n--b0undary--\r\n";
        assert_eq!(request.body(), &expected[..]);
        assert_eq!(
            request.headers()["content-length"],
            expected.len().to_string()
        );
        assert_eq!(
            headers(&request),
            headers(
                &config()
                    .add_upload_part(
                        &UploadId::new("upload_abc123"),
                        &MultipartBody::upload_part(&boundary, 5)
                    )
                    .unwrap()
            )
        );
    }

    #[test]
    fn complete_upload_request_is_exact() {
        let complete = CompleteUploadRequest {
            part_ids: vec![PartId::new("part_def456"), PartId::new("part_ghi789")],
            md5: Some("900150983cd24fb0d6963f7d28e17f72".to_owned()),
        };
        let request = config()
            .complete_upload(&UploadId::new("upload_abc123"), &complete)
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:8080/v1/uploads/upload_abc123/complete"
        );
        let body = br#"{"part_ids":["part_def456","part_ghi789"],"md5":"900150983cd24fb0d6963f7d28e17f72"}"#;
        assert_eq!(request.body(), &body[..]);
        assert_eq!(
            headers(&request),
            expected_headers(
                "application/json",
                &[
                    ("content-type", "application/json"),
                    ("content-length", &body.len().to_string())
                ]
            )
        );
        let without_md5 = CompleteUploadRequest {
            part_ids: vec![PartId::new("part_1")],
            md5: None,
        };
        let request = config()
            .complete_upload(&UploadId::new("upload_1"), &without_md5)
            .unwrap();
        assert_eq!(request.body(), &br#"{"part_ids":["part_1"]}"#[..]);
    }

    #[test]
    fn cancel_upload_request_is_exact() {
        let request = config()
            .cancel_upload(&UploadId::new("upload_abc123"))
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:8080/v1/uploads/upload_abc123/cancel"
        );
        assert!(request.body().is_empty());
        assert_eq!(
            headers(&request),
            expected_headers("application/json", &[("content-length", "0")])
        );
    }

    #[test]
    fn odd_upload_ids_stay_one_path_segment() {
        let request = config()
            .cancel_upload(&UploadId::new("../files?x=1#y"))
            .unwrap();
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:8080/v1/uploads/%2E%2E%2Ffiles%3Fx%3D1%23y/cancel"
        );
        assert_eq!(
            request.uri().path(),
            "/v1/uploads/%2E%2E%2Ffiles%3Fx%3D1%23y/cancel"
        );
        assert_eq!(request.uri().query(), None);
        let error = config().cancel_upload(&UploadId::new("")).unwrap_err();
        assert!(matches!(error, BuildError::EmptyId { param: "upload_id" }));
    }

    #[test]
    fn upload_responses_parse() {
        let created = parse_create_upload(&ok(r#"{"id": "upload_abc123", "object": "upload",
            "bytes": 2147483648, "created_at": 1719184911, "filename": "training_examples.jsonl",
            "purpose": "fine-tune", "status": "pending", "expires_at": 1719127296}"#))
        .unwrap();
        assert_eq!(created.id, UploadId::new("upload_abc123"));
        assert_eq!(created.bytes, 2_147_483_648);
        assert_eq!(created.status, UploadStatus::Pending);
        assert_eq!(created.file, None);

        let part = parse_add_upload_part(&ok(r#"{"id": "part_def456", "object": "upload.part",
            "created_at": 1719185911, "upload_id": "upload_abc123"}"#))
        .unwrap();
        assert_eq!(part.id, PartId::new("part_def456"));
        assert_eq!(part.upload_id, UploadId::new("upload_abc123"));

        let completed = parse_complete_upload(&ok(r#"{"id": "upload_abc123", "object": "upload",
            "bytes": 2147483648, "created_at": 1719184911, "filename": "training_examples.jsonl",
            "purpose": "fine-tune", "status": "completed", "expires_at": 1719127296,
            "file": {"id": "file-xyz321", "object": "file", "bytes": 2147483648,
            "created_at": 1719186911, "expires_at": 1719127296,
            "filename": "training_examples.jsonl", "purpose": "fine-tune"}}"#))
        .unwrap();
        assert_eq!(completed.status, UploadStatus::Completed);
        assert_eq!(
            completed.file.map(|file| file.id),
            Some(FileId::new("file-xyz321"))
        );

        let cancelled = parse_cancel_upload(&ok(r#"{"id": "upload_abc123", "object": "upload",
            "bytes": 2147483648, "created_at": 1719184911, "filename": "training_examples.jsonl",
            "purpose": "fine-tune", "status": "cancelled", "expires_at": 1719127296}"#))
        .unwrap();
        assert_eq!(cancelled.status, UploadStatus::Cancelled);
    }

    #[test]
    fn a_rejected_complete_is_an_api_error() {
        let reply = Response::builder()
            .status(400)
            .header("x-request-id", "req_123")
            .body(&br#"{"error":{"message":"Part part_x does not belong to this Upload.","type":"invalid_request_error","param":"part_ids","code":null}}"#[..])
            .unwrap();
        let error = parse_complete_upload(&reply).unwrap_err();
        assert_eq!(
            error.to_string(),
            "400 invalid_request_error: Part part_x does not belong to this Upload. \
             (param: part_ids, request id: req_123)"
        );
    }
}
