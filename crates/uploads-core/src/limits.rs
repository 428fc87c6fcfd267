//! The rules of the service as data: size limits, expiry, which MIME types each purpose
//! allows, and the validation of a create request with every problem named by its `param`.

use std::fmt;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::rejection::Rejection;
use crate::types::{CreateUploadRequest, ExpiresAfter, ExpiresAfterAnchor, Purpose};

/// One MiB.
pub const MIB: u64 = 1024 * 1024;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;

/// Which MIME types a purpose accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MimeRule {
    /// Any MIME type (`user_data`).
    Any,
    /// Exactly these (lower-case, without parameters).
    OneOf(Vec<String>),
}

/// The limits and rules a service enforces. [`Limits::default`] is OpenAI's; change one with
/// the `with_*` methods (the struct may gain fields, so it cannot be built by its fields
/// outside this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest `data` of one Part: 64 MiB, the size the official SDK sends.
    pub max_part_bytes: u64,
    /// Largest Upload (declared `bytes`, and all Parts added to it): 8 GiB.
    pub max_upload_bytes: u64,
    /// Most Parts one Upload may hold (listed on complete or not): 10,000, as S3's multipart
    /// uploads. At the default 64 MiB per Part that is far above `max_upload_bytes`, and a
    /// complete listing that many Part ids is about 400 KB of JSON.
    pub max_parts_per_upload: u64,
    /// Seconds from an Upload's creation to its `expires_at`: one hour.
    pub upload_ttl_secs: u64,
    /// Allowed `expires_after.seconds`: one hour to thirty days.
    pub expires_after_secs: RangeInclusive<u64>,
    /// Purposes an Upload may be created with, and the MIME types each allows.
    pub purposes: Vec<(Purpose, MimeRule)>,
    /// Seconds after creation that Files of a purpose expire when `expires_after` is not
    /// given: `batch` Files after 30 days, as OpenAI documents; others never.
    pub default_file_expiry: Vec<(Purpose, u64)>,
    /// Bytes each owner may keep: its Files' bytes plus its pending Uploads' declared `bytes`
    /// (`None`, the default: no quota).
    pub quota_bytes: Option<u64>,
    /// Files each owner may keep, a pending Upload counting as the File it will become
    /// (`None`, the default: no quota).
    pub quota_files: Option<u64>,
    /// Requests each API key may make per minute (`None`, the default: no limit).
    pub requests_per_minute: Option<u32>,
}

impl Limits {
    /// These limits with parts of at most `bytes`.
    #[must_use]
    pub fn with_max_part_bytes(mut self, bytes: u64) -> Self {
        self.max_part_bytes = bytes;
        self
    }

    /// These limits with Uploads of at most `bytes`.
    #[must_use]
    pub fn with_max_upload_bytes(mut self, bytes: u64) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// These limits with at most `parts` Parts per Upload.
    #[must_use]
    pub fn with_max_parts_per_upload(mut self, parts: u64) -> Self {
        self.max_parts_per_upload = parts;
        self
    }

    /// These limits with each owner keeping at most `bytes` (see [`Limits::quota_bytes`]).
    #[must_use]
    pub fn with_quota_bytes(mut self, bytes: u64) -> Self {
        self.quota_bytes = Some(bytes);
        self
    }

    /// These limits with each owner keeping at most `files` Files (see [`Limits::quota_files`]).
    #[must_use]
    pub fn with_quota_files(mut self, files: u64) -> Self {
        self.quota_files = Some(files);
        self
    }

    /// These limits with each API key making at most `requests` requests per minute.
    #[must_use]
    pub fn with_requests_per_minute(mut self, requests: u32) -> Self {
        self.requests_per_minute = Some(requests);
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        let jsonl = || {
            MimeRule::OneOf(strings(&[
                "text/jsonl",
                "application/jsonl",
                "application/x-jsonlines",
                "application/x-ndjson",
                "application/json",
                "text/plain",
            ]))
        };
        Self {
            max_part_bytes: 64 * MIB,
            max_upload_bytes: 8 * GIB,
            max_parts_per_upload: 10_000,
            upload_ttl_secs: 3600,
            expires_after_secs: 3600..=2_592_000,
            purposes: vec![
                (
                    Purpose::Assistants,
                    MimeRule::OneOf(strings(ASSISTANTS_MIME)),
                ),
                (Purpose::Batch, jsonl()),
                (Purpose::FineTune, jsonl()),
                (
                    Purpose::Vision,
                    MimeRule::OneOf(strings(&[
                        "image/png",
                        "image/jpeg",
                        "image/gif",
                        "image/webp",
                    ])),
                ),
                (Purpose::UserData, MimeRule::Any),
                (Purpose::Evals, jsonl()),
            ],
            default_file_expiry: vec![(Purpose::Batch, 2_592_000)],
            quota_bytes: None,
            quota_files: None,
            requests_per_minute: None,
        }
    }
}

