//! Wire types of `/uploads*` and `/files*`, field by field as in OpenAI's OpenAPI document.
//!
//! Rules that hold for every type here:
//! * byte counts and timestamps are `u64` (an Upload may hold 8 GiB; `u32` cannot count it);
//! * an enum string this crate does not know round-trips through an `Other(String)` variant,
//!   so a new `status` or `purpose` from the service never breaks a client;
//! * unknown JSON fields are ignored when parsing;
//! * ids are newtypes, so an [`UploadId`] cannot be passed where a [`PartId`] is expected.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a string id newtype with serde as a plain JSON string.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as received from (or minted for) the service.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as it appears on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self::new(id)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// The id of an Upload, `upload_...`.
    UploadId
);
id_type!(
    /// The id of a Part of an Upload, `part_...`.
    PartId
);
id_type!(
    /// The id of a File, `file-...`.
    FileId
);

/// Declares a forward-compatible string enum: known values get variants, anything else
/// round-trips through `Other`.
macro_rules! string_enum {
    (
        $(#[$doc:meta])*
        $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $wire:literal ),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
            /// A value this version does not know; kept verbatim so it round-trips.
            Other(String),
        }

        impl $name {
            /// Every value this version knows, in the order OpenAI's document lists them.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Other(other) => other,
                }
            }

            /// Parses a wire value; never fails (unknown values become `Other`).
            pub fn from_wire(value: &str) -> Self {
                match value {
                    $( $wire => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Ok(Self::from_wire(&value))
            }
        }
    };
}

string_enum!(
    /// The status of an Upload.
    UploadStatus {
        /// Accepting parts; not yet completed, cancelled or expired.
        Pending = "pending",
        /// Completed: the Upload carries its File.
        Completed = "completed",
        /// Cancelled: no more parts are accepted.
        Cancelled = "cancelled",
        /// Past `expires_at` while still pending.
        Expired = "expired",
    }
);

string_enum!(
    /// The purpose of a File or Upload.
    Purpose {
        /// Files for the Assistants API (file search, code interpreter).
        Assistants = "assistants",
        /// Files the Assistants API produced.
        AssistantsOutput = "assistants_output",
        /// Batch API input (`.jsonl`).
        Batch = "batch",
        /// Batch API output.
        BatchOutput = "batch_output",
        /// Fine-tuning training or validation data (`.jsonl`).
        FineTune = "fine-tune",
        /// Fine-tuning result files.
        FineTuneResults = "fine-tune-results",
        /// Images for vision fine-tuning.
        Vision = "vision",
        /// Flexible file type for any purpose.
        UserData = "user_data",
        /// Eval data sets.
        Evals = "evals",
    }
);

string_enum!(
    /// The deprecated processing status of a File; still required by the schema.
    FileStatus {
        /// Uploaded, not yet processed.
        Uploaded = "uploaded",
        /// Processed and ready.
        Processed = "processed",
        /// Processing failed.
        Error = "error",
    }
);

string_enum!(
    /// The anchor of an expiration policy.
    ExpiresAfterAnchor {
        /// Counted from the object's `created_at`.
        CreatedAt = "created_at",
    }
);

string_enum!(
    /// Sort order of a file list by `created_at`.
    ListOrder {
        /// Oldest first.
        Asc = "asc",
        /// Newest first (the default).
        Desc = "desc",
    }
);

/// Expiration policy of the File an Upload (or a file create) produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiresAfter {
    /// What the seconds count from; only `created_at` exists today.
    pub anchor: ExpiresAfterAnchor,
    /// Seconds after the anchor; the service accepts 3600..=2592000.
    pub seconds: u64,
}

impl ExpiresAfter {
    /// Expire `seconds` after the File is created.
    pub fn after_creation(seconds: u64) -> Self {
        Self {
            anchor: ExpiresAfterAnchor::CreatedAt,
            seconds,
        }
    }
}

fn upload_object() -> String {
    "upload".to_owned()
}

fn upload_part_object() -> String {
    "upload.part".to_owned()
}

fn file_object() -> String {
    "file".to_owned()
}

fn list_object() -> String {
    "list".to_owned()
}

/// An Upload: accepts Parts until it is completed (and then carries its File), cancelled or
/// expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The Upload's id.
    pub id: UploadId,
    /// Always `upload`.
    #[serde(default = "upload_object")]
    pub object: String,
    /// The number of bytes the File will hold, declared on create.
    pub bytes: u64,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// The File's name (metadata only).
    pub filename: String,
    /// The File's purpose.
    pub purpose: Purpose,
    /// Where the Upload is in its life.
    pub status: UploadStatus,
    /// Unix seconds after which a pending Upload is `expired`.
    pub expires_at: u64,
    /// The File, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObject>,
}

