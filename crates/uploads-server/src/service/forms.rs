//! Feeding a request's body to one of the core's form readers ([`uploads_core::forms`]): the
//! grammar, the limits and the refusals are the core's; this module only moves bytes.

use http_body::Body;
use std::io;

use bytes::Bytes;

use uploads_core::forms::{FormEvent, FormReader};
use uploads_core::rejection::Rejection;

use super::writer::PartWriter;
use super::{Answer, body_rejection};
use crate::body::{BodyPace, BodyReader};
use crate::byte_store::DataSink;

/// Reads a form to its end, streaming its stored field into the sink `open` makes (on the
/// field's start): the typed form and the writer of the stored bytes, not yet committed.
/// Dropping the writer (any error) removes the bytes.
pub(super) async fn read_form<F, B>(
    mut form: F,
    body: B,
    pace: BodyPace,
    open: impl Fn() -> io::Result<Box<dyn DataSink>> + Clone + Send + 'static,
) -> Answer<(F::Form, PartWriter)>
where
    F: FormReader,
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    let mut body = BodyReader::new(body, pace);
    let mut writer: Option<PartWriter> = None;
    loop {
        match form.poll()? {
            Some(FormEvent::Start) => writer = Some(PartWriter::start(open.clone()).await?),
            Some(FormEvent::Data(bytes)) => {
                if let Some(writer) = &mut writer {
                    writer.write(bytes).await?;
                }
            }
            None => match body
                .next_chunk()
                .await
                .map_err(|error| body_rejection(&error))?
            {
                Some(chunk) => form.feed(chunk),
                None => break,
            },
        }
    }
    let form = form.finish()?;
    // `finish` refuses a form whose stored field never started.
    let writer = writer.ok_or_else(|| {
        Rejection::server_error("The form's data was not stored. Retry the request.")
    })?;
    Ok((form, writer))
}