/// File search and code interpreter types, as OpenAI documents them for `assistants`.
const ASSISTANTS_MIME: &[&str] = &[
    "text/x-c",
    "text/x-c++",
    "text/x-csharp",
    "text/css",
    "text/csv",
    "application/csv",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "text/x-golang",
    "text/html",
    "text/x-java",
    "text/javascript",
    "application/javascript",
    "application/json",
    "text/markdown",
    "application/pdf",
    "text/x-php",
    "text/x-python",
    "text/x-script.python",
    "text/x-ruby",
    "application/x-sh",
    "text/x-tex",
    "application/typescript",
    "text/plain",
    "image/jpeg",
    "image/gif",
    "image/png",
    "application/x-tar",
    "application/xml",
    "text/xml",
    "application/zip",
    "application/octet-stream",
];

/// The MIME type a file name's extension suggests, for clients that must send one.
const EXTENSION_MIME: &[(&str, &str)] = &[
    ("c", "text/x-c"),
    ("cpp", "text/x-c++"),
    ("cs", "text/x-csharp"),
    ("css", "text/css"),
    ("csv", "text/csv"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("gif", "image/gif"),
    ("go", "text/x-golang"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("java", "text/x-java"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "text/javascript"),
    ("json", "application/json"),
    ("jsonl", "text/jsonl"),
    ("md", "text/markdown"),
    ("pdf", "application/pdf"),
    ("php", "text/x-php"),
    ("pkl", "application/octet-stream"),
    ("png", "image/png"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("py", "text/x-python"),
    ("rb", "text/x-ruby"),
    ("sh", "application/x-sh"),
    ("tar", "application/x-tar"),
    ("tex", "text/x-tex"),
    ("ts", "application/typescript"),
    ("txt", "text/plain"),
    ("webp", "image/webp"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("xml", "application/xml"),
    ("zip", "application/zip"),
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&item| item.to_owned()).collect()
}

/// The MIME type for a file name's extension (case-insensitive), if it is one OpenAI knows.
pub fn mime_type_for_filename(filename: &str) -> Option<&'static str> {
    let (_, extension) = filename.rsplit_once('.')?;
    let extension = extension.to_ascii_lowercase();
    EXTENSION_MIME
        .iter()
        .find(|(known, _)| *known == extension)
        .map(|&(_, mime)| mime)
}

/// One problem with a request: the field at fault and OpenAI's message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `bytes` or `expires_after.seconds`; `None` for the body as a whole.
    pub param: Option<String>,
    /// The message, in OpenAI's style (`'bytes' is a required property`).
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            param: param.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A field the request's schema does not have, in OpenAI's words: `Additional properties
    /// are not allowed ('{name}' was unexpected)`, naming the field as `param`.
    pub fn unexpected(name: &str) -> Self {
        Self::new(
            Some(name),
            format!("Additional properties are not allowed ('{name}' was unexpected)"),
        )
    }
}

impl From<FieldError> for Rejection {
    /// A single problem is a 400 naming its field.
    fn from(problem: FieldError) -> Self {
        Rejection::invalid(problem.param.as_deref(), problem.message)
    }
}

/// Every problem found in a request, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// All messages, joined: what a 400 body says.
    pub fn message(&self) -> String {
        self.0
            .iter()
            .map(|problem| problem.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The 400 a service answers: the first problem's `param`, every problem's message.
    pub fn to_rejection(&self) -> Rejection {
        let param = self.0.first().and_then(|problem| problem.param.as_deref());
        Rejection::invalid(param, self.message())
    }
}

/// OpenAI's message for a body that is not JSON.
pub const NOT_JSON_MESSAGE: &str = "We could not parse the JSON body of your request. (HINT: This \
likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
but what was sent was not valid JSON.)";

impl Limits {
    /// The MIME rule for a purpose, or `None` when Uploads do not accept the purpose.
    pub fn mime_rule(&self, purpose: &Purpose) -> Option<&MimeRule> {
        self.purposes
            .iter()
            .find(|(known, _)| known == purpose)
            .map(|(_, rule)| rule)
    }

    /// Checks a MIME type against a purpose's rule; `Err` carries OpenAI-style messages.
    pub fn check_mime_type(&self, purpose: &Purpose, mime_type: &str) -> Result<(), FieldError> {
        let Some(rule) = self.mime_rule(purpose) else {
            return Err(self.purpose_error(purpose.as_str()));
        };
        let essence = mime_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match rule {
            MimeRule::Any if !essence.is_empty() => Ok(()),
            MimeRule::OneOf(allowed) if allowed.contains(&essence) => Ok(()),
            MimeRule::Any => Err(FieldError::new(
                Some("mime_type"),
                "'mime_type' must not be empty",
            )),
            MimeRule::OneOf(allowed) => Err(FieldError::new(
                Some("mime_type"),
                format!(
                    "Invalid MIME type '{mime_type}' for purpose '{purpose}'. Supported MIME types: {}",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// The 400 for a purpose this service does not take, listing those it does.
    pub(crate) fn purpose_error(&self, given: &str) -> FieldError {
        not_one_of(
            given,
            self.purposes.iter().map(|(purpose, _)| purpose),
            "purpose",
        )
    }

    /// When a File of `purpose` created at `created_at` expires: `expires_after` when given,
    /// else the purpose's default, else never.
    pub fn file_expires_at(
        &self,
        purpose: &Purpose,
        expires_after: Option<&ExpiresAfter>,
        created_at: u64,
    ) -> Option<u64> {
        let seconds = match expires_after {
            Some(policy) => Some(policy.seconds),
            None => self
                .default_file_expiry
                .iter()
                .find(|(known, _)| known == purpose)
                .map(|&(_, seconds)| seconds),
        };
        seconds.map(|seconds| created_at.saturating_add(seconds))
    }

    /// Checks `expires_after` seconds against the allowed range.
    pub fn check_expires_after(&self, expires_after: &ExpiresAfter) -> Result<(), FieldError> {
        if expires_after.anchor != ExpiresAfterAnchor::CreatedAt {
            return Err(FieldError::new(
                Some("expires_after.anchor"),
                format!(
                    "'{}' is not one of ['created_at'] - 'expires_after.anchor'",
                    expires_after.anchor
                ),
            ));
        }
        range_error(
            expires_after.seconds,
            &self.expires_after_secs,
            "expires_after.seconds",
        )
    }

    /// Validates a `POST /uploads` body as raw bytes, reporting every problem with its
    /// `param`, in OpenAI's message style; returns the typed request when there is none.
    pub fn validate_create_upload(
        &self,
        body: &[u8],
    ) -> Result<CreateUploadRequest, ValidationErrors> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| ValidationErrors(vec![FieldError::new(None, NOT_JSON_MESSAGE)]))?;
        let Value::Object(fields) = value else {
            return Err(ValidationErrors(vec![FieldError::new(
                None,
                format!("{} is not of type 'object'", short_json(&value)),
            )]));
        };
        let mut problems = Vec::new();
        let filename = required_string(&fields, "filename", &mut problems);
        if filename.as_deref() == Some("") {
            problems.push(FieldError::new(
                Some("filename"),
                "'' is too short - 'filename'",
            ));
        }
        let purpose =
            required_string(&fields, "purpose", &mut problems).map(|p| Purpose::from_wire(&p));
        if let Some(purpose) = &purpose
            && self.mime_rule(purpose).is_none()
        {
            problems.push(self.purpose_error(purpose.as_str()));
        }
        let bytes = required_field(&fields, "bytes", &mut problems).and_then(|value| {
            let bytes = as_integer(value, "bytes", &mut problems)?;
            if let Err(problem) = range_error(bytes, &(0..=self.max_upload_bytes), "bytes") {
                problems.push(problem);
            }
            Some(bytes)
        });
        let mime_type = required_string(&fields, "mime_type", &mut problems);
        if let (Some(purpose), Some(mime_type)) = (&purpose, &mime_type)
            && self.mime_rule(purpose).is_some()
            && let Err(problem) = self.check_mime_type(purpose, mime_type)
        {
            problems.push(problem);
        }
        let expires_after = match fields.get("expires_after") {
            None | Some(Value::Null) => None,
            Some(value) => self.parse_expires_after(value, &mut problems),
        };
        for name in fields.keys() {
            if !["filename", "purpose", "bytes", "mime_type", "expires_after"]
                .contains(&name.as_str())
            {
                problems.push(FieldError::unexpected(name));
            }
        }
        match (filename, purpose, bytes, mime_type) {
            (Some(filename), Some(purpose), Some(bytes), Some(mime_type))
                if problems.is_empty() =>
            {
                Ok(CreateUploadRequest {
                    filename,
                    purpose,
                    bytes,
                    mime_type,
                    expires_after,
                })
            }
            _ => Err(ValidationErrors(problems)),
        }
    }

    fn parse_expires_after(
        &self,
        value: &Value,
        problems: &mut Vec<FieldError>,
    ) -> Option<ExpiresAfter> {
        let Value::Object(fields) = value else {
            problems.push(FieldError::new(
                Some("expires_after"),
                format!(
                    "{} is not of type 'object' - 'expires_after'",
                    short_json(value)
                ),
            ));
            return None;
        };
        let before = problems.len();
        let anchor = nested_required(fields, "anchor", problems).and_then(|value| match value {
            Value::String(anchor) => Some(ExpiresAfterAnchor::from_wire(anchor)),
            other => {
                problems.push(type_error(other, "string", "expires_after.anchor"));
                None
            }
        });
        let seconds = nested_required(fields, "seconds", problems)
            .and_then(|value| as_integer(value, "expires_after.seconds", problems));
        let expires_after = ExpiresAfter {
            anchor: anchor?,
            seconds: seconds?,
        };
        if problems.len() == before
            && let Err(problem) = self.check_expires_after(&expires_after)
        {
            problems.push(problem);
        }
        Some(expires_after)
    }
}

fn nested_required<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    problems: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    let value = fields.get(name);
    if value.is_none() {
        problems.push(FieldError::new(
            Some(&format!("expires_after.{name}")),
            format!("'{name}' is a required property - 'expires_after'"),
        ));
    }
    value
}

fn required_field<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    problems: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            problems.push(FieldError::new(
                Some(name),
                format!("'{name}' is a required property"),
            ));
            None
        }
        Some(value) => Some(value),
    }
}

