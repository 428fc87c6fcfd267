//! A third driver of the core's [`Uploader`], on blocking reqwest and plain threads, using
//! nothing but uploads-core's public API: parts in parallel with their retries, the stall
//! rule, snapshots and cancel on failure, in one loop that only moves bytes.
//!
//! ```text
//! OPENAI_API_KEY=sk-... OPENAI_BASE_URL=http://127.0.0.1:8080/v1 \
//!     cargo run -p uploads-core --example reqwest -- FILE --purpose batch \
//!     [--mime-type TYPE] [--snapshot PATH]
//! ```
//!
//! Prints the completed Upload as JSON on stdout; progress goes to stderr. With `--snapshot`,
//! Ctrl-C stops and keeps the Upload and the same command resumes it; without, Ctrl-C
//! cancels it. It sends no md5 (the machine would ask for an `Action::Hash`).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc::Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uploads_core::upload::{RequestError, UploadOptions, connect_address, connect_failure};
use uploads_core::uploader::{Action, OutgoingBody, PartJob, Report, ReportGuard, SessionSnapshot};
use uploads_core::uploader::{StopMode, Uploader, source_fingerprint};
use uploads_core::{api::ClientConfig, http, multipart::Boundary, types::Purpose};

type Error = RequestError<reqwest::Error>;
type Reports = Sender<Report<reqwest::Error>>;

