//! The service's two `multipart/form-data` request bodies, read over the
//! [`MultipartDecoder`]'s events: the add-part form (`data`) and the `POST /files` form
//! (`file`, `purpose`, `expires_after[anchor]`, `expires_after[seconds]`).
//!
//! A reader is opened from the request's head (refusing a body that cannot be such a form
//! before it is read), fed the body's chunks as they arrive, and polled for the one field
//! whose bytes are stored ([`FormEvent`]); everything else it checks itself. When the body
//! ends, `finish` returns the typed form or the [`Rejection`] to answer with:
//!
//! ```text
//!  open(head) ─▶ feed(chunk) ─▶ poll() ─▶ Some(Start | Data) ─▶ the caller stores bytes
//!                  ▲              │
//!                  └── None ◀─────┘   (body ended: finish() ─▶ typed form | Rejection)
//! ```
//!
//! The caller MUST NOT treat the stored bytes as accepted until `finish` succeeds.

use bytes::Bytes;

use crate::ledger::NewFile;
use crate::limits::{FieldError, MIB};
use crate::multipart::{
    DecoderLimits, Event, MultipartDecoder, MultipartError, boundary_from_content_type,
};
use crate::rejection::Rejection;
use crate::types::{ExpiresAfter, ExpiresAfterAnchor};

/// The largest File `POST /files` takes in one request, as OpenAI documents.
pub const MAX_DIRECT_FILE_BYTES: u64 = 512 * MIB;
/// The largest text field of a form (`purpose`, `expires_after[...]`).
pub const MAX_TEXT_FIELD_BYTES: usize = 1024;

/// The fewest bytes the `file` field of a `POST /files` body declaring `declared_length`
/// bytes can hold: the length less the most every other part of the form can take (its
/// preamble, each field's header block and boundary, the text fields). A quota refuses a
/// body from its head alone only when even this much would not fit.
pub fn min_file_bytes(declared_length: u64) -> u64 {
    declared_length.saturating_sub(DecoderLimits::default().max_body_bytes(0))
}

/// The longest body a form reader reads for a form whose field holds at most
/// `max_field_bytes` (a Part's `data`, a File's `file`): the data and the rest of the form at
/// its most. A longer declared `Content-Length` is refused (413) before the body is asked for.
pub fn max_form_bytes(max_field_bytes: u64) -> u64 {
    DecoderLimits::default()
        .with_max_field_bytes(max_field_bytes)
        .max_body_bytes(max_field_bytes)
}

/// What a form reader is opened with, from a request's head: its `Content-Type` and its
/// declared `Content-Length` (`None` when absent or unreadable).
pub fn form_head(headers: &http::HeaderMap) -> (Option<&str>, Option<u64>) {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    (content_type, declared)
}

/// What a reader yields: the stored field starting, then its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormEvent {
    /// The stored field (`data` or `file`) begins: open where its bytes go.
    Start,
    /// The next bytes of the stored field.
    Data(Bytes),
}

/// What a driver does with either form: feed it the body, poll it for the stored field.
pub trait FormReader {
    /// What the form says besides its stored field.
    type Form;

    /// Hands the reader the body's next chunk (ignored after the closing boundary).
    fn feed(&mut self, chunk: Bytes);

    /// The next event of the stored field; `None` when the reader needs the next chunk (or
    /// the body is over). `Data` only follows `Start`.
    ///
    /// # Errors
    /// The [`Rejection`] to answer with; the form is over.
    fn poll(&mut self) -> Result<Option<FormEvent>, Rejection>;

    /// Once the body has ended: the form, if it is a whole one.
    ///
    /// # Errors
    /// The [`Rejection`] to answer with (a body cut short, a required field missing).
    fn finish(self) -> Result<Self::Form, Rejection>;
}

/// The decoder plus what every form shares: the 413 before the body, the refusals of a
/// malformed body, and an epilogue that is read and ignored.
#[derive(Debug)]
struct FormDecoder {
    decoder: MultipartDecoder,
    ended: bool,
}