fn required_string(
    fields: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<FieldError>,
) -> Option<String> {
    match required_field(fields, name, problems)? {
        Value::String(text) => Some(text.clone()),
        other => {
            problems.push(type_error(other, "string", name));
            None
        }
    }
}

fn as_integer(value: &Value, param: &str, problems: &mut Vec<FieldError>) -> Option<u64> {
    if let Some(number) = value.as_u64() {
        return Some(number);
    }
    if value.as_i64().is_some() {
        problems.push(FieldError::new(Some(param), below_minimum(value, 0, param)));
    } else {
        problems.push(type_error(value, "integer", param));
    }
    None
}

fn range_error(value: u64, range: &RangeInclusive<u64>, param: &str) -> Result<(), FieldError> {
    if value < *range.start() {
        Err(FieldError::new(
            Some(param),
            below_minimum(value, range.start(), param),
        ))
    } else if value > *range.end() {
        Err(FieldError::new(
            Some(param),
            above_maximum(value, range.end(), param),
        ))
    } else {
        Ok(())
    }
}

/// OpenAI's problem for a value that is not one of the allowed ones.
pub(crate) fn not_one_of<T: fmt::Display>(
    given: &str,
    allowed: impl IntoIterator<Item = T>,
    param: &str,
) -> FieldError {
    let allowed: Vec<String> = allowed
        .into_iter()
        .map(|value| format!("'{value}'"))
        .collect();
    FieldError::new(
        Some(param),
        format!(
            "{} is not one of [{}] - '{param}'",
            quoted(given),
            allowed.join(", ")
        ),
    )
}

