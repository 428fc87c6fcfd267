//! Reading a `multipart/form-data` body: the decoder fed from the socket, and the text
//! fields of `POST /files`.

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body::Body;
use uploads_core::ledger::NewFile;
use uploads_core::multipart::{
    DecoderLimits, Event, MultipartDecoder, MultipartError, boundary_from_content_type,
};
use uploads_core::rejection::Rejection;
use uploads_core::types::{ExpiresAfter, ExpiresAfterAnchor};

use super::{Answer, body_rejection};
use crate::body::BodyReader;

/// The largest text field of a form (`purpose`, `expires_after[...]`).
const MAX_TEXT_FIELD_BYTES: usize = 1024;

/// A multipart body being read: the decoder plus the socket it is fed from.
pub(super) struct Form {
    decoder: MultipartDecoder,
    /// The `filename` of the field that started last.
    pub(super) filename: Option<String>,
    finished: bool,
}

/// What a form yields to a handler.
pub(super) enum FormEvent {
    /// A field starts (its name).
    Start(String),
    /// Bytes of the current field.
    Data(Bytes),
}

impl Form {
    /// A multipart decoder for the request, or 400 when it is not `multipart/form-data`; 413
    /// on `field` when the declared `Content-Length` is more than such a form can be, before
    /// the body is read (so `Expect: 100-continue` gets its answer, not `100 Continue`).
    pub(super) fn open<B>(request: &Request<B>, field: &str, max_field_bytes: u64) -> Answer<Self> {
        let limits = DecoderLimits::default().with_max_field_bytes(max_field_bytes);
        let ceiling = limits.max_body_bytes(max_field_bytes);
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&declared| declared > ceiling) {
            return Err(Rejection::too_large(
                Some(field),
                format!(
                    "The request body is {declared} bytes; a form whose '{field}' holds at \
                     most {max_field_bytes} bytes is at most {ceiling} bytes."
                ),
            ));
        }
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let boundary = boundary_from_content_type(content_type)
            .map_err(|error| multipart_rejection(&error))?;
        let decoder = MultipartDecoder::new(&boundary, limits)
            .map_err(|error| multipart_rejection(&error))?;
        Ok(Form {
            decoder,
            filename: None,
            finished: false,
        })
    }

    /// The next event, reading the body as needed; `None` once the closing boundary was seen
    /// and the body ended.
    pub(super) async fn next<B>(&mut self, reader: &mut BodyReader<B>) -> Answer<Option<FormEvent>>
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    {
        loop {
            match self
                .decoder
                .poll_event()
                .map_err(|error| multipart_rejection(&error))?
            {
                Some(Event::FieldStart(headers)) => {
                    self.filename = headers.filename;
                    return Ok(Some(FormEvent::Start(headers.name)));
                }
                Some(Event::Data(bytes)) => return Ok(Some(FormEvent::Data(bytes))),
                Some(Event::End) => self.finished = true,
                Some(Event::FieldEnd) => {}
                None => {
                    let chunk = reader
                        .next_chunk()
                        .await
                        .map_err(|error| body_rejection(&error))?;
                    let Some(chunk) = chunk else {
                        self.decoder
                            .finish()
                            .map_err(|error| multipart_rejection(&error))?;
                        return Ok(None);
                    };
                    self.decoder.feed(chunk);
                }
            }
            if self.finished {
                // The epilogue after the closing boundary is read and ignored.
                while reader
                    .next_chunk()
                    .await
                    .map_err(|error| body_rejection(&error))?
                    .is_some()
                {}
                return Ok(None);
            }
        }
    }
}

/// The text fields of `POST /files`.
#[derive(Default)]
pub(super) struct TextFields {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

impl TextFields {
    const NAMES: [&'static str; 3] = ["purpose", "expires_after[anchor]", "expires_after[seconds]"];

    pub(super) fn accepts(name: &str) -> bool {
        Self::NAMES.contains(&name)
    }

    pub(super) fn push(&mut self, name: &str, bytes: &[u8]) -> Answer<()> {
        let field = match name {
            "purpose" => &mut self.purpose,
            "expires_after[anchor]" => &mut self.anchor,
            _ => &mut self.seconds,
        };
        let value = field.get_or_insert_with(String::new);
        if value.len() + bytes.len() > MAX_TEXT_FIELD_BYTES {
            return Err(Rejection::invalid(
                Some(name),
                format!("'{name}' is too long"),
            ));
        }
        value.push_str(&String::from_utf8_lossy(bytes));
        Ok(())
    }

    /// The File the form describes, once its data is stored.
    pub(super) fn into_new_file(self, filename: String, bytes: u64) -> Answer<NewFile> {
        let expires_after = self.expires_after()?;
        let purpose = self.purpose.ok_or_else(|| {
            Rejection::invalid(Some("purpose"), "'purpose' is a required property")
        })?;
        Ok(NewFile {
            purpose,
            filename,
            bytes,
            expires_after,
        })
    }

    fn expires_after(&self) -> Answer<Option<ExpiresAfter>> {
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
    use super::*;

    #[test]
    fn text_fields_build_the_expiry_or_name_what_is_missing() {
        let mut fields = TextFields::default();
        assert_eq!(fields.expires_after(), Ok(None));
        fields.push("expires_after[seconds]", b"3600").unwrap();
        assert_eq!(
            fields.expires_after().unwrap_err().param(),
            Some("expires_after.anchor")
        );
        fields.push("expires_after[anchor]", b"created_at").unwrap();
        assert_eq!(
            fields.expires_after(),
            Ok(Some(ExpiresAfter::after_creation(3600)))
        );
        let mut bad = TextFields::default();
        bad.push("expires_after[anchor]", b"created_at").unwrap();
        bad.push("expires_after[seconds]", b"soon").unwrap();
        assert_eq!(
            bad.expires_after().unwrap_err().param(),
            Some("expires_after.seconds")
        );
        let long = vec![b'x'; MAX_TEXT_FIELD_BYTES + 1];
        assert!(TextFields::default().push("purpose", &long).is_err());
    }
}