impl FormDecoder {
    /// 400 when `content_type` is not `multipart/form-data` with a boundary; 413 on `field`
    /// when `declared_length` is more than a form whose `field` holds `max_field_bytes` can
    /// be (so `Expect: 100-continue` gets its answer, not `100 Continue`).
    fn open(
        content_type: Option<&str>,
        declared_length: Option<u64>,
        field: &str,
        max_field_bytes: u64,
    ) -> Result<Self, Rejection> {
        let limits = DecoderLimits::default().with_max_field_bytes(max_field_bytes);
        let ceiling = max_form_bytes(max_field_bytes);
        if let Some(declared) = declared_length.filter(|&declared| declared > ceiling) {
            return Err(Rejection::too_large(
                Some(field),
                format!(
                    "The request body is {declared} bytes; a form whose '{field}' holds at \
                     most {max_field_bytes} bytes is at most {ceiling} bytes."
                ),
            ));
        }
        let boundary = boundary_from_content_type(content_type.unwrap_or(""))
            .map_err(|error| multipart_rejection(&error))?;
        let decoder = MultipartDecoder::new(&boundary, limits)
            .map_err(|error| multipart_rejection(&error))?;
        Ok(Self {
            decoder,
            ended: false,
        })
    }

    fn feed(&mut self, chunk: Bytes) {
        // The epilogue after the closing boundary is read and ignored.
        if !self.ended {
            self.decoder.feed(chunk);
        }
    }

    /// The next field start or data, skipping field ends; `None` when more input is needed
    /// (or the closing boundary was seen).
    fn next(&mut self) -> Result<Option<Event>, Rejection> {
        while !self.ended {
            match self
                .decoder
                .poll_event()
                .map_err(|error| multipart_rejection(&error))?
            {
                Some(Event::End) => self.ended = true,
                Some(Event::FieldEnd) => {}
                Some(event) => return Ok(Some(event)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// At the end of the body: a body cut short before its closing boundary is a 400.
    fn finish(&mut self) -> Result<(), Rejection> {
        if self.ended {
            return Ok(());
        }
        self.decoder
            .finish()
            .map_err(|error| multipart_rejection(&error))
    }
}

/// The body of `POST /uploads/{id}/parts`: one `data` field, nothing else.
#[derive(Debug)]
#[must_use]
pub struct PartFormReader {
    form: FormDecoder,
    data_seen: bool,
}

impl PartFormReader {
    /// A reader for a request with this `Content-Type` and declared `Content-Length`, whose
    /// `data` holds at most `max_part_bytes` (413 on `data` beyond it).
    ///
    /// # Errors
    /// The [`Rejection`] to answer with, before reading the body.
    pub fn open(
        content_type: Option<&str>,
        declared_length: Option<u64>,
        max_part_bytes: u64,
    ) -> Result<Self, Rejection> {
        Ok(Self {
            form: FormDecoder::open(content_type, declared_length, "data", max_part_bytes)?,
            data_seen: false,
        })
    }
}

/// A malformed body, `data` over its limit (413), a second `data` or another field is
/// refused by [`FormReader::poll`].
impl FormReader for PartFormReader {
    /// Nothing: the form is its `data`.
    type Form = ();

    /// Once the body has ended: whether it was a whole form with its `data`.
    ///
    /// # Errors
    /// A body cut short, or no `data` field.
    fn finish(mut self) -> Result<(), Rejection> {
        self.form.finish()?;
        if self.data_seen {
            Ok(())
        } else {
            Err(Rejection::invalid(
                Some("data"),
                "'data' is a required property",
            ))
        }
    }

    fn feed(&mut self, chunk: Bytes) {
        self.form.feed(chunk);
    }

    fn poll(&mut self) -> Result<Option<FormEvent>, Rejection> {
        match self.form.next()? {
            Some(Event::FieldStart(headers)) if headers.name == "data" && !self.data_seen => {
                self.data_seen = true;
                Ok(Some(FormEvent::Start))
            }
            Some(Event::FieldStart(headers)) => Err(FieldError::unexpected(&headers.name).into()),
            // The decoder starts every field before its data.
            Some(Event::Data(bytes)) => Ok(Some(FormEvent::Data(bytes))),
            Some(Event::FieldEnd | Event::End) | None => Ok(None),
        }
    }
}

/// The fields of `POST /files` besides its data, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileForm {
    /// The `filename` of the `file` field (empty if it had none).
    pub filename: String,
    /// The `purpose` field.
    pub purpose: String,
    /// The `expires_after[anchor]` and `expires_after[seconds]` fields, if sent.
    pub expires_after: Option<ExpiresAfter>,
}

impl FileForm {
    /// The File to create once its `bytes` are stored.
    pub fn into_new_file(self, bytes: u64) -> NewFile {
        NewFile {
            purpose: self.purpose,
            filename: self.filename,
            bytes,
            expires_after: self.expires_after,
        }
    }
}

/// Which field of `POST /files` the bytes arriving now belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileField {
    File,
    Text(TextField),
}

/// The text fields of `POST /files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextField {
    Purpose,
    Anchor,
    Seconds,
}

impl TextField {
    fn name(self) -> &'static str {
        match self {
            Self::Purpose => "purpose",
            Self::Anchor => "expires_after[anchor]",
            Self::Seconds => "expires_after[seconds]",
        }
    }
}