/// A Part of an Upload, as returned by add-part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPart {
    /// The Part's id, to list on complete.
    pub id: PartId,
    /// Always `upload.part`.
    #[serde(default = "upload_part_object")]
    pub object: String,
    /// Unix seconds when the Part was stored.
    pub created_at: u64,
    /// The Upload the Part belongs to.
    pub upload_id: UploadId,
}

/// A File (`OpenAIFile` in the document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    /// The File's id.
    pub id: FileId,
    /// Always `file`.
    #[serde(default = "file_object")]
    pub object: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// Unix seconds when the File expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The File's name (metadata only).
    pub filename: String,
    /// The File's purpose.
    pub purpose: Purpose,
    /// Deprecated processing status (required by the schema, absent in some examples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<FileStatus>,
    /// Deprecated details of a failed validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<String>,
}

/// A page of Files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// Always `list`.
    #[serde(default = "list_object")]
    pub object: String,
    /// The Files of this page, in the requested order.
    pub data: Vec<FileObject>,
    /// The id of the first File of this page; `None` when the page is empty.
    #[serde(default, with = "page_cursor")]
    pub first_id: Option<FileId>,
    /// The id of the last File of this page: the `after` cursor of the next page.
    #[serde(default, with = "page_cursor")]
    pub last_id: Option<FileId>,
    /// Whether more Files follow this page.
    pub has_more: bool,
}

/// A page's first or last id. OpenAI's document makes them required strings, so an empty
/// page is written with `""` (a client generated from the document parses it); `null` and
/// `""` are both read as no id, since services answer either.
mod page_cursor {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::FileId;

    #[allow(clippy::ref_option)] // the signature serde's `with` requires
    pub(super) fn serialize<S: Serializer>(
        id: &Option<FileId>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.as_ref().map_or("", FileId::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<FileId>, D::Error> {
        let id = Option::<String>::deserialize(deserializer)?;
        Ok(id.filter(|id| !id.is_empty()).map(FileId::new))
    }
}

/// The answer to a File delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedFile {
    /// The deleted File's id.
    pub id: FileId,
    /// Always `file`.
    #[serde(default = "file_object")]
    pub object: String,
    /// Whether the File was deleted.
    pub deleted: bool,
}

/// The body of `POST /uploads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUploadRequest {
    /// The File's name (metadata only).
    pub filename: String,
    /// The File's purpose.
    pub purpose: Purpose,
    /// The exact number of bytes the completed File will hold.
    pub bytes: u64,
    /// The File's MIME type; must be allowed for the purpose.
    pub mime_type: String,
    /// Expiration policy of the resulting File.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<ExpiresAfter>,
}

/// The body of `POST /uploads/{id}/complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteUploadRequest {
    /// The Part ids in file order.
    pub part_ids: Vec<PartId>,
    /// Lower-case hex md5 of the whole File, checked by the service when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// Query of `GET /files`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilesQuery {
    /// Only Files with this purpose.
    pub purpose: Option<Purpose>,
    /// Page size, 1..=10000 (the service's default is 10000).
    pub limit: Option<u32>,
    /// Sort order by `created_at` (the service's default is `desc`).
    pub order: Option<ListOrder>,
    /// Cursor: the `last_id` of the previous page.
    pub after: Option<FileId>,
}

/// OpenAI's error envelope: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ApiErrorDetail,
}

