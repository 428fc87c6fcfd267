//! The encoder: head + data + tail with a known length.

use std::fmt::Write as _;

use bytes::Bytes;

/// A multipart boundary: 1..=70 characters from RFC 2046's safe set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary(String);

/// Characters RFC 2046 allows in a boundary (minus space, which would need care at the end).
fn is_boundary_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(c)
}

impl Boundary {
    /// A boundary made from 16 bytes of caller-supplied entropy (this crate draws no random
    /// numbers itself). 128 bits make a collision with file content practically impossible.
    pub fn from_entropy(entropy: [u8; 16]) -> Self {
        let mut boundary = String::from("----uploads-");
        for byte in entropy {
            let _ = write!(boundary, "{byte:02x}");
        }
        Self(boundary)
    }

    /// A boundary as given, if RFC 2046 allows it.
    pub fn new(boundary: impl Into<String>) -> Option<Self> {
        let boundary = boundary.into();
        let valid = (1..=70).contains(&boundary.len()) && boundary.chars().all(is_boundary_char);
        valid.then_some(Self(boundary))
    }

    /// The boundary without the leading dashes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The file field of a form: the one whose data the caller streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileField<'a> {
    /// The form field name (`data` for a Part, `file` for a file create).
    pub name: &'a str,
    /// The `filename` parameter of its `Content-Disposition`.
    pub filename: &'a str,
    /// Its `Content-Type`.
    pub content_type: &'a str,
}

impl FileField<'_> {
    /// A Part's `data` field exactly as the official Python SDK sends it.
    pub const UPLOAD_PART: FileField<'static> = FileField {
        name: "data",
        filename: "upload",
        content_type: "application/octet-stream",
    };
}

/// A `multipart/form-data` body whose file data the caller supplies between `head` and
/// `tail`. The body on the wire is exactly `head ++ data ++ tail`, `content_length` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct MultipartBody {
    /// The `Content-Type` header value, with the boundary.
    pub content_type: String,
    /// Text fields, then the file field's headers.
    pub head: Bytes,
    /// The file field's end and the closing boundary.
    pub tail: Bytes,
    /// `head.len() + data_len + tail.len()`: the `Content-Length` header value.
    pub content_length: u64,
}

impl MultipartBody {
    /// A form of text fields followed by one file field of `data_len` bytes.
    pub fn new(
        boundary: &Boundary,
        text_fields: &[(&str, &str)],
        file: FileField<'_>,
        data_len: u64,
    ) -> Self {
        let mut head = String::new();
        for (name, value) in text_fields {
            let _ = write!(
                head,
                "--{}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                boundary.as_str(),
                escape_quoted(name),
            );
        }
        let _ = write!(
            head,
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            boundary.as_str(),
            escape_quoted(file.name),
            escape_quoted(file.filename),
            file.content_type,
        );
        let tail = format!("\r\n--{}--\r\n", boundary.as_str());
        Self {
            content_type: format!("multipart/form-data; boundary={}", boundary.as_str()),
            content_length: head.len() as u64 + data_len + tail.len() as u64,
            head: Bytes::from(head),
            tail: Bytes::from(tail),
        }
    }

    /// The body of an add-part request carrying `data_len` bytes of `data`.
    pub fn upload_part(boundary: &Boundary, data_len: u64) -> Self {
        Self::new(boundary, &[], FileField::UPLOAD_PART, data_len)
    }

    /// The whole body with `data` in place, for bodies small enough to hold in memory.
    pub fn assemble(&self, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.head.len() + data.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(data);
        body.extend_from_slice(&self.tail);
        body
    }
}

/// Escapes a quoted header parameter as httpx and the WHATWG spec do, so a name with a quote
/// or a line break cannot end the header early, and a backslash survives the quoting.
fn escape_quoted(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_body_matches_the_official_sdk_byte_for_byte() {
        let boundary = Boundary::new("b0undary").unwrap();
        let body = MultipartBody::upload_part(&boundary, 5);
        let bytes = body.assemble(b"hello");
        assert_eq!(
            bytes,
            b"--b0undary\r\nContent-Disposition: form-data; name=\"data\"; filename=\"upload\"\r\n\
Content-Type: application/octet-stream\r\n\r\nhello\r\n--b0undary--\r\n"
        );
        assert_eq!(body.content_length, bytes.len() as u64);
        assert_eq!(body.content_type, "multipart/form-data; boundary=b0undary");
    }

    #[test]
    fn text_fields_come_before_the_file_and_quotes_are_escaped() {
        let boundary = Boundary::new("x").unwrap();
        let file = FileField {
            name: "file",
            filename: "a\"b\r\n\\.txt",
            content_type: "text/plain",
        };
        let body = MultipartBody::new(&boundary, &[("purpose", "assistants")], file, 0);
        assert_eq!(
            body.assemble(b""),
            b"--x\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%22b%0D%0A\\\\.txt\"\r\n\
Content-Type: text/plain\r\n\r\n\r\n--x--\r\n"
        );
    }

    #[test]
    fn boundaries_come_from_entropy_or_are_checked() {
        let boundary = Boundary::from_entropy([0xab; 16]);
        assert_eq!(
            boundary.as_str(),
            format!("----uploads-{}", "ab".repeat(16))
        );
        assert!(Boundary::new(boundary.as_str()).is_some());
        assert!(Boundary::new("").is_none());
        assert!(Boundary::new("has space").is_none());
        assert!(Boundary::new("x".repeat(71)).is_none());
    }
}