/// The body of `POST /files`: `file` once (at most [`MAX_DIRECT_FILE_BYTES`]), `purpose`,
/// and optionally `expires_after[anchor]` with `expires_after[seconds]`.
#[derive(Debug)]
#[must_use]
pub struct FileFormReader {
    form: FormDecoder,
    current: Option<FileField>,
    /// `Some` once the `file` field started.
    filename: Option<String>,
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

impl FileFormReader {
    /// A reader for a request with this `Content-Type` and declared `Content-Length`.
    ///
    /// # Errors
    /// The [`Rejection`] to answer with, before reading the body.
    pub fn open(
        content_type: Option<&str>,
        declared_length: Option<u64>,
    ) -> Result<Self, Rejection> {
        Ok(Self {
            form: FormDecoder::open(content_type, declared_length, "file", MAX_DIRECT_FILE_BYTES)?,
            current: None,
            filename: None,
            purpose: None,
            anchor: None,
            seconds: None,
        })
    }

    fn push_text(&mut self, field: TextField, bytes: &[u8]) -> Result<(), Rejection> {
        let name = field.name();
        let value = match field {
            TextField::Purpose => &mut self.purpose,
            TextField::Anchor => &mut self.anchor,
            TextField::Seconds => &mut self.seconds,
        };
        let value = value.get_or_insert_with(String::new);
        if value.len() + bytes.len() > MAX_TEXT_FIELD_BYTES {
            return Err(Rejection::invalid(
                Some(name),
                format!("'{name}' is too long"),
            ));
        }
        value.push_str(&String::from_utf8_lossy(bytes));
        Ok(())
    }

    fn expires_after(&self) -> Result<Option<ExpiresAfter>, Rejection> {
        match (&self.anchor, &self.seconds) {
            (None, None) => Ok(None),
            (Some(anchor), Some(seconds)) => {
                let seconds = seconds.trim().parse::<u64>().map_err(|_| {
                    Rejection::invalid(
                        Some("expires_after.seconds"),
                        format!("'{seconds}' is not of type 'integer' - 'expires_after.seconds'"),
                    )
                })?;
                Ok(Some(ExpiresAfter {
                    anchor: ExpiresAfterAnchor::from_wire(anchor.trim()),
                    seconds,
                }))
            }
            (None, Some(_)) => Err(Rejection::invalid(
                Some("expires_after.anchor"),
                "'anchor' is a required property - 'expires_after'",
            )),
            (Some(_), None) => Err(Rejection::invalid(
                Some("expires_after.seconds"),
                "'seconds' is a required property - 'expires_after'",
            )),
        }
    }
}

/// Text fields are read here, not yielded. A malformed body, `file` over its limit (413), a
/// text field over [`MAX_TEXT_FIELD_BYTES`], a second `file` or an unknown field is refused
/// by [`FormReader::poll`].
impl FormReader for FileFormReader {
    type Form = FileForm;