/// The fields of an OpenAI error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    /// A human-readable message.
    pub message: String,
    /// The error class, e.g. `invalid_request_error` (empty when an OpenAI-compatible
    /// service leaves it out).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request field at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code, e.g. `invalid_api_key`.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error body with the given class, message, param and code.
    pub fn new(
        kind: impl Into<String>,
        message: impl Into<String>,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            error: ApiErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: param.map(str::to_owned),
                code: code.map(str::to_owned),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Every `response` example and object example of the spec file, verbatim (including the
    /// trailing commas OpenAI published; they are fixed up by [`parse_lenient`]).
    const SPEC: &str = include_str!("../../../spec/openai-uploads-files.openapi.yaml");

    /// Removes the trailing commas before `}` or `]` that OpenAI's examples carry.
    fn parse_lenient(text: &str) -> Value {
        let mut fixed = String::with_capacity(text.len());
        let chars: Vec<char> = text.chars().collect();
        for (index, &c) in chars.iter().enumerate() {
            if c == ',' {
                let next = chars[index + 1..].iter().find(|c| !c.is_whitespace());
                if matches!(next, Some('}' | ']')) {
                    continue;
                }
            }
            fixed.push(c);
        }
        serde_json::from_str(&fixed).expect("example is JSON after the trailing-comma fix-up")
    }

    /// Pulls every JSON example out of the spec: the `response:` and `example:` strings.
    fn spec_examples() -> Vec<(String, Value)> {
        let mut examples = Vec::new();
        let lines: Vec<&str> = SPEC.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let Some(rest) = trimmed
                .strip_prefix("response: \"")
                .or_else(|| trimmed.strip_prefix("example: \""))
            else {
                continue;
            };
            // A YAML double-quoted scalar folded over several lines: gather until the
            // closing quote, folding line breaks into spaces as YAML does.
            let mut raw = rest.to_owned();
            let mut next = index + 1;
            while !ends_scalar(&raw) {
                raw.push(' ');
                raw.push_str(lines[next].trim_start());
                next += 1;
            }
            raw.pop(); // the closing quote
            let text = unescape_yaml(&raw);
            if text.trim_start().starts_with('{') {
                examples.push((text.clone(), parse_lenient(&text)));
            }
        }
        examples
    }

    fn ends_scalar(raw: &str) -> bool {
        let bytes = raw.as_bytes();
        if bytes.last() != Some(&b'"') {
            return false;
        }
        let backslashes = bytes[..bytes.len() - 1]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        backslashes % 2 == 0
    }

    fn unescape_yaml(raw: &str) -> String {
        let mut out = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                // An escaped space keeps leading whitespace of a folded line.
                Some(' ') => out.push(' '),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => {}
            }
        }
        out
    }

    fn round_trips<T: serde::de::DeserializeOwned + Serialize>(value: &Value) {
        let typed: T = serde_json::from_value(value.clone()).expect("example parses");
        let back = serde_json::to_value(&typed).expect("serializes");
        assert_eq!(&back, value, "serializing gives back the same JSON");
    }

    #[test]
    fn every_spec_example_parses_and_round_trips() {
        let examples = spec_examples();
        // 8 response examples + 3 object examples hold JSON objects.
        assert_eq!(examples.len(), 11, "examples found: {examples:#?}");
        for (text, value) in &examples {
            match value["object"].as_str() {
                Some("upload") => round_trips::<Upload>(value),
                Some("upload.part") => round_trips::<UploadPart>(value),
                Some("list") => round_trips::<FileList>(value),
                Some("file") if value.get("deleted").is_some() => round_trips::<DeletedFile>(value),
                Some("file") => round_trips::<FileObject>(value),
                other => panic!("unexpected example object {other:?}: {text}"),
            }
        }
    }

    #[test]
    fn unknown_enum_values_round_trip_and_unknown_fields_are_ignored() {
        let value = json!({
            "id": "upload_1", "object": "upload", "bytes": 9_000_000_000_u64,
            "created_at": 1, "filename": "a", "purpose": "moderation",
            "status": "archived", "expires_at": 2, "brand_new_field": [1, 2]
        });
        let upload: Upload = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(upload.status, UploadStatus::Other("archived".into()));
        assert_eq!(upload.purpose, Purpose::Other("moderation".into()));
        assert_eq!(upload.bytes, 9_000_000_000);
        let back = serde_json::to_value(&upload).unwrap();
        assert_eq!(back["status"], "archived");
        assert_eq!(back["purpose"], "moderation");
        assert!(back.get("brand_new_field").is_none());
    }

    #[test]
    fn known_enum_values_map_to_variants() {
        for purpose in Purpose::KNOWN {
            assert_eq!(&Purpose::from_wire(purpose.as_str()), purpose);
        }
        assert_eq!(Purpose::from_wire("fine-tune"), Purpose::FineTune);
        assert_eq!(UploadStatus::from_wire("expired"), UploadStatus::Expired);
    }

    #[test]
    fn an_empty_page_has_empty_string_cursors_and_null_reads_as_none() {
        let empty = FileList {
            object: "list".into(),
            data: Vec::new(),
            first_id: None,
            last_id: None,
            has_more: false,
        };
        let json = serde_json::to_value(&empty).unwrap();
        assert_eq!(
            json,
            json!({"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": false})
        );
        for cursor in [json!(null), json!("")] {
            let page: FileList = serde_json::from_value(json!({"object": "list", "data": [],
                "first_id": cursor, "last_id": cursor, "has_more": false}))
            .unwrap();
            assert_eq!(page, empty);
        }
        let page: FileList =
            serde_json::from_value(json!({"data": [], "has_more": false})).unwrap();
        assert_eq!(page.first_id, None);
    }

    #[test]
    fn error_body_uses_type_on_the_wire() {
        let body = ErrorBody::new(
            "invalid_request_error",
            "'bytes' is a required property",
            Some("bytes"),
            None,
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"message": "'bytes' is a required property",
                "type": "invalid_request_error", "param": "bytes", "code": null}})
        );
    }
}