/// Page sizes of `GET /files`: 1 to 10,000 (10,000 when not given).
pub const LIST_FILES_LIMITS: RangeInclusive<u32> = 1..=10_000;

/// The 400 for a `limit` outside [`LIST_FILES_LIMITS`]; `shown` is the value as sent.
pub(crate) fn list_limit_error(shown: &str, below: bool) -> Rejection {
    let message = if below {
        below_minimum(shown, LIST_FILES_LIMITS.start(), "limit")
    } else {
        above_maximum(shown, LIST_FILES_LIMITS.end(), "limit")
    };
    Rejection::invalid(Some("limit"), message)
}

/// OpenAI's message for a number under its minimum.
pub(crate) fn below_minimum(
    shown: impl fmt::Display,
    min: impl fmt::Display,
    param: &str,
) -> String {
    format!("{shown} is less than the minimum of {min} - '{param}'")
}

/// OpenAI's message for a number over its maximum.
pub(crate) fn above_maximum(
    shown: impl fmt::Display,
    max: impl fmt::Display,
    param: &str,
) -> String {
    format!("{shown} is greater than the maximum of {max} - '{param}'")
}

fn type_error(value: &Value, expected: &str, param: &str) -> FieldError {
    FieldError::new(
        Some(param),
        format!(
            "{} is not of type '{expected}' - '{param}'",
            short_json(value)
        ),
    )
}

