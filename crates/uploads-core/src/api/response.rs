//! Turning a response into a typed result or a typed error.
//!
//! * [`parse`] reads a whole response: 2xx decodes JSON into the expected type; anything else
//!   becomes an [`ApiError`] carrying OpenAI's error body when there is one.
//! * [`check_response_head`] lets an adapter decide from the status alone: stream a 2xx body
//!   wherever it goes, and buffer at most [`ErrorHead::MAX_BODY_BYTES`] of an error body.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::types::{ApiErrorDetail, ErrorBody};

/// Header in which OpenAI names a request, for support tickets and logs.
const REQUEST_ID: &str = "x-request-id";

/// How many bytes of a body an error keeps, and shows at most.
const KEPT_BODY_BYTES: usize = 4 * 1024;

/// How many characters of a body a one-line message shows.
const SHOWN_BODY_CHARS: usize = 200;

/// Why a response did not yield the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The service answered with a non-2xx status.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// A 2xx response whose body is not the expected JSON.
    #[error("could not decode the {} response body: {message} (body: {body_snippet:?})", status.as_u16())]
    Decode {
        /// The response's status.
        status: StatusCode,
        /// What the JSON decoder said.
        message: String,
        /// The start of the body, as text, for diagnosis.
        body_snippet: String,
    },
}

impl From<ApiError> for ResponseError {
    fn from(error: ApiError) -> Self {
        Self::Api(Box::new(error))
    }
}

impl ResponseError {
    /// The API error, when the service answered with a non-2xx status.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api(error) => Some(error),
            Self::Decode { .. } => None,
        }
    }
}

/// A non-2xx answer from the service.
///
/// Displays as one line: `400 invalid_request_error: <message> (param: part_ids, request
/// id: req_123)`, or with the start of the raw body when it was not OpenAI's error JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's `{"error": {...}}`, when the body parses as one.
    pub body: Option<ErrorBody>,
    /// The body as received, cut to its first 4 KiB.
    pub raw_body: Bytes,
    /// The `x-request-id` header, when present.
    pub request_id: Option<String>,
    /// All response headers, so a retry policy can read `Retry-After` and the like.
    pub headers: HeaderMap,
}

