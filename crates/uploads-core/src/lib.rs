//! Sans-IO core of OpenAI's multipart Uploads API: everything the protocol knows, on both
//! sides of the wire, and nothing that does I/O.
//!
//! # Driving an upload
//!
//! [`uploader::Uploader`] is the whole client upload (create, parts in parallel with their
//! retries, the md5, snapshots for a resume, complete, and on failure the give-up and
//! cancel) as one state machine. A driver is the loop that performs what it asks, in
//! whatever runtime the program already has:
//!
//! ```text
//!   let mut uploader = Uploader::new(&options, name, size, fingerprint, now)?;
//!   loop {
//!       while let Some(action) = uploader.poll_action(now) {
//!           // Send(transmit): transmit.into_request(&config, &boundary) -> send it on a task
//!           //                 -> expect.report(answer) back over a channel
//!           // Hash / WriteSnapshot / RemoveSnapshot: do it on a task, report back
//!           // StopPart / StopRequest / StopHash: stop that task
//!       }
//!       let timeout = uploader.poll_timeout();
//!       while let Some(event) = uploader.poll_event() { show progress }
//!       if let Some(result) = uploader.poll_finished() { return result }
//!       match wait for a report until the timeout {
//!           Some(report) => uploader.handle(report, now, jitter),
//!           None => uploader.handle_timeout(now),
//!       }
//!   }
//! ```
//!
//! The machine makes every decision (retries with `Retry-After`, the deadline, when a silent
//! request has stalled, giving up and cancelling, what the snapshot holds); the driver only
//! moves bytes and reports failures in the core's terms. What a driver MUST and MUST NOT do
//! is [the driver contract](uploader#the-driver-contract). `uploads-hyper` (tokio) and
//! `uploads-ureq` (threads) are two drivers; `examples/reqwest.rs` is a third, on blocking
//! reqwest and threads, with Ctrl-C, resume and the stall rule.
//!
//! # A whole upload, client and service, without a network
//!
//! The service's side is here too: [`ledger::Ledger`] decides every request, so an
//! [`Uploader`](uploader::Uploader) can be driven against it in one process, with a virtual
//! clock. Here the first part is answered `503 Retry-After: 1` once, and the clock jumps to
//! the retry.
//!
//! ```
//! use std::collections::{BTreeMap, VecDeque};
//!
//! use uploads_core::api::ClientConfig;
//! use uploads_core::digest::Md5Hasher;
//! use uploads_core::http::{Request, Response};
//! use uploads_core::ledger::{CompletePlan, Ledger, Owner, Planned, SequentialIds};
//! use uploads_core::limits::Limits;
//! use uploads_core::multipart::{
//!     Boundary, DecoderLimits, Event, MultipartDecoder, MultipartError, boundary_from_content_type,
//! };
//! use uploads_core::rejection::Rejection;
//! use uploads_core::route::Route;
//! use uploads_core::types::{Purpose, UploadStatus};
//! use uploads_core::upload::UploadOptions;
//! use uploads_core::uploader::{Action, OutgoingBody, Report, Uploader};
//!
//! /// The service: a ledger, and the bytes of every Part it stored.
//! struct Service { ledger: Ledger, ids: SequentialIds, stored: BTreeMap<String, Vec<u8>>, busy_once: bool }
//!
//! impl Service {
//!     fn answer(&mut self, request: Request<Vec<u8>>, now: u64) -> Response<Vec<u8>> {
//!         let json = |planned: Result<Vec<u8>, Rejection>| match planned {
//!             Ok(body) => Response::new(body),
//!             Err(rejection) => {
//!                 let mut answer = Response::builder().status(rejection.status);
//!                 for (name, value) in rejection.retry_after_headers() {
//!                     answer = answer.header(name, value);
//!                 }
//!                 answer.body(rejection.body_json()).unwrap()
//!             }
//!         };
//!         json(self.decide(request, now / 1000))
//!     }
//!
//!     fn decide(&mut self, request: Request<Vec<u8>>, now: u64) -> Result<Vec<u8>, Rejection> {
//!         let owner = Owner::new("project-a");
//!         match Route::resolve(request.method(), request.uri().path())? {
//!             Route::CreateUpload => {
//!                 let planned = self.ledger.create_upload(&owner, request.body(), now, &mut self.ids)?;
//!                 Ok(self.commit(planned))
//!             }
//!             Route::AddUploadPart(upload_id) => {
//!                 if std::mem::take(&mut self.busy_once) {
//!                     return Err(Rejection::unavailable("busy, try again"));
//!                 }
//!                 let slot = self.ledger.check_add_part(&owner, &upload_id, now, &mut self.ids)?;
//!                 let unreadable = |error: MultipartError| Rejection::invalid(None, error.to_string());
//!                 let content_type = request.headers()["content-type"].to_str().unwrap_or_default();
//!                 let boundary = boundary_from_content_type(content_type).map_err(unreadable)?;
//!                 let mut decoder = MultipartDecoder::new(&boundary, DecoderLimits::default()).map_err(unreadable)?;
//!                 decoder.feed(request.into_body().into());
//!                 let mut data = Vec::new();
//!                 while let Some(event) = decoder.poll_event().map_err(unreadable)? {
//!                     if let Event::Data(bytes) = event { data.extend_from_slice(&bytes) }
//!                 }
//!                 let planned = self.ledger.add_part(&owner, &slot, data.len() as u64, now)?;
//!                 self.stored.insert(slot.part_id().to_string(), data);
//!                 Ok(self.commit(planned))
//!             }
//!             Route::CompleteUpload(upload_id) => {
//!                 let CompletePlan::Verify(check) = self.ledger.plan_complete(&owner, &upload_id, request.body(), now)? else {
//!                     unreachable!("completed once");
//!                 };
//!                 let mut md5 = Md5Hasher::new();
//!                 check.parts().iter().for_each(|part| md5.update(&self.stored[part.id.as_str()]));
//!                 let planned = self.ledger.finish_complete(&owner, &check, Some(md5.finish()), now, &mut self.ids)?;
//!                 Ok(self.commit(planned))
//!             }
//!             other => unreachable!("the uploader does not ask for {other:?}"),
//!         }
//!     }
//!
//!     fn commit<T: serde::Serialize>(&mut self, planned: Planned<T>) -> Vec<u8> {
//!         if let Some(change) = planned.change {
//!             self.ledger.apply(change).expect("nothing else changed the ledger");
//!         }
//!         serde_json::to_vec(&planned.response).unwrap()
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = b"The quick brown fox jumps over the lazy dog.";
//! let mut service = Service {
//!     ledger: Ledger::new(Limits::default()), ids: SequentialIds::new(), stored: BTreeMap::new(), busy_once: true,
//! };
//! let config = ClientConfig::new("http://localhost/v1").with_api_key("sk-test");
//! let options = UploadOptions::new(Purpose::Assistants).part_size(16);
//! let mut now = 1_719_184_911_000; // the virtual clock, in unix milliseconds
//! // No transport, so no transport error: `Infallible`.
//! let mut uploader = Uploader::<std::convert::Infallible>::new(&options, "fox.txt", file.len() as u64, None, now)?;
//! let mut reports = VecDeque::new();
//! let result = loop {
//!     while let Some(action) = uploader.poll_action(now) {
//!         reports.push_back(match action {
//!             Action::Send(transmit) => match transmit.into_request(&config, &Boundary::from_entropy([7; 16])) {
//!                 Err(report) => report,
//!                 Ok((request, expect)) => {
//!                     let (head, body) = request.into_parts();
//!                     let wire = match body {
//!                         OutgoingBody::Bytes(bytes) => bytes.to_vec(),
//!                         OutgoingBody::Part(part) => {
//!                             let (start, len) = (part.job.offset as usize, part.job.len as usize);
//!                             part.multipart.assemble(&file[start..start + len])
//!                         }
//!                         _ => unreachable!(),
//!                     };
//!                     expect.report(Ok(service.answer(Request::from_parts(head, wire), now)))
//!                 }
//!             },
//!             Action::Hash { offset, len } => {
//!                 let mut md5 = Md5Hasher::new();
//!                 md5.update(&file[offset as usize..(offset + len) as usize]);
//!                 Report::Hashed(Ok(md5.finish_hex()))
//!             }
//!             _ => continue, // no snapshot asked for; nothing to stop
//!         });
//!     }
//!     while let Some(event) = uploader.poll_event() {
//!         println!("{event:?}");
//!     }
//!     if let Some(result) = uploader.poll_finished() {
//!         break result;
//!     }
//!     match reports.pop_front() {
//!         Some(report) => uploader.handle(report, now, 0.5),
//!         None => {
//!             now = uploader.poll_timeout().expect("nothing in flight: a retry is due");
//!             uploader.handle_timeout(now);
//!         }
//!     }
//! };
//! let completed = result?;
//! assert_eq!(completed.status, UploadStatus::Completed);
//! assert_eq!(completed.file.map(|file| file.bytes), Some(file.len() as u64));
//! assert!(now >= 1_719_184_912_000, "the retry waited for the service's Retry-After");
//! # Ok(())
//! # }
//! ```
//!
//! # What is here
//!
//! * [`uploader`]: the client machine, its driver kit ([`Transmit::into_request`](uploader::Transmit::into_request),
//!   [`Expect::report`](uploader::Expect::report), [`ReportGuard`](uploader::ReportGuard)),
//!   the part plan, progress events and resume snapshots;
//! * [`upload`]: the options every driver shares, and the errors of a request and of an upload;
//! * [`retry`]: the retry policy (the official SDKs' backoff, `Retry-After`, the statuses);
//! * [`types`]: the wire types, field by field as OpenAI's OpenAPI document has them;
//! * [`limits`]: OpenAI's limits and rules as data, and create-request validation;
//! * [`api`]: every operation's `http::Request` builder and response parser (client side);
//! * [`multipart`]: an encoder with a known length and a push decoder with hard limits;
//! * [`forms`]: the service's two multipart forms (add-part, `POST /files`) read over it;
//! * [`ledger`], [`auth`], [`route`], [`rejection`]: the service's state machine, who may
//!   call it, its routes, and its OpenAI-shaped refusals;
//! * [`digest`]: the md5 an Upload is verified with;
//! * [`buffer`]: the buffers drivers read bytes into (on a cache line, and reused).
//!
//! What is *not* here: sockets, files, threads, a clock or random numbers. Time (`now`) and
//! randomness (ids, jitter, multipart boundaries) are parameters, so the same code runs under
//! tokio, under plain threads, or in a deterministic test. `uploads-hyper` and `uploads-ureq`
//! drive the client side; `uploads-server` drives the service side.

pub mod api;
pub mod auth;
pub mod buffer;
pub mod digest;
pub mod forms;
pub mod ledger;
pub mod limits;
pub mod multipart;
pub mod rate;
pub mod rejection;
pub mod retry;
pub mod route;
pub mod types;
pub mod upload;
pub mod uploader;

pub use http;