/// A value as OpenAI quotes it in messages: strings in single quotes, the rest as JSON,
/// cut short so a huge value cannot make a huge message.
pub(crate) fn short_json(value: &Value) -> String {
    match value {
        Value::String(text) => quoted(text),
        other => shortened(&other.to_string()),
    }
}

/// A string in single quotes, as OpenAI's messages quote strings, cut short.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", shortened(text))
}

/// A text cut to 100 characters, so a huge value cannot make a huge message.
pub(crate) fn shortened(text: &str) -> String {
    if text.chars().count() > 100 {
        let cut: String = text.chars().take(97).collect();
        format!("{cut}...")
    } else {
        text.to_owned()
    }
}

/// Why a [`Limits`] value cannot serve any upload (see [`Limits::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `max_part_bytes` is 0: no part could carry data.
    #[error("the part limit must be at least 1 byte")]
    ZeroPartBytes,
    /// `max_upload_bytes` is 0: no file with any data could be uploaded.
    #[error("the upload limit must be at least 1 byte")]
    ZeroUploadBytes,
    /// `upload_ttl_secs` is 0: every Upload would expire as it is created.
    #[error("Uploads must live at least 1 second")]
    ZeroUploadTtl,
    /// `expires_after_secs` is an empty range: no `expires_after` could be accepted.
    #[error("the range of expires_after seconds is empty ({start}..={end})")]
    EmptyExpiresAfter {
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
    },
    /// No purpose is accepted, so no Upload could be created.
    #[error("no purpose is accepted")]
    NoPurposes,
}

/// How many MIME types (or extensions) [`Limits::accepted_summary`] names before "and N more".
const SUMMARY_ITEMS: usize = 8;