impl ApiError {
    /// OpenAI's error fields, when the body carried them.
    pub fn detail(&self) -> Option<&ApiErrorDetail> {
        self.body.as_ref().map(|body| &body.error)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.as_u16();
        let mut notes = Vec::new();
        if let Some(detail) = self.detail() {
            write!(f, "{status} {}: {}", detail.kind, one_line(&detail.message))?;
            notes.extend(detail.param.as_ref().map(|param| format!("param: {param}")));
            notes.extend(detail.code.as_ref().map(|code| format!("code: {code}")));
        } else {
            let reason = self.status.canonical_reason().unwrap_or("unknown status");
            write!(f, "{status} {reason}")?;
            let text = snippet(&self.raw_body);
            if !text.is_empty() {
                write!(f, ": {text}")?;
            }
        }
        notes.extend(
            self.request_id
                .as_ref()
                .map(|id| format!("request id: {id}")),
        );
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

/// The head of a non-2xx response, waiting for (the start of) its body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an error head becomes an ApiError once its body is read"]
pub struct ErrorHead {
    status: StatusCode,
    headers: HeaderMap,
}

/// How much of a successful JSON answer a driver reads: a list of 10,000 Files is a few MiB.
pub const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;

/// How much of an answer with `status` a driver reads before parsing it: a success's JSON
/// up to [`MAX_JSON_BYTES`], an error's body up to [`ErrorHead::MAX_BODY_BYTES`]. What lies
/// beyond is left unread.
pub fn answer_body_limit(status: StatusCode) -> usize {
    if status.is_success() {
        MAX_JSON_BYTES
    } else {
        ErrorHead::MAX_BODY_BYTES
    }
}

impl ErrorHead {
    /// How much of an error body an adapter should buffer. OpenAI's error bodies are well
    /// under this; a longer body (an HTML page from a proxy) is only kept for diagnosis.
    pub const MAX_BODY_BYTES: usize = 64 * 1024;

    /// The status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error, given the body or its first [`Self::MAX_BODY_BYTES`] bytes.
    pub fn with_body(self, body: &[u8]) -> ApiError {
        let request_id = request_id(&self.headers).map(str::to_owned);
        ApiError {
            status: self.status,
            body: serde_json::from_slice(body).ok(),
            raw_body: Bytes::copy_from_slice(&body[..body.len().min(KEPT_BODY_BYTES)]),
            request_id,
            headers: self.headers,
        }
    }
}

/// `Ok` for a 2xx status, whose body the caller may stream; otherwise the head of the error,
/// to finish with [`ErrorHead::with_body`].
pub fn check_response_head(status: StatusCode, headers: &HeaderMap) -> Result<(), ErrorHead> {
    if status.is_success() {
        Ok(())
    } else {
        Err(ErrorHead {
            status,
            headers: headers.clone(),
        })
    }
}

/// The id the service gave a response (`x-request-id`), to log beside it and quote in errors.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
}

/// Parses a whole response: a 2xx JSON body into `T`, anything else into an [`ApiError`].
pub fn parse<T: DeserializeOwned, B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<T, ResponseError> {
    let body = response.body().as_ref();
    check_response_head(response.status(), response.headers())
        .map_err(|head| head.with_body(body))?;
    serde_json::from_slice(body).map_err(|error| ResponseError::Decode {
        status: response.status(),
        message: error.to_string(),
        body_snippet: snippet(body),
    })
}

/// Takes the body of a 2xx response as it is (no decoding); anything else is an
/// [`ApiError`].
pub(super) fn parse_bytes<B: AsRef<[u8]>>(response: Response<B>) -> Result<B, ResponseError> {
    check_response_head(response.status(), response.headers())
        .map_err(|head| head.with_body(response.body().as_ref()))?;
    Ok(response.into_body())
}

/// The start of a body as one line of text: lossy UTF-8, line breaks as spaces, cut short.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(KEPT_BODY_BYTES)]);
    let line = one_line(text.trim());
    if line.chars().count() > SHOWN_BODY_CHARS {
        let mut cut: String = line.chars().take(SHOWN_BODY_CHARS).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

/// Runs of whitespace (line breaks included) as single spaces, so a message fits a log line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Upload;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Vec<u8>> {
        let mut builder = Response::builder().status(status);
        for &(name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(body.as_bytes().to_vec()).unwrap()
    }

    const OPENAI_400: &str = r#"{"error": {"message": "Part ids must not repeat.\nSecond line.",
        "type": "invalid_request_error", "param": "part_ids", "code": null}}"#;

    #[test]
    fn an_openai_error_body_becomes_an_api_error() {
        let reply = response(
            400,
            &[
                ("x-request-id", "req_123"),
                ("content-type", "application/json"),
            ],
            OPENAI_400,
        );
        let error = parse::<Upload, _>(&reply).unwrap_err();
        let api = error.api_error().unwrap();
        assert_eq!(api.status, StatusCode::BAD_REQUEST);
        assert_eq!(api.request_id.as_deref(), Some("req_123"));
        assert_eq!(
            api.body,
            Some(ErrorBody::new(
                "invalid_request_error",
                "Part ids must not repeat.\nSecond line.",
                Some("part_ids"),
                None
            ))
        );
        assert_eq!(api.raw_body, OPENAI_400.as_bytes());
        assert_eq!(api.headers["content-type"], "application/json");
        assert_eq!(
            error.to_string(),
            "400 invalid_request_error: Part ids must not repeat. Second line. \
             (param: part_ids, request id: req_123)"
        );
    }

    #[test]
    fn codes_are_shown_and_notes_are_left_out_when_absent() {
        let body = r#"{"error": {"message": "Incorrect API key provided.",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        let error = parse::<Upload, _>(&response(401, &[], body)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "401 invalid_request_error: Incorrect API key provided. (code: invalid_api_key)"
        );
        let body = r#"{"error": {"message": "Boom", "type": "server_error"}}"#;
        let error = parse::<Upload, _>(&response(500, &[], body)).unwrap_err();
        assert_eq!(error.to_string(), "500 server_error: Boom");
    }

    #[test]
    fn an_html_error_keeps_the_raw_body_and_shows_its_start() {
        let html = "<html>\n  <body>502 Bad Gateway</body>\n</html>\n";
        let reply = response(
            502,
            &[("x-request-id", "req_9"), ("retry-after", "3")],
            html,
        );
        let error = parse::<Upload, _>(&reply).unwrap_err();
        let api = error.api_error().unwrap();
        assert_eq!(api.body, None);
        assert_eq!(api.raw_body, html.as_bytes());
        assert_eq!(api.headers["retry-after"], "3");
        assert_eq!(
            error.to_string(),
            "502 Bad Gateway: <html> <body>502 Bad Gateway</body> </html> (request id: req_9)"
        );
        let empty = parse::<Upload, _>(&response(503, &[], "")).unwrap_err();
        assert_eq!(empty.to_string(), "503 Service Unavailable");
    }

    #[test]
    fn long_raw_bodies_are_cut() {
        let long = "x".repeat(10_000);
        let error = parse::<Upload, _>(&response(500, &[], &long)).unwrap_err();
        let api = error.api_error().unwrap();
        assert_eq!(api.raw_body.len(), KEPT_BODY_BYTES);
        assert_eq!(
            error.to_string(),
            format!("500 Internal Server Error: {}…", "x".repeat(200))
        );
    }

    #[test]
    fn junk_in_a_success_is_a_decode_error() {
        let error = parse::<Upload, _>(&response(200, &[], "<html>ok</html>")).unwrap_err();
        assert_eq!(
            error,
            ResponseError::Decode {
                status: StatusCode::OK,
                message: "expected value at line 1 column 1".to_owned(),
                body_snippet: "<html>ok</html>".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            "could not decode the 200 response body: expected value at line 1 column 1 \
             (body: \"<html>ok</html>\")"
        );
        let missing = parse::<Upload, _>(&response(200, &[], r#"{"id": "upload_1"}"#)).unwrap_err();
        assert!(
            matches!(&missing, ResponseError::Decode { message, .. } if message.starts_with("missing field `bytes`")),
            "{missing:?}"
        );
    }

    #[test]
    fn the_head_alone_decides_whether_to_stream() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, "req_5".parse().unwrap());
        assert_eq!(check_response_head(StatusCode::OK, &headers), Ok(()));
        assert_eq!(
            check_response_head(StatusCode::NO_CONTENT, &headers),
            Ok(())
        );
        let head = check_response_head(StatusCode::NOT_FOUND, &headers).unwrap_err();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        let error = head.with_body(
            br#"{"error":{"message":"No such File object: file-1","type":"invalid_request_error","param":"file_id","code":null}}"#,
        );
        assert_eq!(
            error.to_string(),
            "404 invalid_request_error: No such File object: file-1 \
             (param: file_id, request id: req_5)"
        );
    }

    #[test]
    fn raw_bodies_pass_through_on_success_only() {
        let body = parse_bytes(response(200, &[], "line 1\nline 2")).unwrap();
        assert_eq!(body, b"line 1\nline 2");
        let error = parse_bytes(response(404, &[], "gone")).unwrap_err();
        assert_eq!(error.to_string(), "404 Not Found: gone");
    }
}