fn main() -> std::process::ExitCode {
    let Err(error) = run() else {
        return std::process::ExitCode::SUCCESS;
    };
    eprintln!("error: {}", uploads_core::upload::error_chain(&*error));
    std::process::ExitCode::FAILURE
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: reqwest FILE --purpose P [--mime-type T] [--snapshot S]")?;
    let mut options = UploadOptions::new(Purpose::Batch).md5(false);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        match flag.as_str() {
            "--purpose" => options.purpose = Purpose::from_wire(&value),
            "--mime-type" => options.mime_type = Some(value),
            "--snapshot" => options.snapshot_path = Some(value.into()),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    let config = ClientConfig::from_env(|name| std::env::var(name).ok());
    let http = reqwest::blocking::Client::builder().timeout(None).build()?; // the stall rule bounds it
    let (len, modified) = (
        std::fs::metadata(&path)?.len(),
        std::fs::metadata(&path)?.modified()?,
    );
    let source = source_fingerprint(
        &path,
        len,
        Some(modified.duration_since(UNIX_EPOCH)?.as_nanos()),
    );
    let mut uploader = match options.snapshot_path.as_ref().map(std::fs::read_to_string) {
        Some(Ok(json)) => Uploader::resume(
            &options,
            SessionSnapshot::from_json(&json)?,
            len,
            &source,
            now(),
        )?,
        _ => Uploader::new(
            &options,
            path.rsplit('/').next().unwrap_or(&path),
            len,
            Some(source),
            now(),
        )?,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    ctrlc::set_handler({
        let interrupted = Arc::clone(&interrupted);
        move || interrupted.store(true, Relaxed)
    })?;
    let stop_mode = if options.snapshot_path.is_some() {
        StopMode::Keep
    } else {
        StopMode::Cancel
    };
    let (reports, received) = std::sync::mpsc::channel();
    let mut parts = HashMap::new(); // each part attempt in flight, and the flag that stops it
    loop {
        if interrupted.load(Relaxed) {
            uploader.stop(stop_mode, now());
        }
        while let Some(action) = uploader.poll_action(now()) {
            start(action, &http, &config, &path, &reports, &mut parts);
        }
        let timeout = uploader.poll_timeout();
        while let Some(event) = uploader.poll_event() {
            eprintln!("{event:?}");
        }
        if let Some(result) = uploader.poll_finished() {
            println!("{}", serde_json::to_string_pretty(&result?)?);
            return Ok(());
        }
        let wait = timeout.map_or(100, |at| at.saturating_sub(now()).min(100)); // and look at Ctrl-C
        match received.recv_timeout(Duration::from_millis(wait)) {
            Ok(report) => uploader.handle(report, now(), f64::from(random()[0]) / 256.0),
            Err(_) => uploader.handle_timeout(now()),
        }
    }
}

/// Starts what the machine asked for; its report goes to `reports`, exactly once.
fn start(
    action: Action,
    http: &reqwest::blocking::Client,
    config: &ClientConfig,
    path: &str,
    reports: &Reports,
    parts: &mut HashMap<PartJob, Arc<AtomicBool>>,
) {
    let sender = reports.clone();
    let guard = ReportGuard::new(&action, move |report| drop(sender.send(report)));
    match (action, guard) {
        (Action::Send(transmit), Some(guard)) => {
            match transmit.into_request(config, &Boundary::from_entropy(random())) {
                Err(report) => guard.send(report),
                Ok((request, expect)) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    expect
                        .part()
                        .map(|job| parts.insert(job, Arc::clone(&stop)));
                    let (http, path, reports) = (http.clone(), path.to_owned(), reports.clone());
                    std::thread::spawn(move || {
                        guard.send(expect.report(exchange(&http, request, &path, &reports, &stop)));
                    });
                }
            }
        }
        (Action::WriteSnapshot { path, json }, Some(guard)) => {
            let temporary = path.with_extension("tmp"); // written whole, then renamed: atomic
            guard.send(Report::SnapshotDone(
                std::fs::write(&temporary, json).and_then(|()| std::fs::rename(&temporary, &path)),
            ));
        }
        (Action::RemoveSnapshot { path }, Some(guard)) => {
            guard.send(Report::SnapshotDone(std::fs::remove_file(path)));
        }
        (Action::StopPart(job), _) => parts
            .remove(&job)
            .iter()
            .for_each(|stop| stop.store(true, Relaxed)),
        _ => {} // StopRequest: a blocking request cannot be cut short, and its answer is harmless
    }
}

/// Sends one request and reads its answer. A part's body streams from the file, reporting
/// progress, until `stop`; its failed read is `Source`, a connection not made is `Connect`.
fn exchange(
    http: &reqwest::blocking::Client,
    request: http::Request<OutgoingBody>,
    path: &str,
    reports: &Sender<Report<reqwest::Error>>,
    stop: &Arc<AtomicBool>,
) -> Result<http::Response<Vec<u8>>, Error> {
    let (address, (head, body)) = (connect_address(request.uri()), request.into_parts());
    let (body, failed_read) = match body {
        OutgoingBody::Part(part) => {
            let mut file = std::fs::File::open(path).map_err(Error::Source)?;
            file.seek(SeekFrom::Start(part.job.offset))
                .map_err(Error::Source)?;
            let (job, length, reports, stop) = (
                part.job,
                part.multipart.content_length,
                reports.clone(),
                Arc::clone(stop),
            );
            let reader = part.reader(file, move |bytes| {
                reports.send(Report::Sent { job, bytes }).is_ok() && !stop.load(Relaxed)
            });
            let failed_read = reader.source_error();
            (
                reqwest::blocking::Body::sized(reader, length),
                Some(failed_read),
            )
        }
        OutgoingBody::Bytes(bytes) => (reqwest::blocking::Body::from(bytes.to_vec()), None),
        _ => {
            return Err(Error::Source(std::io::Error::other(
                "a body this driver cannot send",
            )));
        }
    };
    let request = reqwest::blocking::Request::try_from(http::Request::from_parts(head, body))
        .map_err(Error::Transport)?;
    let answer = http.execute(request).and_then(|response| {
        let mut answer = http::Response::builder().status(response.status());
        answer
            .headers_mut()
            .into_iter()
            .for_each(|headers| headers.extend(response.headers().clone()));
        Ok(answer.body(response.bytes()?.to_vec()).unwrap_or_default())
    });
    answer.map_err(|error| match failed_read.and_then(|failed| failed.take()) {
        Some(read_error) => Error::Source(read_error),
        None if error.is_connect() => Error::Connect {
            address,
            kind: connect_failure(&error, <dyn std::error::Error>::is::<rustls::Error>),
            source: error,
        },
        None => Error::Transport(error),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Random bytes from std's randomly keyed hasher: enough for boundaries and retry jitter.
fn random() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    (u128::from(word()) << 64 | u128::from(word())).to_le_bytes()
}
