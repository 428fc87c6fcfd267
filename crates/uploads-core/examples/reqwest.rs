//! A third driver of the core's [`Uploader`], on blocking reqwest and plain threads, using
//! nothing but uploads-core's public API: the whole upload (parts in parallel, md5, retries,
//! cancel on failure) in one loop.
//!
//! ```text
//! OPENAI_API_KEY=sk-... OPENAI_BASE_URL=http://127.0.0.1:8080/v1 \
//!     cargo run -p uploads-core --example reqwest -- FILE --purpose batch
//! ```
//!
//! Prints the completed Upload as JSON on stdout; progress goes to stderr.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uploads_core::api::{self, ClientConfig, ResponseError};
use uploads_core::digest::Md5Hasher;
use uploads_core::http;
use uploads_core::multipart::{Boundary, MultipartBody};
use uploads_core::retry::jitter_from_bytes;
use uploads_core::types::Purpose;
use uploads_core::upload::{RequestError, UploadOptions};
use uploads_core::uploader::{Action, Report, Transmit, Uploader};

type Error = RequestError<reqwest::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // FILE --purpose PURPOSE
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, purpose) = match args.as_slice() {
        [path, flag, purpose] if flag == "--purpose" => (PathBuf::from(path), purpose.clone()),
        _ => return Err("usage: reqwest FILE --purpose PURPOSE".into()),
    };
    let config = ClientConfig::from_env(|name| std::env::var(name).ok());
    let http = reqwest::blocking::Client::new();
    let len = std::fs::metadata(&path)?.len();
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());

    // The machine decides everything; the loop below only does what it asks.
    let options = UploadOptions::new(Purpose::from_wire(&purpose));
    let mut uploader = Uploader::new(&options, &name.unwrap_or_default(), len, None, now())?;
    let (reports, received) = channel();
    loop {
        while let Some(action) = uploader.poll_action(now()) {
            let (http, config, path, reports) =
                (http.clone(), config.clone(), path.clone(), reports.clone());
            match action {
                Action::Send(transmit) => {
                    std::thread::spawn(move || send(&http, &config, &path, transmit, &reports));
                }
                Action::Hash { offset, len } => {
                    std::thread::spawn(move || {
                        let _ = reports.send(Report::Hashed(md5(&path, offset, len)));
                    });
                }
                // This driver asks for no snapshot; a finished part thread's report is ignored.
                Action::WriteSnapshot { .. }
                | Action::RemoveSnapshot { .. }
                | Action::StopParts => {}
            }
        }
        let timeout = uploader.poll_timeout();
        while let Some(event) = uploader.poll_event() {
            eprintln!("{event:?}");
        }
        if let Some(result) = uploader.poll_finished() {
            println!("{}", serde_json::to_string_pretty(&result?)?);
            return Ok(());
        }
        // Wait for a report, or until the machine's timeout (a retry, the deadline).
        let report = match timeout {
            Some(at) => received
                .recv_timeout(Duration::from_millis(at.saturating_sub(now())))
                .ok(),
            None => received.recv().ok(),
        };
        match report {
            Some(report) => uploader.handle(report, now(), jitter()),
            None => uploader.handle_timeout(now()),
        }
    }
}

/// Sends one request the machine asked for and reports how it ended.
fn send(
    http: &reqwest::blocking::Client,
    config: &ClientConfig,
    path: &Path,
    transmit: Transmit,
    reports: &Sender<Report<reqwest::Error>>,
) {
    let report = match transmit {
        Transmit::Create(request) => Report::Created(
            config
                .create_upload(&request)
                .map_err(Error::from)
                .and_then(|request| exchange(http, request, api::parse_create_upload)),
        ),
        Transmit::Complete { upload_id, request } => Report::Completed(
            config
                .complete_upload(&upload_id, &request)
                .map_err(Error::from)
                .and_then(|request| exchange(http, request, api::parse_complete_upload)),
        ),
        Transmit::Cancel { upload_id } => Report::Cancelled(
            config
                .cancel_upload(&upload_id)
                .map_err(Error::from)
                .and_then(|request| exchange(http, request, api::parse_cancel_upload)),
        ),
        Transmit::Part { upload_id, job } => {
            // head ++ job.len bytes of the file from job.offset ++ tail, streamed from disk.
            let multipart =
                MultipartBody::upload_part(&Boundary::from_entropy(random_bytes()), job.len);
            let result = config
                .add_upload_part_at(&upload_id, Some(job.index), &multipart)
                .map_err(Error::from)
                .and_then(|head| {
                    let mut file = File::open(path).map_err(Error::Source)?;
                    file.seek(SeekFrom::Start(job.offset))
                        .map_err(Error::Source)?;
                    let data = Cursor::new(multipart.head.clone())
                        .chain(file.take(job.len))
                        .chain(Cursor::new(multipart.tail.clone()));
                    let body = reqwest::blocking::Body::sized(data, multipart.content_length);
                    // The body begins now: the machine may start the next part.
                    let _ = reports.send(Report::Sent {
                        part: job.index,
                        bytes: 0,
                    });
                    exchange(http, head.map(|()| body), api::parse_add_upload_part)
                });
            Report::Part(job, result.map(|part| part.id))
        }
    };
    let _ = reports.send(report);
}

/// Sends `request` and parses the whole answer with the core's parser.
fn exchange<B: Into<reqwest::blocking::Body>, T>(
    http: &reqwest::blocking::Client,
    request: http::Request<B>,
    parse: fn(&http::Response<Vec<u8>>) -> Result<T, ResponseError>,
) -> Result<T, Error> {
    let request = reqwest::blocking::Request::try_from(request).map_err(Error::Transport)?;
    let response = http.execute(request).map_err(Error::Transport)?;
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        headers.extend(response.headers().clone());
    }
    let body = response.bytes().map_err(Error::Transport)?.to_vec();
    let answer = answer
        .body(body)
        .map_err(|error| Error::Source(std::io::Error::other(error)))?;
    Ok(parse(&answer)?)
}

/// The md5 of `len` bytes of the file from `offset`, as lower-case hex.
fn md5(path: &Path, offset: u64, len: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let (mut reader, mut hasher, mut chunk) = (file.take(len), Md5Hasher::new(), vec![0; 1 << 20]);
    loop {
        match reader.read(&mut chunk)? {
            0 => return Ok(hasher.finish_hex()),
            read => hasher.update(&chunk[..read]),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Random bytes from std's randomly keyed hasher: enough for boundaries and retry jitter.
fn random_bytes() -> [u8; 16] {
    let word = || RandomState::new().build_hasher().finish().to_le_bytes();
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&word());
    bytes[8..].copy_from_slice(&word());
    bytes
}

fn jitter() -> f64 {
    jitter_from_bytes(random_bytes()[..8].try_into().unwrap_or_default())
}
