//! The answer a service gives when it refuses a request: an HTTP status and OpenAI's error
//! body. The ledger and the validators produce these; a server writes them out verbatim.

use http::StatusCode;

use crate::types::{ErrorBody, FileId, PartId, UploadId};

/// OpenAI's error class for a request the caller must fix.
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";
/// OpenAI's error class for an unexpected failure on the service's side.
pub const SERVER_ERROR: &str = "server_error";
/// The wait a [`Rejection::unavailable`] asks for: a busy lock or a dependency that did not
/// answer in time is worth another try soon, and the SDKs back off on their own after it.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// A refused request: the status to answer with and OpenAI's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", body.error.message)]
#[must_use]
pub struct Rejection {
    /// The HTTP status code.
    pub status: StatusCode,
    /// The `{"error": {...}}` body.
    pub body: ErrorBody,
    /// Seconds after which the same request may succeed, for a refusal that is only about
    /// now (a busy lock, a dependency not answering); see [`Rejection::retry_after_headers`].
    pub retry_after_secs: Option<u64>,
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
            retry_after_secs: None,
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

    /// 400 `part_ids` for a complete listing Parts whose bytes are no longer stored (removed
    /// behind the service's back): completing would make a File that cannot be read. The
    /// Upload stays pending; the Parts can be sent again and the complete retried with their
    /// new ids.
    pub fn parts_not_stored(missing: &[PartId]) -> Self {
        let names: Vec<&str> = missing.iter().map(PartId::as_str).collect();
        Self::invalid(
            Some("part_ids"),
            format!(
                "The data of these Parts is no longer stored: {}. Add them again and complete with the new Part ids.",
                names.join(", ")
            ),
        )
    }

    /// 503 `server_error` with a `Retry-After` of [`UNAVAILABLE_RETRY_AFTER_SECS`]: a lock
    /// or a dependency (the database, the bucket) did not answer within its bound, or the
    /// server is starting. The SDKs retry a 503 after the time given; retrying is safe (a
    /// retried complete or cancel replays the first).
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut rejection = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            message,
            None,
            None,
        );
        rejection.retry_after_secs = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        rejection
    }

    /// The headers that carry [`Rejection::retry_after_secs`]: `retry-after` (seconds, as
    /// HTTP says) and `retry-after-ms` (OpenAI's, which its SDKs read first).
    pub fn retry_after_headers(&self) -> Vec<(&'static str, String)> {
        self.retry_after_secs
            .map(|secs| {
                vec![
                    ("retry-after", secs.to_string()),
                    ("retry-after-ms", secs.saturating_mul(1000).to_string()),
                ]
            })
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_answer_says_when_to_retry() {
        let busy = Rejection::unavailable("The Upload is busy. Retry the request.");
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.body.error.kind, SERVER_ERROR);
        assert_eq!(
            busy.retry_after_headers(),
            vec![
                ("retry-after", "1".to_owned()),
                ("retry-after-ms", "1000".to_owned())
            ]
        );
        assert!(
            Rejection::server_error("x")
                .retry_after_headers()
                .is_empty()
        );
        // What the clients' retry policy reads back from those headers.
        let mut headers = http::HeaderMap::new();
        for (name, value) in busy.retry_after_headers() {
            headers.insert(name, value.parse().unwrap());
        }
        let failure = crate::retry::Failure::from_response(busy.status, &headers, 0);
        assert_eq!(failure.retry_after_ms(), Some(1000));
    }
}