    /// Once the body has ended: the form, if it is a whole one.
    ///
    /// # Errors
    /// A body cut short, no `file`, an `expires_after` half sent or not a number, no
    /// `purpose`; in that order.
    fn finish(mut self) -> Result<FileForm, Rejection> {
        self.form.finish()?;
        let Some(filename) = self.filename.take() else {
            return Err(Rejection::invalid(
                Some("file"),
                "'file' is a required property",
            ));
        };
        let expires_after = self.expires_after()?;
        let purpose = self.purpose.ok_or_else(|| {
            Rejection::invalid(Some("purpose"), "'purpose' is a required property")
        })?;
        Ok(FileForm {
            filename,
            purpose,
            expires_after,
        })
    }

    fn feed(&mut self, chunk: Bytes) {
        self.form.feed(chunk);
    }

    fn poll(&mut self) -> Result<Option<FormEvent>, Rejection> {
        loop {
            match self.form.next()? {
                Some(Event::FieldStart(headers)) => {
                    let field = match headers.name.as_str() {
                        "file" if self.filename.is_none() => {
                            self.filename = Some(headers.filename.unwrap_or_default());
                            self.current = Some(FileField::File);
                            return Ok(Some(FormEvent::Start));
                        }
                        "purpose" => TextField::Purpose,
                        "expires_after[anchor]" => TextField::Anchor,
                        "expires_after[seconds]" => TextField::Seconds,
                        other => return Err(FieldError::unexpected(other).into()),
                    };
                    self.current = Some(FileField::Text(field));
                }
                Some(Event::Data(bytes)) => match self.current {
                    Some(FileField::File) => return Ok(Some(FormEvent::Data(bytes))),
                    Some(FileField::Text(field)) => self.push_text(field, &bytes)?,
                    // The decoder starts every field before its data.
                    None => return Err(FieldError::unexpected("").into()),
                },
                Some(Event::FieldEnd | Event::End) | None => return Ok(None),
            }
        }
    }
}

/// A malformed body is a 400; a field over its limit is a 413 naming it.
fn multipart_rejection(error: &MultipartError) -> Rejection {
    match error {
        MultipartError::FieldTooLarge { name, limit } => Rejection::too_large(
            Some(name),
            format!("'{name}' is larger than the maximum of {limit} bytes."),
        ),
        other => Rejection::invalid(None, format!("Invalid multipart/form-data body: {other}.")),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    const CONTENT_TYPE: &str = "multipart/form-data; boundary=b";

    /// A field of a test body: name, filename, value.
    type Field<'a> = (&'a str, Option<&'a str>, &'a [u8]);

    /// A body of `fields`, delimited by `b`.
    fn body(fields: &[Field]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, value) in fields {
            body.extend_from_slice(b"--b\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
            if let Some(filename) = filename {
                body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--b--\r\n");
        body
    }

    /// Feeds `body` in 7-byte chunks: the stored bytes, or the refusal.
    fn read_part(body: &[u8], max_part_bytes: u64) -> Result<Vec<u8>, Rejection> {
        let mut reader = PartFormReader::open(Some(CONTENT_TYPE), None, max_part_bytes)?;
        let mut stored = Vec::new();
        for chunk in body.chunks(7) {
            reader.feed(Bytes::copy_from_slice(chunk));
            while let Some(event) = reader.poll()? {
                if let FormEvent::Data(bytes) = event {
                    stored.extend_from_slice(&bytes);
                }
            }
        }
        reader.finish()?;
        Ok(stored)
    }

    fn read_file(body: &[u8]) -> Result<(FileForm, Vec<u8>), Rejection> {
        read_file_in(body, &[7])
    }

    /// Feeds `body` in chunks of the `sizes`, cycled.
    fn read_file_in(body: &[u8], sizes: &[usize]) -> Result<(FileForm, Vec<u8>), Rejection> {
        let mut reader = FileFormReader::open(Some(CONTENT_TYPE), None)?;
        let mut stored = Vec::new();
        let mut starts = 0;
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).min(rest.len());
            let (chunk, after) = rest.split_at(size);
            rest = after;
            reader.feed(Bytes::copy_from_slice(chunk));
            while let Some(event) = reader.poll()? {
                match event {
                    FormEvent::Start => starts += 1,
                    FormEvent::Data(bytes) => stored.extend_from_slice(&bytes),
                }
            }
        }
        assert!(starts <= 1, "one Start per form");
        Ok((reader.finish()?, stored))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn a_file_form_reads_the_same_in_any_chunking(
            // No '-': the data never holds the delimiter "\r\n--b".
            data in proptest::collection::vec(0u8..=44, 0..200),
            purpose in "[a-z_]{1,20}",
            seconds in 0u64..10_000_000,
            epilogue in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
            sizes in proptest::collection::vec(1usize..=24, 1..8),
        ) {
            let seconds_text = seconds.to_string();
            let mut sent = body(&[
                ("expires_after[seconds]", None, seconds_text.as_bytes()),
                ("file", Some("data.bin"), &data),
                ("purpose", None, purpose.as_bytes()),
                ("expires_after[anchor]", None, b"created_at"),
            ]);
            sent.extend_from_slice(&epilogue);
            let (form, stored) = read_file_in(&sent, &sizes).unwrap();
            proptest::prop_assert_eq!(stored, data);
            proptest::prop_assert_eq!(form, FileForm {
                filename: "data.bin".to_owned(),
                purpose,
                expires_after: Some(ExpiresAfter::after_creation(seconds)),
            });
        }
    }

    fn refused(status: StatusCode, param: Option<&str>, message: &str) -> Rejection {
        Rejection::new(
            status,
            crate::rejection::INVALID_REQUEST_ERROR,
            message,
            param,
            None,
        )
    }

    #[test]
    fn a_part_form_yields_its_data_and_ignores_the_epilogue() {
        let mut sent = body(&[("data", Some("blob"), b"hello, world")]);
        sent.extend_from_slice(b"epilogue, ignored");
        assert_eq!(read_part(&sent, 64), Ok(b"hello, world".to_vec()));
    }

    #[test]
    fn a_part_form_refuses_what_is_not_its_grammar() {
        assert_eq!(
            read_part(&body(&[]), 64),
            Err(refused(
                StatusCode::BAD_REQUEST,
                Some("data"),
                "'data' is a required property"
            ))
        );
        assert_eq!(
            read_part(&body(&[("data", None, b"x"), ("colour", None, b"red")]), 64),
            Err(refused(
                StatusCode::BAD_REQUEST,
                Some("colour"),
                "Additional properties are not allowed ('colour' was unexpected)"
            ))
        );
        assert_eq!(
            read_part(&body(&[("data", None, b"x"), ("data", None, b"y")]), 64),
            Err(FieldError::unexpected("data").into())
        );
        assert_eq!(
            read_part(&body(&[("data", None, &[0; 65])]), 64),
            Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("data"),
                "'data' is larger than the maximum of 64 bytes."
            ))
        );
        let whole = body(&[("data", None, b"x")]);
        let cut = read_part(&whole[..whole.len() - 4], 64).unwrap_err();
        assert_eq!((cut.status, cut.param()), (StatusCode::BAD_REQUEST, None));
        assert!(
            cut.body
                .error
                .message
                .starts_with("Invalid multipart/form-data body: "),
            "{cut}"
        );
    }

    #[test]
    fn a_form_is_refused_from_its_head() {
        let not_a_form = PartFormReader::open(Some("application/json"), None, 64).unwrap_err();
        assert_eq!(
            (not_a_form.status, not_a_form.param()),
            (StatusCode::BAD_REQUEST, None)
        );
        let ceiling = DecoderLimits::default()
            .with_max_field_bytes(64)
            .max_body_bytes(64);
        assert!(PartFormReader::open(Some(CONTENT_TYPE), Some(ceiling), 64).is_ok());
        assert_eq!(
            PartFormReader::open(Some(CONTENT_TYPE), Some(ceiling + 1), 64).unwrap_err(),
            refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("data"),
                &format!(
                    "The request body is {} bytes; a form whose 'data' holds at most 64 bytes \
                     is at most {ceiling} bytes.",
                    ceiling + 1
                )
            )
        );
        let ceiling = DecoderLimits::default()
            .with_max_field_bytes(MAX_DIRECT_FILE_BYTES)
            .max_body_bytes(MAX_DIRECT_FILE_BYTES);
        assert!(
            FileFormReader::open(Some(CONTENT_TYPE), Some(512 * MIB)).is_ok(),
            "a form of 512 MiB, the most OpenAI documents for a file, is read"
        );
        let too_large = FileFormReader::open(Some(CONTENT_TYPE), Some(ceiling + 1)).unwrap_err();
        assert_eq!(
            (too_large.status, too_large.param()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("file"))
        );
    }

    #[test]
    fn a_file_form_yields_its_file_and_reads_its_text_fields() {
        let sent = body(&[
            ("purpose", None, b"assistants"),
            ("file", Some("notes.txt"), b"some notes"),
            ("expires_after[anchor]", None, b"created_at"),
            ("expires_after[seconds]", None, b" 3600 "),
        ]);
        let (form, stored) = read_file(&sent).unwrap();
        assert_eq!(stored, b"some notes");
        assert_eq!(
            form,
            FileForm {
                filename: "notes.txt".to_owned(),
                purpose: "assistants".to_owned(),
                expires_after: Some(ExpiresAfter::after_creation(3600)),
            }
        );
        assert_eq!(
            form.into_new_file(10),
            NewFile {
                purpose: "assistants".to_owned(),
                filename: "notes.txt".to_owned(),
                bytes: 10,
                expires_after: Some(ExpiresAfter::after_creation(3600)),
            }
        );
    }

    #[test]
    fn a_file_form_refuses_what_is_not_its_grammar() {
        let file: Field = ("file", Some("a.txt"), b"a");
        let purpose: Field = ("purpose", None, b"assistants");
        let cases: [(Vec<Field>, Rejection); 7] = [
            (
                vec![purpose],
                refused(
                    StatusCode::BAD_REQUEST,
                    Some("file"),
                    "'file' is a required property",
                ),
            ),
            (
                vec![file],
                refused(
                    StatusCode::BAD_REQUEST,
                    Some("purpose"),
                    "'purpose' is a required property",
                ),
            ),
            (
                vec![file, purpose, ("color", None, b"red")],
                FieldError::unexpected("color").into(),
            ),
            (
                vec![file, purpose, file],
                FieldError::unexpected("file").into(),
            ),
            (
                vec![file, purpose, ("expires_after[seconds]", None, b"60")],
                refused(
                    StatusCode::BAD_REQUEST,
                    Some("expires_after.anchor"),
                    "'anchor' is a required property - 'expires_after'",
                ),
            ),
            (
                vec![
                    file,
                    purpose,
                    ("expires_after[anchor]", None, b"created_at"),
                ],
                refused(
                    StatusCode::BAD_REQUEST,
                    Some("expires_after.seconds"),
                    "'seconds' is a required property - 'expires_after'",
                ),
            ),
            (
                vec![
                    file,
                    purpose,
                    ("expires_after[anchor]", None, b"created_at"),
                    ("expires_after[seconds]", None, b"soon"),
                ],
                refused(
                    StatusCode::BAD_REQUEST,
                    Some("expires_after.seconds"),
                    "'soon' is not of type 'integer' - 'expires_after.seconds'",
                ),
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(
                read_file(&body(&fields)).map(|(form, _)| form),
                Err(expected)
            );
        }
        let longest = [b'x'; MAX_TEXT_FIELD_BYTES];
        assert_eq!(
            read_file(&body(&[file, ("purpose", None, &longest)])).map(|(form, _)| form.purpose),
            Ok("x".repeat(MAX_TEXT_FIELD_BYTES))
        );
        let long = [b'x'; MAX_TEXT_FIELD_BYTES + 1];
        assert_eq!(
            read_file(&body(&[file, ("purpose", None, &long)])).map(|(form, _)| form),
            Err(refused(
                StatusCode::BAD_REQUEST,
                Some("purpose"),
                "'purpose' is too long"
            ))
        );
    }
}
