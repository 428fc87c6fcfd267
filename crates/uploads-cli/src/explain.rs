//! Errors as one line a person can act on: what failed, in their terms (the address that
//! refused, 1-based part numbers, sizes in MiB), and what to do about it.

use std::error::Error;
use std::fmt::Write;
use std::io::ErrorKind;

use uploads_core::limits::Limits;
use uploads_core::types::{Purpose, UploadStatus};
use uploads_core::upload::{AbortCause, ConnectFailure, OptionsError, RequestError, UploadError};
use uploads_core::uploader::{PlanError, ResumeError};

use crate::size::format_size;

/// One request's failure against `base_url`, with a hint when the cause is a common mistake.
pub fn request<E: Error + 'static>(error: &RequestError<E>, base_url: &str) -> String {
    match error {
        RequestError::Response(response) => match response.api_error() {
            Some(api) => {
                let invalid_url = api.status.as_u16() == 404
                    && api
                        .detail()
                        .is_some_and(|detail| detail.message.starts_with("Invalid URL"));
                if invalid_url && !base_url.trim_end_matches('/').ends_with("/v1") {
                    format!(
                        "{api}; the base URL {base_url} has no /v1: try {}/v1",
                        base_url.trim_end_matches('/')
                    )
                } else {
                    api.to_string()
                }
            }
            None => response.to_string(),
        },
        RequestError::Connect {
            address,
            kind: ConnectFailure::Refused,
            ..
        } => format!("cannot connect to {address} (connection refused): {NOTHING_LISTENS}"),
        RequestError::Connect {
            address,
            kind: ConnectFailure::TimedOut,
            ..
        } => format!("cannot connect to {address} (timed out): {CHECK_THE_ADDRESS}"),
        RequestError::Connect {
            address,
            kind: ConnectFailure::Tls,
            source,
        } => tls_failure(address, source, base_url),
        RequestError::Protocol { address, .. } => not_http(address, base_url),
        // Another failure: the transport's own error says more.
        RequestError::Connect { source, .. } | RequestError::Transport(source) => {
            transport_error(source, base_url)
        }
        other => other.to_string(),
    }
}

/// A failed TLS handshake: a server that answered in plain http is named as such, any other
/// failure by the TLS library's reason (the innermost cause; the outer ones only say that
/// the request failed).
fn tls_failure(address: &str, error: &(dyn Error + 'static), base_url: &str) -> String {
    let mut reason = error;
    while let Some(cause) = reason.source() {
        reason = cause;
    }
    let reason = reason.to_string();
    let lower = reason.to_lowercase();
    if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        format!(
            "{address} does not speak https (it answered in plain http): use {}",
            base_url.replacen("https://", "http://", 1)
        )
    } else {
        format!("cannot connect to {address} (TLS handshake failed): {reason}")
    }
}

/// An answer that is not HTTP: over plain http, most likely a server that speaks https.
fn not_http(address: &str, base_url: &str) -> String {
    if base_url.starts_with("http://") {
        format!(
            "{address} did not answer in plain http (does it speak https?): if so, use {}",
            base_url.replacen("http://", "https://", 1)
        )
    } else {
        format!("{address} did not answer in HTTP: {CHECK_THE_ADDRESS}")
    }
}

/// What to do when nothing listens at the address.
const NOTHING_LISTENS: &str = "nothing listens there; start a server with `uploads serve`, or \
set --base-url / OPENAI_BASE_URL to where it runs";
/// What to do when the address does not answer.
const CHECK_THE_ADDRESS: &str = "check --base-url / OPENAI_BASE_URL and the network";

