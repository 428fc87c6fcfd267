//! The driver kit: what a driver sends for each [`Transmit`], and the [`Report`] its answer
//! makes. A driver only moves bytes: it sends the request (streaming a part's body as
//! `head ++ source[offset..offset + len] ++ tail`), reads the answer up to
//! [`answer_body_limit`](crate::api::answer_body_limit), and hands it to [`Expect::report`].

use std::io::{self, Cursor, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};

use super::{PartJob, Report, Transmit};
use crate::api::{self, ClientConfig};
use crate::multipart::{Boundary, MultipartBody};
use crate::upload::RequestError;

/// The body of a request the [`Uploader`](super::Uploader) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutgoingBody {
    /// All of it, in memory (JSON, or nothing).
    Bytes(Bytes),
    /// A part, read from the source as it goes out.
    Part(PartBody),
}

/// A part's body: the multipart head, `job.len` bytes of the source from `job.offset`, and
/// the tail; `Content-Length` is set on the request already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartBody {
    /// Which bytes of the source, and which attempt (report [`Report::Sent`] with it).
    pub job: PartJob,
    /// The multipart head and tail around the bytes.
    pub multipart: MultipartBody,
}

impl PartBody {
    /// The whole body as one blocking reader, for a driver on `std::io`: the multipart head,
    /// `job.len` bytes of `data` (the source, already at `job.offset`), then the tail.
    /// `sent` is told how many bytes of data each read gave (report them as
    /// [`Report::Sent`]); once it answers `false` (the part was stopped), reading fails. A
    /// failed read of `data` is kept apart from the transport's errors:
    /// [`PartReader::source_error`].
    pub fn reader<R: Read, F: FnMut(u64) -> bool>(self, data: R, sent: F) -> PartReader<R, F> {
        let data = DataReader {
            data: data.take(self.job.len),
            sent,
            failed: Arc::new(Mutex::new(None)),
        };
        let failed = Arc::clone(&data.failed);
        PartReader {
            wire: Cursor::new(self.multipart.head)
                .chain(data)
                .chain(Cursor::new(self.multipart.tail)),
            failed,
        }
    }
}

/// Head, data, tail.
type Wire<R, F> = io::Chain<io::Chain<Cursor<Bytes>, DataReader<R, F>>, Cursor<Bytes>>;

/// A part's body as a blocking reader; see [`PartBody::reader`].
pub struct PartReader<R, F> {
    wire: Wire<R, F>,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl<R, F> std::fmt::Debug for PartReader<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartReader").finish_non_exhaustive()
    }
}

impl<R: Read, F: FnMut(u64) -> bool> Read for PartReader<R, F> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.wire.read(buffer)
    }
}

impl<R, F> PartReader<R, F> {
    /// A handle on the error of a failed read of the data, if one fails: a request that
    /// failed with one is [`RequestError::Source`], not a transport failure. It outlives
    /// the reader (which the transport takes).
    pub fn source_error(&self) -> SourceError {
        SourceError(Arc::clone(&self.failed))
    }
}

/// Where a [`PartReader`] keeps the error of a failed read of its data.
#[derive(Debug, Clone)]
pub struct SourceError(Arc<Mutex<Option<io::Error>>>);

impl SourceError {
    /// The error of the data's read, if one failed (taken out).
    pub fn take(&self) -> Option<io::Error> {
        self.0.lock().ok()?.take()
    }
}

/// The data between head and tail: counted, stoppable, its failure kept.
struct DataReader<R, F> {
    data: io::Take<R>,
    sent: F,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read, F: FnMut(u64) -> bool> Read for DataReader<R, F> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.data.read(buffer).inspect_err(|error| {
            if let Ok(mut failed) = self.failed.lock() {
                *failed = Some(io::Error::new(error.kind(), error.to_string()));
            }
        })?;
        if (self.sent)(read as u64) {
            Ok(read)
        } else {
            // Not `Interrupted`: readers such as `read_to_end` and `io::copy` retry that.
            Err(io::Error::other("the part was stopped"))
        }
    }
}

/// What a request's answer is read as: hand the answer to [`Expect::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the answer must be reported"]
pub struct Expect(Expected);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Created,
    Part(PartJob),
    Completed,
    Cancelled,
}

impl Transmit {
    /// The request to send, and what its answer is read as. A part's request carries its
    /// position in the file (`x-uploads-part-index`) and a multipart body of `boundary`
    /// (random per request). A request that cannot be built is already its report (`Err`):
    /// hand it back at once.
    #[allow(
        clippy::result_large_err,
        reason = "the report goes straight back to the uploader; a box would only be unboxed"
    )]
    pub fn into_request<E>(
        self,
        config: &ClientConfig,
        boundary: &Boundary,
    ) -> Result<(Request<OutgoingBody>, Expect), Report<E>> {
        let expect = Expect(match &self {
            Self::Create(_) => Expected::Created,
            Self::Part { job, .. } => Expected::Part(*job),
            Self::Complete { .. } => Expected::Completed,
            Self::Cancel { .. } => Expected::Cancelled,
        });
        let built = match self {
            Self::Create(request) => config.create_upload(&request).map(in_memory),
            Self::Complete { upload_id, request } => {
                config.complete_upload(&upload_id, &request).map(in_memory)
            }
            Self::Cancel { upload_id } => config.cancel_upload(&upload_id).map(in_memory),
            Self::Part { upload_id, job } => {
                let multipart = MultipartBody::upload_part(boundary, job.len);
                config
                    .add_upload_part_at(&upload_id, Some(job.index), &multipart)
                    .map(|head| head.map(|()| OutgoingBody::Part(PartBody { job, multipart })))
            }
        };
        match built {
            Ok(request) => Ok((request, expect)),
            Err(error) => Err(expect.report(Err::<Response<Bytes>, _>(error.into()))),
        }
    }
}

fn in_memory(request: Request<Bytes>) -> Request<OutgoingBody> {
    request.map(OutgoingBody::Bytes)
}

impl Expect {
    /// The report of the answer: the response (any status, its body read up to
    /// [`answer_body_limit`](crate::api::answer_body_limit)) parsed as this request's answer,
    /// or how the request failed.
    pub fn report<E, B: AsRef<[u8]>>(
        self,
        answer: Result<Response<B>, RequestError<E>>,
    ) -> Report<E> {
        fn parsed<T, E, B: AsRef<[u8]>>(
            answer: Result<Response<B>, RequestError<E>>,
            parse: fn(&Response<B>) -> Result<T, api::ResponseError>,
        ) -> Result<T, RequestError<E>> {
            Ok(parse(&answer?)?)
        }
        match self.0 {
            Expected::Created => Report::Created(parsed(answer, api::parse_create_upload)),
            Expected::Part(job) => Report::Part(
                job,
                parsed(answer, api::parse_add_upload_part).map(|part| part.id),
            ),
            Expected::Completed => Report::Completed(parsed(answer, api::parse_complete_upload)),
            Expected::Cancelled => Report::Cancelled(parsed(answer, api::parse_cancel_upload)),
        }
    }

    /// The part attempt this is the answer of, if it is a part's.
    pub fn part(&self) -> Option<PartJob> {
        match self.0 {
            Expected::Part(job) => Some(job),
            Expected::Created | Expected::Completed | Expected::Cancelled => None,
        }
    }
}