impl Limits {
    /// Checks that these limits can serve uploads at all; a server refuses to start with
    /// limits that fail this.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_part_bytes == 0 {
            return Err(LimitsError::ZeroPartBytes);
        }
        if self.max_upload_bytes == 0 {
            return Err(LimitsError::ZeroUploadBytes);
        }
        if self.upload_ttl_secs == 0 {
            return Err(LimitsError::ZeroUploadTtl);
        }
        if self.expires_after_secs.is_empty() {
            return Err(LimitsError::EmptyExpiresAfter {
                start: *self.expires_after_secs.start(),
                end: *self.expires_after_secs.end(),
            });
        }
        if self.purposes.is_empty() {
            return Err(LimitsError::NoPurposes);
        }
        Ok(())
    }

    /// Whether `purpose` accepts `mime_type` (parameters and case ignored).
    pub fn accepts_mime_type(&self, purpose: &Purpose, mime_type: &str) -> bool {
        self.check_mime_type(purpose, mime_type).is_ok()
    }

    /// The purposes that accept `mime_type`, in this value's order, those that accept any
    /// type last: what to suggest when a purpose refuses a file.
    pub fn purposes_accepting(&self, mime_type: &str) -> Vec<&Purpose> {
        let (specific, any): (Vec<_>, Vec<_>) = self
            .purposes
            .iter()
            .filter(|(purpose, _)| self.accepts_mime_type(purpose, mime_type))
            .partition(|(_, rule)| matches!(rule, MimeRule::OneOf(_)));
        specific
            .into_iter()
            .chain(any)
            .map(|(purpose, _)| purpose)
            .collect()
    }

    /// What a purpose accepts, short enough for one line of an error message: `any MIME
    /// type`, or the file extensions it takes (`.gif .jpeg .jpg .png .webp`), cut after a few
    /// with "and N more"; `None` when the purpose is not accepted at all.
    pub fn accepted_summary(&self, purpose: &Purpose) -> Option<String> {
        let allowed = match self.mime_rule(purpose)? {
            MimeRule::Any => return Some("any MIME type".to_owned()),
            MimeRule::OneOf(allowed) => allowed,
        };
        let mut extensions: Vec<String> = EXTENSION_MIME
            .iter()
            .filter(|(_, mime)| allowed.iter().any(|allowed| allowed == mime))
            .map(|(extension, _)| format!(".{extension}"))
            .collect();
        extensions.sort();
        let (items, total) = if extensions.is_empty() {
            (allowed.clone(), allowed.len())
        } else {
            let total = extensions.len();
            (extensions, total)
        };
        let shown = items
            .iter()
            .take(SUMMARY_ITEMS)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        Some(if total > SUMMARY_ITEMS {
            format!("{shown} and {} more", total - SUMMARY_ITEMS)
        } else {
            shown
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(body: &Value) -> Vec<(Option<String>, String)> {
        let bytes = serde_json::to_vec(body).unwrap();
        match Limits::default().validate_create_upload(&bytes) {
            Ok(request) => panic!("expected problems, got {request:?}"),
            Err(errors) => errors.0.into_iter().map(|e| (e.param, e.message)).collect(),
        }
    }

    #[allow(clippy::unnecessary_wraps)] // reads as the `param` field it stands for
    fn param(name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    #[test]
    fn a_valid_request_parses() {
        let body = json!({"filename": "train.jsonl", "purpose": "fine-tune", "bytes": 2_147_483_648_u64,
            "mime_type": "text/jsonl", "expires_after": {"anchor": "created_at", "seconds": 3600}});
        let request = Limits::default()
            .validate_create_upload(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(request.bytes, 2_147_483_648);
        assert_eq!(request.purpose, Purpose::FineTune);
        assert_eq!(
            request.expires_after,
            Some(ExpiresAfter::after_creation(3600))
        );
    }

    #[test]
    fn every_missing_field_is_reported_in_order() {
        assert_eq!(
            problems(&json!({})),
            vec![
                (
                    param("filename"),
                    "'filename' is a required property".to_owned()
                ),
                (
                    param("purpose"),
                    "'purpose' is a required property".to_owned()
                ),
                (param("bytes"), "'bytes' is a required property".to_owned()),
                (
                    param("mime_type"),
                    "'mime_type' is a required property".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn wrong_values_get_openai_messages() {
        let found = problems(
            &json!({"filename": "a", "purpose": "moderation", "bytes": "12",
            "mime_type": "text/plain"}),
        );
        assert_eq!(
            found,
            vec![
                (
                    param("purpose"),
                    "'moderation' is not one of ['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'] - 'purpose'"
                        .to_owned()
                ),
                (param("bytes"), "'12' is not of type 'integer' - 'bytes'".to_owned()),
            ]
        );
    }

    #[test]
    fn sizes_and_expiry_are_bounded() {
        let found = problems(
            &json!({"filename": "a", "purpose": "batch", "bytes": 8 * GIB + 1,
            "mime_type": "text/jsonl", "expires_after": {"anchor": "created_at", "seconds": 59}}),
        );
        assert_eq!(
            found,
            vec![
                (
                    param("bytes"),
                    "8589934593 is greater than the maximum of 8589934592 - 'bytes'".to_owned()
                ),
                (
                    param("expires_after.seconds"),
                    "59 is less than the minimum of 3600 - 'expires_after.seconds'".to_owned()
                ),
            ]
        );
        let found = problems(&json!({"filename": "a", "purpose": "batch", "bytes": -1,
            "mime_type": "text/jsonl"}));
        assert_eq!(
            found,
            vec![(
                param("bytes"),
                "-1 is less than the minimum of 0 - 'bytes'".to_owned()
            )]
        );
    }

    #[test]
    fn mime_types_follow_the_purpose() {
        let found = problems(
            &json!({"filename": "a.pdf", "purpose": "vision", "bytes": 1,
            "mime_type": "application/pdf"}),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, param("mime_type"));
        assert!(
            found[0]
                .1
                .starts_with("Invalid MIME type 'application/pdf' for purpose 'vision'")
        );
        let limits = Limits::default();
        assert!(
            limits
                .check_mime_type(&Purpose::UserData, "application/x-anything")
                .is_ok()
        );
        assert!(
            limits
                .check_mime_type(&Purpose::Vision, "IMAGE/PNG; q=1")
                .is_ok()
        );
    }

    #[test]
    fn unknown_fields_and_non_objects_are_refused() {
        let found = problems(&json!({"filename": "a", "purpose": "batch", "bytes": 1,
            "mime_type": "text/jsonl", "colour": "red"}));
        assert_eq!(
            found,
            vec![(
                param("colour"),
                "Additional properties are not allowed ('colour' was unexpected)".to_owned()
            )]
        );
        assert_eq!(
            problems(&json!([1])),
            vec![(None, "[1] is not of type 'object'".to_owned())]
        );
        let not_json = Limits::default()
            .validate_create_upload(b"{nope")
            .unwrap_err();
        assert_eq!(not_json.0, vec![FieldError::new(None, NOT_JSON_MESSAGE)]);
    }

    #[test]
    fn the_rejection_names_the_first_param_and_every_message() {
        let errors = Limits::default().validate_create_upload(b"{}").unwrap_err();
        let rejection = errors.to_rejection();
        assert_eq!(rejection.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(rejection.param(), Some("filename"));
        assert!(
            rejection
                .body
                .error
                .message
                .contains("'bytes' is a required property")
        );
    }

    #[test]
    fn files_expire_as_asked_or_by_their_purpose() {
        let limits = Limits::default();
        let week = ExpiresAfter::after_creation(604_800);
        assert_eq!(
            limits.file_expires_at(&Purpose::Batch, None, 100),
            Some(100 + 2_592_000)
        );
        assert_eq!(
            limits.file_expires_at(&Purpose::Batch, Some(&week), 100),
            Some(100 + 604_800)
        );
        assert_eq!(
            limits.file_expires_at(&Purpose::Assistants, None, 100),
            None
        );
        assert_eq!(
            limits.file_expires_at(&Purpose::Vision, Some(&week), 100),
            Some(100 + 604_800)
        );
    }

    #[test]
    fn extensions_map_to_mime_types() {
        assert_eq!(mime_type_for_filename("train.JSONL"), Some("text/jsonl"));
        assert_eq!(mime_type_for_filename("photo.jpg"), Some("image/jpeg"));
        assert_eq!(mime_type_for_filename("README"), None);
    }

    #[test]
    fn impossible_limits_are_named() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let zero_part = Limits {
            max_part_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(zero_part.validate(), Err(LimitsError::ZeroPartBytes));
        let zero_upload = Limits {
            max_upload_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(zero_upload.validate(), Err(LimitsError::ZeroUploadBytes));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = Limits {
            expires_after_secs: 10..=1,
            ..Limits::default()
        };
        assert!(matches!(
            empty.validate(),
            Err(LimitsError::EmptyExpiresAfter { start: 10, end: 1 })
        ));
    }

    #[test]
    fn refusals_can_suggest_a_purpose_and_say_what_is_accepted() {
        let limits = Limits::default();
        assert_eq!(
            limits.purposes_accepting("image/png"),
            vec![&Purpose::Assistants, &Purpose::Vision, &Purpose::UserData]
        );
        assert_eq!(
            limits.purposes_accepting("text/plain; charset=utf-8")[0],
            &Purpose::Assistants
        );
        assert_eq!(
            limits.purposes_accepting("application/x-weird"),
            vec![&Purpose::UserData]
        );
        assert_eq!(
            limits.accepted_summary(&Purpose::Vision).as_deref(),
            Some(".gif .jpeg .jpg .png .webp")
        );
        assert_eq!(
            limits.accepted_summary(&Purpose::FineTune).as_deref(),
            Some(".json .jsonl .txt")
        );
        assert_eq!(
            limits.accepted_summary(&Purpose::UserData).as_deref(),
            Some("any MIME type")
        );
        let assistants = limits.accepted_summary(&Purpose::Assistants).unwrap();
        assert!(assistants.ends_with(" more"), "{assistants}");
        assert!(
            limits
                .accepted_summary(&Purpose::Other("x".into()))
                .is_none()
        );
        assert!(limits.accepts_mime_type(&Purpose::Batch, "application/JSON"));
    }
}