/// A failure below HTTP: the address and the kind when the connection failed, the scheme
/// when a server closed a plain http connection without an answer (as an https server may).
fn transport_error(error: &(dyn Error + 'static), base_url: &str) -> String {
    let address = host_port(base_url);
    let chain = chain_text(error);
    if let Some(kind) = io_kind(error) {
        match kind {
            ErrorKind::ConnectionRefused => {
                return format!(
                    "cannot connect to {address} (connection refused): {NOTHING_LISTENS}"
                );
            }
            ErrorKind::TimedOut | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                return format!(
                    "cannot connect to {address} ({}): {CHECK_THE_ADDRESS}",
                    kind.to_string().to_lowercase()
                );
            }
            _ => {}
        }
    }
    if base_url.starts_with("http://")
        && chain
            .to_lowercase()
            .contains("connection closed before message completed")
    {
        return format!(
            "{address} did not answer in plain http (does it speak https?): if so, use {}",
            base_url.replacen("http://", "https://", 1)
        );
    }
    format!("cannot reach {address}: {chain}")
}

/// The error and its sources, as one line.
fn chain_text(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

/// The kind of the first `io::Error` in the chain.
fn io_kind(error: &(dyn Error + 'static)) -> Option<ErrorKind> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = error.source();
    }
    None
}

/// `host:port` of a URL, the port filled in from the scheme.
pub fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty())
        && !authority.ends_with(']');
    if has_port {
        authority.to_owned()
    } else {
        let port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        format!("{authority}:{port}")
    }
}

/// A plan refusal with sizes in human units.
pub fn plan(error: &PlanError) -> String {
    match error {
        PlanError::PartTooLarge { part_size, max } => format!(
            "part size {} is over the part limit of {}",
            format_size(*part_size),
            format_size(*max)
        ),
        PlanError::FileTooLarge { file_size, max } => format!(
            "the file's {} are over the upload limit of {}",
            format_size(*file_size),
            format_size(*max)
        ),
        other => other.to_string(),
    }
}

/// Why a MIME type cannot be used for a purpose, what the purpose accepts, and a purpose
/// that would take the file; `None` when it can be used.
pub fn mime_refusal(limits: &Limits, purpose: &Purpose, mime_type: &str) -> Option<String> {
    if limits.accepts_mime_type(purpose, mime_type) {
        return None;
    }
    let Some(accepted) = limits.accepted_summary(purpose) else {
        let known: Vec<&str> = limits.purposes.iter().map(|(p, _)| p.as_str()).collect();
        return Some(format!(
            "unknown purpose {:?}: use one of {}",
            purpose.as_str(),
            known.join(", ")
        ));
    };
    let mut message =
        format!("Invalid MIME type '{mime_type}' for purpose '{purpose}': it accepts {accepted}");
    if let Some(other) = limits.purposes_accepting(mime_type).first() {
        let _ = write!(message, "; --purpose {other} accepts {mime_type}");
    }
    Some(message)
}

/// No MIME type is known for `filename`: name the flag, and suggest the generic type where
/// the purpose takes it.
pub fn unknown_mime(limits: &Limits, purpose: &Purpose, filename: &str) -> String {
    let generic = "application/octet-stream";
    let mut message = format!(
        "cannot tell the MIME type of {filename:?} from its name: set one with --mime-type (or --default-mime-type, for only the files whose extension says nothing)"
    );
    if limits.accepts_mime_type(purpose, generic) {
        let _ = write!(message, " (e.g. --mime-type {generic})");
    } else if let Some(accepted) = limits.accepted_summary(purpose) {
        let _ = write!(message, "; purpose {purpose} accepts {accepted}");
    }
    message
}

