//! The answer a service gives when it refuses a request: an HTTP status and OpenAI's error
//! body. The ledger and the validators produce these; a server writes them out verbatim.

use http::StatusCode;

use crate::types::{ErrorBody, FileId, UploadId};

/// OpenAI's error class for a request the caller must fix.
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";
/// OpenAI's error class for an unexpected failure on the service's side.
pub const SERVER_ERROR: &str = "server_error";

/// A refused request: the status to answer with and OpenAI's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", body.error.message)]
#[must_use]
pub struct Rejection {
    /// The HTTP status code.
    pub status: StatusCode,
    /// The `{"error": {...}}` body.
    pub body: ErrorBody,
}

impl Rejection {
    /// A rejection with an arbitrary status, class, message, param and code.
    pub fn new(
        status: StatusCode,
        kind: &str,
        message: impl Into<String>,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody::new(kind, message, param, code),
        }
    }

    /// 400 `invalid_request_error` naming the field at fault.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST_ERROR,
            message,
            param,
            None,
        )
    }

    /// 404 for an Upload that does not exist, or belongs to another owner.
    pub fn no_such_upload(id: &UploadId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST_ERROR,
            format!("No such Upload object: {id}"),
            Some("upload_id"),
            None,
        )
    }

    /// 404 for a File that does not exist, or belongs to another owner.
    pub fn no_such_file(id: &FileId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST_ERROR,
            format!("No such File object: {id}"),
            Some("file_id"),
            None,
        )
    }

    /// 401 for a missing or unknown API key.
    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST_ERROR,
            message,
            None,
            Some("invalid_api_key"),
        )
    }

    /// 413 for a body (or a part's `data`) over its limit.
    pub fn too_large(param: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST_ERROR,
            message,
            param,
            None,
        )
    }

    /// 404 for a route the service does not have, in OpenAI's words.
    pub fn unknown_route(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST_ERROR,
            format!("Invalid URL ({method} {path})"),
            None,
            None,
        )
    }

    /// 405 for a known path with a method it does not serve.
    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST_ERROR,
            format!("Method not allowed ({method} {path})"),
            None,
            None,
        )
    }

    /// The answer to a request whose head the HTTP layer could not read, so it was never
    /// routed: `status` is the layer's verdict (431 for a head over `max_head_bytes` or with
    /// more than `max_header_fields` fields, 414 for a URI too long to parse, 400 for a
    /// request line or header that does not parse, or `Content-Length`s that disagree).
    pub fn unreadable_head(
        status: StatusCode,
        max_head_bytes: usize,
        max_header_fields: usize,
    ) -> Self {
        let message = match status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
                "Request header fields too large: the request line and headers must fit in \
                 {max_head_bytes} bytes and {max_header_fields} header fields."
            ),
            StatusCode::URI_TOO_LONG => "The request URI is too long.".to_owned(),
            _ => "Malformed HTTP request: the request line or a header could not be parsed, \
                  or its Content-Length headers disagree."
                .to_owned(),
        };
        Self::new(status, INVALID_REQUEST_ERROR, message, None, None)
    }

    /// 500 `server_error`: the service failed; the caller may retry.
    pub fn server_error(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER_ERROR,
            message,
            None,
            None,
        )
    }

    /// The body serialized as JSON bytes.
    pub fn body_json(&self) -> Vec<u8> {
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&self.body).unwrap_or_default()
    }

    /// The `param` of the body, if any.
    pub fn param(&self) -> Option<&str> {
        self.body.error.param.as_deref()
    }
}
