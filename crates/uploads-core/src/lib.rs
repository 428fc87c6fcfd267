//! Sans-IO core of OpenAI's multipart Uploads API: everything the protocol knows, on both
//! sides of the wire, and nothing that does I/O.
//!
//! ```text
//!  client                                                   service
//!  ──────                                                   ───────
//!  UploadOptions::prepare ─▶ api::ClientConfig::create_upload ──▶ ledger::Ledger::create_upload
//!  session::UploadSession::next_job                                 │
//!    └▶ multipart::MultipartBody (head ++ file range ++ tail) ──▶ multipart::MultipartDecoder
//!                                                                   └▶ Ledger::check_add_part / add_part
//!  UploadSession::handle_part_done ◀── api::parse_add_upload_part ◀──┘
//!  UploadSession::complete_request ──▶ complete ────────────────▶ Ledger::plan_complete / finish_complete
//!  (retry::RetryPolicy decides every retry; digest::Md5Hasher hashes on both sides)
//! ```
//!
//! What is here:
//! * [`types`]: the wire types, field by field as OpenAI's OpenAPI document has them;
//! * [`limits`]: OpenAI's limits and rules as data, and create-request validation;
//! * [`api`]: every operation's `http::Request` builder and response parser (client side);
//! * [`multipart`]: an encoder with a known length and a push decoder with hard limits;
//! * [`forms`]: the service's two multipart forms (add-part, `POST /files`) read over it;
//! * [`uploader`]: the whole client upload as one state machine (create, parts, md5,
//!   snapshots, complete, give-up and cancel), which any runtime drives;
//! * [`session`] and [`retry`]: its parts' bookkeeping and the retry policy;
//! * [`upload`]: the options and errors every driver shares, and the default part size;
//! * [`ledger`], [`auth`], [`route`], [`rejection`]: the service's state machine, who may
//!   call it, its routes, and its OpenAI-shaped refusals;
//! * [`digest`]: the md5 an Upload is verified with;
//! * [`buffer`]: the buffers drivers read bytes into (on a cache line, and reused).
//!
//! What is *not* here: sockets, files, threads, a clock or random numbers. Time (`now`) and
//! randomness (ids, jitter, multipart boundaries) are parameters, so the same code runs under
//! tokio, under plain threads, or in a deterministic test. `uploads-hyper` and `uploads-ureq`
//! drive the client side; `uploads-server` drives the service side.
//!
//! # Writing a driver
//!
//! [`uploader::Uploader`] is the whole high-level upload; a driver is the loop that performs
//! what it asks, in whatever runtime the program already has. The example
//! `examples/reqwest.rs` (`cargo run -p uploads-core --example reqwest -- FILE --purpose
//! batch`) is a complete one on blocking reqwest and threads, in under two hundred lines:
//!
//! 1. **Start**: [`Uploader::new`](uploader::Uploader::new) with the
//!    [`UploadOptions`](upload::UploadOptions), the source's name and size, and `now` (unix
//!    milliseconds); or [`Uploader::resume`](uploader::Uploader::resume) with a snapshot.
//!    Every check the service would make happens here, before any request.
//! 2. **Act**: drain [`poll_action`](uploader::Uploader::poll_action). `Send(Transmit)` is a
//!    request: build it with [`api::ClientConfig`] (`create_upload`, `add_upload_part` with a
//!    [`multipart::MultipartBody`] whose head, file range and tail you stream,
//!    `complete_upload`, `cancel_upload`), send it on a task or thread of its own, parse the
//!    answer with `api::parse_*`, and send the result back as a
//!    [`Report`](uploader::Report). A part reports `Sent { bytes: 0 }` when its body begins
//!    (the next part waits for that, so the service receives parts in order) and more
//!    `Sent` as bytes go out, for progress. `Hash` asks for the md5 of a range,
//!    `WriteSnapshot` / `RemoveSnapshot` for the snapshot file, `StopParts` to abandon the
//!    parts in flight.
//! 3. **Show**: drain [`poll_event`](uploader::Uploader::poll_event) into the progress display,
//!    holding no lock.
//! 4. **Finish**: [`poll_finished`](uploader::Uploader::poll_finished) hands out the completed
//!    Upload or the error, once.
//! 5. **Wait**: for the next report from a channel, at most until
//!    [`poll_timeout`](uploader::Uploader::poll_timeout); then
//!    [`handle`](uploader::Uploader::handle) the report with `now` and a random jitter in
//!    `[0, 1)`, or call [`handle_timeout`](uploader::Uploader::handle_timeout). Reports that
//!    arrive while the loop is busy wait in the channel, so none is lost.
//!
//! Retries (with `Retry-After`), the deadline, giving up and cancelling, the order parts start
//! in and what the snapshot holds are the machine's decisions: a driver makes none.
//!
//! # A whole upload, client and service, without a network
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use uploads_core::api::{ClientConfig, parse_add_upload_part, parse_complete_upload, parse_create_upload};
//! use uploads_core::digest::Md5Hasher;
//! use uploads_core::http::Response;
//! use uploads_core::ledger::{CompletePlan, Ledger, Owner, Planned, SequentialIds};
//! use uploads_core::limits::Limits;
//! use uploads_core::multipart::{
//!     Boundary, DecoderLimits, Event, MultipartBody, MultipartDecoder, boundary_from_content_type,
//! };
//! use uploads_core::retry::RetryPolicy;
//! use uploads_core::session::{SessionState, UploadSession};
//! use uploads_core::types::{Purpose, UploadStatus};
//! use uploads_core::upload::UploadOptions;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = b"The quick brown fox jumps over the lazy dog.";
//! let now = 1_719_184_911; // unix seconds, as the service's clock would say
//!
//! // The service: a ledger, an owner, ids. Its answers become JSON responses.
//! let mut ledger = Ledger::new(Limits::default());
//! let mut ids = SequentialIds::new();
//! let owner = Owner::new("project-a");
//! fn commit<T: serde::Serialize>(ledger: &mut Ledger, planned: Planned<T>) -> Response<Vec<u8>> {
//!     if let Some(change) = planned.change {
//!         ledger.apply(change).expect("nothing else changed the ledger");
//!     }
//!     Response::new(serde_json::to_vec(&planned.response).expect("serializable"))
//! }
//!
//! // Client: check the options, build the create request; service: answer it.
//! let options = UploadOptions::new(Purpose::Assistants).part_size(16);
//! let (create, plan) = options.prepare("fox.txt", file.len() as u64)?;
//! let config = ClientConfig::new("http://localhost/v1").with_api_key("sk-test");
//! let request = config.create_upload(&create)?;
//! let planned = ledger.create_upload(&owner, request.body(), now, &mut ids)?;
//! let upload = parse_create_upload(&commit(&mut ledger, planned))?;
//! let mut session = UploadSession::new(upload.clone(), plan, RetryPolicy::default(), None);
//! let mut stored = BTreeMap::new();
//!
//! // Every part: the client encodes it, the service decodes it and records it.
//! let mut md5 = Md5Hasher::new();
//! while let Some(job) = session.next_job(now * 1000) {
//!     let data = &file[job.offset as usize..(job.offset + job.len) as usize];
//!     md5.update(data);
//!     let body = MultipartBody::upload_part(&Boundary::from_entropy([7; 16]), job.len);
//!     let wire = body.assemble(data);
//!     assert_eq!(wire.len() as u64, body.content_length);
//!
//!     let slot = ledger.check_add_part(&owner, &upload.id, now, &mut ids)?;
//!     let boundary = boundary_from_content_type(&body.content_type)?;
//!     let mut decoder = MultipartDecoder::new(&boundary, DecoderLimits::default())?;
//!     decoder.feed(wire.into());
//!     let mut received = Vec::new();
//!     while let Some(event) = decoder.poll_event()? {
//!         if let Event::Data(bytes) = event {
//!             received.extend_from_slice(&bytes);
//!         }
//!     }
//!     assert_eq!(received, data);
//!     let planned = ledger.add_part(&owner, &slot, received.len() as u64, now)?;
//!     let part = parse_add_upload_part(&commit(&mut ledger, planned))?;
//!     stored.insert(part.id.clone(), received); // the service's disk
//!     session.handle_part_done(job.index, part.id);
//! }
//! assert_eq!(session.state(), SessionState::ReadyToComplete);
//!
//! // Complete with the md5; the service verifies it over the listed parts.
//! let complete = session.complete_request(Some(md5.finish_hex())).unwrap();
//! let request = config.complete_upload(&upload.id, &complete)?;
//! let CompletePlan::Verify(verification) = ledger.plan_complete(&owner, &upload.id, request.body(), now)? else {
//!     unreachable!("the upload was pending");
//! };
//! let mut server_md5 = Md5Hasher::new();
//! for part in verification.parts() {
//!     server_md5.update(&stored[&part.id]);
//! }
//! let planned = ledger.finish_complete(&owner, &verification, Some(server_md5.finish()), now, &mut ids)?;
//! let completed = parse_complete_upload(&commit(&mut ledger, planned))?;
//! assert_eq!(completed.status, UploadStatus::Completed);
//! assert_eq!(completed.file.map(|file| file.bytes), Some(file.len() as u64));
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod buffer;
pub mod digest;
pub mod forms;
pub mod ledger;
pub mod limits;
pub mod multipart;
pub mod rejection;
pub mod retry;
pub mod route;
pub mod session;
pub mod types;
pub mod upload;
pub mod uploader;

pub use http;