/// How an upload failed; `kept_in` is the state file that keeps a resumable Upload.
/// The second value says whether running the same command again can continue it.
pub fn upload<E: Error + 'static>(error: &UploadError<E>, base_url: &str) -> (String, bool) {
    match error {
        UploadError::Options(OptionsError::Plan(plan_error)) => (plan(plan_error), false),
        UploadError::Create(request_error) => (
            format!(
                "creating the Upload failed: {}",
                request(request_error, base_url)
            ),
            false,
        ),
        UploadError::Aborted {
            upload_id,
            cancelled,
            cause,
        } => {
            let (why, retryable) = match cause.as_ref() {
                AbortCause::Part {
                    part,
                    reason,
                    error,
                } => (
                    format!(
                        "part {} gave up ({reason}): {}",
                        part + 1,
                        request(error, base_url)
                    ),
                    error.is_retryable(),
                ),
                AbortCause::Complete(error) => (
                    format!("complete failed: {}", request(error, base_url)),
                    error.is_retryable(),
                ),
                other => (other.to_string(), true),
            };
            let state = if *cancelled {
                "it was cancelled"
            } else {
                "it is kept for a resume"
            };
            (
                format!("Upload {upload_id} failed: {why}; {state}"),
                !*cancelled && retryable,
            )
        }
        other => (other.to_string(), false),
    }
}

/// Why a kept Upload cannot be continued, found from the service's answer to its first part
/// or to complete (OpenAI has no GET for an Upload): it is cancelled, completed or expired
/// (400 `Cannot add parts to an Upload that is already ...`), or unknown (404). `None` for
/// any other failure, which a new Upload would not avoid.
pub fn upload_gone<E: Error + 'static>(error: &UploadError<E>) -> Option<String> {
    let UploadError::Aborted {
        upload_id, cause, ..
    } = error
    else {
        return None;
    };
    let (AbortCause::Part {
        error: RequestError::Response(response),
        ..
    }
    | AbortCause::Complete(RequestError::Response(response))) = cause.as_ref()
    else {
        return None;
    };
    let api = response.api_error()?;
    let message = api.detail().map_or("", |detail| detail.message.as_str());
    match api.status.as_u16() {
        404 => Some(format!(
            "the service does not know Upload {upload_id} any more"
        )),
        400 => ["cancelled", "completed", "expired"]
            .into_iter()
            .find(|status| message.contains(&format!("already {status}")))
            .map(|status| format!("Upload {upload_id} is {status} (the service said: {message})")),
        _ => None,
    }
}

/// Why a state file cannot be resumed, and what to do instead.
pub fn resume_refusal(error: &ResumeError, state_file: &str) -> String {
    let start_over = format!(
        "delete {state_file} (rm {state_file}) and run the command again to start a new Upload"
    );
    match error {
        ResumeError::NotPending { upload_id, status } => {
            let what = match status {
                UploadStatus::Completed => {
                    "completed already: its File is in `uploads files list`".to_owned()
                }
                UploadStatus::Cancelled => "cancelled".to_owned(),
                other => other.to_string(),
            };
            format!(
                "the state file {state_file} names Upload {upload_id}, which is {what}; {start_over}"
            )
        }
        ResumeError::Expired { upload_id, .. } => {
            format!(
                "the state file {state_file} names Upload {upload_id}, which has expired; {start_over}"
            )
        }
        ResumeError::Malformed { message } => {
            format!("the state file {state_file} is not a saved upload ({message}); {start_over}")
        }
        other => format!("the state file {state_file} cannot be resumed ({other}); {start_over}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_their_default_port() {
        assert_eq!(host_port("http://127.0.0.1:18099/v1"), "127.0.0.1:18099");
        assert_eq!(host_port("https://api.openai.com/v1"), "api.openai.com:443");
        assert_eq!(host_port("http://example.com"), "example.com:80");
        assert_eq!(host_port("http://[::1]:8000/v1"), "[::1]:8000");
    }

    #[test]
    fn a_refused_mime_type_names_what_is_accepted_and_a_purpose_that_takes_it() {
        let limits = Limits::default();
        let message = mime_refusal(&limits, &Purpose::Vision, "text/plain").unwrap();
        assert_eq!(
            message,
            "Invalid MIME type 'text/plain' for purpose 'vision': it accepts .gif .jpeg .jpg .png .webp; --purpose assistants accepts text/plain"
        );
        assert!(mime_refusal(&limits, &Purpose::Assistants, "text/plain").is_none());
    }
}
