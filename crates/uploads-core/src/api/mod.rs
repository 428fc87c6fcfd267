//! The client side of the wire: every operation builds an [`http::Request`] and parses an
//! [`http::Response`], and never sends anything.
//!
//! A [`ClientConfig`] holds the base URL and credentials; each operation is a method on it
//! that builds the request (with `Authorization`, `OpenAI-Organization`, `OpenAI-Project`,
//! `Accept` and `User-Agent`), and a `parse_*` function beside it turns the response into
//! the operation's type or a [`ResponseError`]. An adapter sends the request with whatever
//! runtime it has and hands the response back: all protocol knowledge stays here.
//!
//! | operation | request | response |
//! |---|---|---|
//! | create Upload | [`ClientConfig::create_upload`] | [`parse_create_upload`] |
//! | add Part | [`ClientConfig::add_upload_part`] (head, body streamed) or [`ClientConfig::add_upload_part_bytes`] | [`parse_add_upload_part`] |
//! | complete Upload | [`ClientConfig::complete_upload`] | [`parse_complete_upload`] |
//! | cancel Upload | [`ClientConfig::cancel_upload`] | [`parse_cancel_upload`] |
//! | list Files | [`ClientConfig::list_files`] | [`parse_list_files`] |
//! | retrieve File | [`ClientConfig::retrieve_file`] | [`parse_retrieve_file`] |
//! | delete File | [`ClientConfig::delete_file`] | [`parse_delete_file`] |
//! | download File | [`ClientConfig::download_file`] | [`parse_download_file`], or stream after [`check_response_head`] |
//! | create File | [`ClientConfig::create_file`] (head) or [`ClientConfig::create_file_bytes`] | [`parse_create_file`] |
//!
//! Ids are percent-encoded as one path segment, so an id holding `/`, `?` or `..` cannot
//! change the route; an empty id is a [`BuildError`].
//!
//! The server side of the list query is here too: [`parse_list_files_query`].
//!
//! # Example
//!
//! ```
//! use uploads_core::api::{ClientConfig, parse_create_upload};
//! use uploads_core::http::Response;
//! use uploads_core::types::{CreateUploadRequest, Purpose, UploadStatus};
//!
//! let config = ClientConfig::from_env(|name| match name {
//!     "OPENAI_API_KEY" => Some("sk-test".to_owned()),
//!     "OPENAI_BASE_URL" => Some("http://127.0.0.1:8080/v1/".to_owned()),
//!     _ => None,
//! });
//! let request = config
//!     .create_upload(&CreateUploadRequest {
//!         filename: "a.jsonl".to_owned(),
//!         purpose: Purpose::FineTune,
//!         bytes: 3,
//!         mime_type: "text/jsonl".to_owned(),
//!         expires_after: None,
//!     })
//!     .unwrap();
//! assert_eq!(request.uri(), "http://127.0.0.1:8080/v1/uploads");
//! assert_eq!(request.headers()["authorization"], "Bearer sk-test");
//! assert_eq!(
//!     request.body().as_ref(),
//!     br#"{"filename":"a.jsonl","purpose":"fine-tune","bytes":3,"mime_type":"text/jsonl"}"#
//! );
//!
//! // ... the adapter sends it; the service answers:
//! let response = Response::new(
//!     br#"{"id":"upload_1","object":"upload","bytes":3,"created_at":1719184911,
//!         "filename":"a.jsonl","purpose":"fine-tune","status":"pending","expires_at":1719188511}"#,
//! );
//! let upload = parse_create_upload(&response).unwrap();
//! assert_eq!(upload.status, UploadStatus::Pending);
//!
//! let refused = Response::builder()
//!     .status(400)
//!     .header("x-request-id", "req_123")
//!     .body(br#"{"error":{"message":"'bytes' is a required property","type":"invalid_request_error","param":"bytes","code":null}}"#)
//!     .unwrap();
//! assert_eq!(
//!     parse_create_upload(&refused).unwrap_err().to_string(),
//!     "400 invalid_request_error: 'bytes' is a required property (param: bytes, request id: req_123)"
//! );
//! ```

mod config;
mod encoding;
mod files;
mod response;
#[cfg(test)]
mod test_support;
mod uploads;

pub use config::{BuildError, ClientConfig, DEFAULT_BASE_URL, USER_AGENT_VALUE};
pub use files::{
    CreateFileForm, parse_create_file, parse_delete_file, parse_download_file, parse_list_files,
    parse_list_files_query, parse_retrieve_file,
};
pub use response::{
    ApiError, ErrorHead, MAX_JSON_BYTES, ResponseError, answer_body_limit, check_response_head,
    parse, request_id,
};
pub use uploads::{
    PART_INDEX_HEADER, parse_add_upload_part, parse_cancel_upload, parse_complete_upload,
    parse_create_upload, part_index,
};
