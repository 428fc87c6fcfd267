//! `uploads put FILE...`: each file its own Upload, a few at once, with the async adapter or
//! (`--blocking`) the blocking one; one JSON line per completed Upload on stdout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use uploads_core::digest::Md5Hasher;
use uploads_core::limits::{Limits, mime_type_for_filename};
use uploads_core::types::{ExpiresAfter, Purpose, Upload, UploadId};
use uploads_core::upload::{OptionsError, UploadError, UploadOptions};
use uploads_core::uploader::SessionSnapshot;

use crate::progress::Display;
use crate::size::{format_duration, format_size, parse_duration, parse_size};
use crate::target::{Target, TargetArgs};
use crate::{Failure, client_help, explain, output};

/// The arguments of `put`.
#[derive(clap::Args, Debug)]
#[command(after_help = client_help(concat!(
    "  uploads put train.jsonl --purpose fine-tune\n",
    "  uploads put *.pdf --purpose assistants --jobs 4 > uploads.jsonl\n",
    "  uploads put big.bin --purpose user_data --part-size 16M --expires-after 30d\n",
    "  uploads put big.bin --purpose user_data --resume big.state   (run again to continue)\n",
    "  uploads put notes.txt --purpose assistants --local            (no network, ./uploads-data)"
)))]
pub struct PutArgs {
    /// The files to upload, each as its own Upload.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The Files' purpose: assistants, batch, fine-tune, vision, user_data or evals.
    #[arg(long)]
    pub purpose: String,
    /// The MIME type (default: guessed from each file name's extension).
    #[arg(long)]
    pub mime_type: Option<String>,
    /// The File's name (default: the file's own name; one file only).
    #[arg(long)]
    pub filename: Option<String>,
    /// Bytes per part, e.g. 64MiB, 64M or 64MB (default: chosen from the file size).
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Parts in flight at once, per file.
    #[arg(long, default_value_t = uploads_core::upload::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Files uploaded at once.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Do not compute and send the md5.
    #[arg(long)]
    pub no_md5: bool,
    /// When the File expires after its creation, e.g. 1h, 30d or 86400 (1h to 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires_after: Option<u64>,
    /// Keep the upload's state in this file: an interrupted or failed upload is kept (not
    /// cancelled) and the same command continues it (one file only).
    #[arg(long, value_name = "STATE_FILE")]
    pub resume: Option<PathBuf>,
    /// Use the blocking (thread-based) client instead of the async one.
    #[arg(long)]
    pub blocking: bool,
    /// Show no progress and no summary on stderr (errors still).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// One file to upload, checked.
struct Job {
    path: PathBuf,
    /// The name shown in messages.
    label: String,
    size: u64,
    /// Where the upload's state is kept while it runs (the `--resume` file, or a temporary
    /// one that lets Ctrl-C find the Upload to cancel).
    state_file: PathBuf,
    /// The state file to continue from, read and checked.
    resume_from: Option<SessionSnapshot>,
}

/// Runs `put`.
pub async fn put(args: PutArgs) -> Result<(), Failure> {
    if args.files.len() > 1 && (args.resume.is_some() || args.filename.is_some()) {
        return Err(Failure::Usage(
            "--resume and --filename take one file; run one `uploads put` per file for them"
                .to_owned(),
        ));
    }
    let jobs = args
        .files
        .iter()
        .enumerate()
        .map(|(index, path)| check(&args, index, path))
        .collect::<Result<Vec<_>, _>>()?;
    let target = Arc::new(args.target.resolve(crate::env).await?);
    let display = Arc::new(Display::for_stderr(args.quiet));
    let args = Arc::new(args);
    let outcome = run_all(&args, jobs, &target, &display).await;
    if let Ok(target) = Arc::try_unwrap(target) {
        target.close().await;
    }
    outcome
}

/// Everything that can be checked before any request: the file, the MIME type for the
/// purpose, the part plan, the expiry, the state file.
fn check(args: &PutArgs, index: usize, path: &Path) -> Result<Job, Failure> {
    let label = path.display().to_string();
    let metadata = std::fs::metadata(path)
        .map_err(|error| Failure::Usage(format!("cannot read {label}: {error}")))?;
    if metadata.is_dir() {
        return Err(Failure::Usage(format!(
            "{label} is a directory: give the files in it (e.g. {label}/*)"
        )));
    }
    let limits = Limits::default();
    let purpose = Purpose::from_wire(&args.purpose);
    let filename = args.filename.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mime_type = match &args.mime_type {
        Some(mime_type) => mime_type.clone(),
        None => match mime_type_for_filename(&filename) {
            Some(mime_type) => mime_type.to_owned(),
            None if limits.mime_rule(&purpose).is_none() => String::new(),
            None => {
                return Err(Failure::Usage(explain::unknown_mime(
                    &limits, &purpose, &filename,
                )));
            }
        },
    };
    if let Some(refusal) = explain::mime_refusal(&limits, &purpose, &mime_type) {
        return Err(Failure::Usage(format!("{label}: {refusal}")));
    }
    if let Some(seconds) = args.expires_after {
        let range = &limits.expires_after_secs;
        if !range.contains(&seconds) {
            return Err(Failure::Usage(format!(
                "--expires-after {} is outside what the service accepts: {} to {}",
                format_duration(Duration::from_secs(seconds).as_secs_f64()),
                format_duration(Duration::from_secs(*range.start()).as_secs_f64()),
                format_duration(Duration::from_secs(*range.end()).as_secs_f64())
            )));
        }
    }
    options(args, &mime_type, PathBuf::new())
        .prepare(&filename, metadata.len())
        .map_err(|error| match error {
            OptionsError::Plan(plan) => {
                Failure::Usage(format!("{label}: {}", explain::plan(&plan)))
            }
            other => Failure::Usage(format!("{label}: {other}")),
        })?;
    let state_file = args.resume.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("uploads-put-{}-{index}.json", std::process::id()))
    });
    let resume_from = match &args.resume {
        Some(state) if state.exists() => Some(read_state(state)?),
        _ => None,
    };
    Ok(Job {
        path: path.to_owned(),
        label,
        size: metadata.len(),
        state_file,
        resume_from,
    })
}

/// A `--resume` state file, or why it cannot be continued.
fn read_state(path: &Path) -> Result<SessionSnapshot, Failure> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        Failure::Usage(explain::resume_refusal(
            &uploads_core::uploader::ResumeError::Malformed {
                message: format!("cannot read it: {error}"),
            },
            &shown,
        ))
    })?;
    SessionSnapshot::from_json(&text)
        .map_err(|error| Failure::Usage(explain::resume_refusal(&error, &shown)))
}

/// The adapter's options for one file.
fn options(args: &PutArgs, mime_type: &str, state_file: PathBuf) -> UploadOptions {
    let mut options = UploadOptions::new(Purpose::from_wire(&args.purpose))
        .concurrency(args.concurrency)
        .md5(!args.no_md5)
        // With a state file the upload is kept for a resume; without one it is cancelled.
        .cancel_on_failure(args.resume.is_none())
        .mime_type(mime_type);
    if let Some(filename) = &args.filename {
        options = options.filename(filename);
    }
    if let Some(part_size) = args.part_size {
        options = options.part_size(part_size);
    }
    if let Some(seconds) = args.expires_after {
        options = options.expires_after(ExpiresAfter::after_creation(seconds));
    }
    options.snapshot_path(state_file)
}

/// Uploads every job, `--jobs` at once, printing each completed Upload as it completes.
async fn run_all(
    args: &Arc<PutArgs>,
    jobs: Vec<Job>,
    target: &Arc<Target>,
    display: &Arc<Display>,
) -> Result<(), Failure> {
    let total = jobs.len();
    let single = total == 1;
    let limit = Arc::new(tokio::sync::Semaphore::new(usize::from(args.jobs)));
    let mut running = JoinSet::new();
    let mut started: Vec<(String, PathBuf)> = Vec::new();
    // One stop signal for every upload, async or blocking.
    let stop = uploads_ureq::StopSignal::new();
    for job in jobs {
        started.push((job.label.clone(), job.state_file.clone()));
        let (args, target, display, limit, stop) = (
            Arc::clone(args),
            Arc::clone(target),
            Arc::clone(display),
            Arc::clone(&limit),
            stop.clone(),
        );
        running.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let label = job.label.clone();
            (label, put_one(&args, job, &target, &display, stop).await)
        });
    }
    let mut failed = 0;
    let mut first_failure = None;
    let mut stdout_closed = false;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let next = tokio::select! {
            next = running.join_next() => next,
            _ = &mut interrupt => {
                // Both clients stop alike and keep their Upload, by the stop signal; waited
                // for, so that no part goes on sending (or a thread outlives the runtime).
                stop.stop();
                while running.join_next().await.is_some() {}
                for (label, state_file) in &started {
                    interrupted(args, label, state_file, target, display).await;
                }
                return Err(Failure::Interrupted);
            }
        };
        let Some(joined) = next else {
            break;
        };
        let (label, result) =
            joined.map_err(|error| Failure::Transfer(format!("an upload task failed: {error}")))?;
        started.retain(|(started, _)| *started != label);
        match result {
            Ok(upload) => {
                let line = serde_json::to_string(&upload).map_err(|error| {
                    Failure::Transfer(format!("cannot print the Upload: {error}"))
                })?;
                if !stdout_closed && let Err(failure) = output::print_line(&line) {
                    if !matches!(failure, Failure::StdoutClosed) {
                        return Err(failure);
                    }
                    // The reader went away: finish the uploads, then exit as SIGPIPE would.
                    stdout_closed = true;
                }
            }
            Err(failure) if single => first_failure = Some(failure),
            Err(failure) => {
                failed += 1;
                if let Failure::Usage(message) | Failure::Transfer(message) = &failure {
                    display.error(&format!("{label}: {message}"));
                }
            }
        }
    }
    if let Some(failure) = first_failure {
        return Err(failure);
    }
    if !single {
        let line = format!(
            "{} of {total} files uploaded{}",
            total - failed,
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
        if failed > 0 {
            display.error(&line);
        } else {
            display.note(&line);
        }
    }
    if stdout_closed {
        Err(Failure::StdoutClosed)
    } else if failed > 0 {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// Uploads (or resumes) one file and, with `--local`, verifies what was stored.
async fn put_one(
    args: &PutArgs,
    job: Job,
    target: &Target,
    display: &Display,
    stop: uploads_ureq::StopSignal,
) -> Result<Upload, Failure> {
    let already = job.resume_from.as_ref().map_or(0, |snapshot| {
        snapshot
            .part_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_some())
            .map(|(index, _)| {
                let start = index as u64 * snapshot.part_size;
                snapshot
                    .part_size
                    .min(snapshot.file_size.saturating_sub(start))
            })
            .sum()
    });
    let progress = Arc::new(display.transfer("uploading", &job.label, job.size, already));
    if let Some(snapshot) = &job.resume_from {
        let stored = snapshot.part_ids.iter().filter(|id| id.is_some()).count();
        let parts = snapshot.part_ids.len();
        display.note(&format!(
            "{}: resuming Upload {}: {stored} of {parts} parts already stored ({} of {})",
            job.label,
            snapshot.upload.id,
            format_size(already),
            format_size(job.size)
        ));
        progress.set_parts(
            u32::try_from(stored).unwrap_or(u32::MAX),
            u32::try_from(parts).unwrap_or(u32::MAX),
        );
    }
    let mime_type = match &args.mime_type {
        Some(mime_type) => mime_type.clone(),
        None => mime_type_for_filename(&args.filename.clone().unwrap_or_else(|| {
            job.path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        }))
        .unwrap_or_default()
        .to_owned(),
    };
    let watched = Arc::clone(&progress);
    let options = options(args, &mime_type, job.state_file.clone())
        .on_progress(move |event| watched.show(event));
    let result = send(args, target, &job, options, stop).await;
    let upload = match result {
        Ok(upload) => upload,
        Err(failure) => {
            progress.abandon();
            return Err(failure);
        }
    };
    let file_id = upload
        .file
        .as_ref()
        .map(|file| file.id.to_string())
        .unwrap_or_default();
    if target.local.is_some() {
        progress.finishing("verifying the stored File's md5");
        let verified = verify_local(target, &job.path, &upload).await;
        match verified {
            Ok(()) => progress.finish(&format!("File {file_id} (md5 verified)")),
            Err(failure) => {
                progress.abandon();
                return Err(failure);
            }
        }
    } else {
        progress.finish(&format!("File {file_id}"));
    }
    Ok(upload)
}

/// Uploads (or resumes) with the chosen adapter; errors explained for a person.
async fn send(
    args: &PutArgs,
    target: &Target,
    job: &Job,
    options: UploadOptions,
    stop: uploads_ureq::StopSignal,
) -> Result<Upload, Failure> {
    let file = job.path.clone();
    let state_file = job.state_file.clone();
    let resuming = job.resume_from.is_some();
    let base_url = target.config.base_url.clone();
    if args.blocking {
        let client = uploads_ureq::Client::new(target.config.clone()).stop_signal(stop);
        let result = tokio::task::spawn_blocking(move || {
            if resuming {
                client.resume_upload(state_file.as_path(), &file, options)
            } else {
                client.upload_file(&file, options)
            }
        })
        .await
        .map_err(|error| Failure::Transfer(format!("the upload thread failed: {error}")))?;
        result.map_err(|error| upload_failure(&error, &base_url, args, job))
    } else {
        let client = uploads_hyper::Client::new(target.config.clone()).stop_signal(stop);
        let result = if resuming {
            client
                .resume_upload(state_file.as_path(), &file, options)
                .await
        } else {
            client.upload_file(&file, options).await
        };
        result.map_err(|error| upload_failure(&error, &base_url, args, job))
    }
}

/// One line saying what failed and what to do next: continue (the same command) only when
/// that can help, else start over.
fn upload_failure<E: std::error::Error + 'static>(
    error: &UploadError<E>,
    base_url: &str,
    args: &PutArgs,
    job: &Job,
) -> Failure {
    let state = job.state_file.display().to_string();
    match error {
        UploadError::Resume(resume) => {
            return Failure::Usage(explain::resume_refusal(resume, &state));
        }
        UploadError::SourceChanged { .. } => {
            return Failure::Usage(format!(
                "{} changed since {state} was written, so its stored parts no longer match: delete {state} (rm {state}) and run the command again to upload it from the start",
                job.label
            ));
        }
        _ => {}
    }
    let (message, can_continue) = explain::upload(error, base_url);
    if args.resume.is_none() {
        return Failure::Transfer(message);
    }
    if can_continue {
        Failure::Transfer(format!("{message}; continue with: {}", resume_command()))
    } else if matches!(error, UploadError::Aborted { .. }) {
        Failure::Transfer(format!(
            "{message}; running the same command again would fail the same way: delete {state} (rm {state}) and run the command again to start a new Upload"
        ))
    } else {
        Failure::Transfer(message)
    }
}

/// The command that continues the upload: the one that was run, which names the state file.
fn resume_command() -> String {
    std::env::args()
        .enumerate()
        .map(|(index, arg)| {
            if index == 0 {
                "uploads".to_owned()
            } else {
                shell_quoted(&arg)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An argument as a POSIX shell reads it back: bare when it is plain, else single-quoted.
fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Ctrl-C stopped the upload of `label`: keep its Upload for `--resume`, else cancel it;
/// either way name it.
async fn interrupted(
    args: &PutArgs,
    label: &str,
    state_file: &Path,
    target: &Target,
    display: &Display,
) {
    let upload_id = std::fs::read_to_string(state_file)
        .ok()
        .and_then(|json| SessionSnapshot::from_json(&json).ok())
        .map(|snapshot| snapshot.upload.id);
    let Some(upload_id) = upload_id else {
        display.error(&format!(
            "{label}: interrupted before its Upload was created; nothing to resume or cancel"
        ));
        return;
    };
    if args.resume.is_some() {
        display.error(&format!(
            "{label}: interrupted; Upload {upload_id} is kept until it expires (an hour after it was created); continue with: {}",
            resume_command()
        ));
        return;
    }
    let _ = std::fs::remove_file(state_file);
    let message = cancel(target, &upload_id).await;
    display.error(&format!("{label}: interrupted; {message}"));
}

async fn cancel(target: &Target, upload_id: &UploadId) -> String {
    let client = uploads_hyper::Client::new(target.config.clone());
    match client.cancel_upload(upload_id).await {
        Ok(upload) => format!("Upload {} is {}", upload.id, upload.status),
        Err(error) => format!(
            "cancelling Upload {upload_id} failed: {} (it expires within an hour)",
            explain::request(&error, &target.config.base_url)
        ),
    }
}

/// `--local`: reads the stored File back and checks it has the local file's md5.
async fn verify_local(target: &Target, path: &Path, upload: &Upload) -> Result<(), Failure> {
    let file = upload
        .file
        .as_ref()
        .ok_or_else(|| Failure::Transfer("the completed Upload carries no File".to_owned()))?;
    let client = uploads_hyper::Client::new(target.config.clone());
    let stored = async {
        let mut content = client
            .file_content(&file.id)
            .await
            .map_err(|error| error.to_string())?;
        let mut hasher = Md5Hasher::new();
        while let Some(chunk) = content.next_chunk().await {
            hasher.update(&chunk.map_err(|error| error.to_string())?);
        }
        Ok::<_, String>(hasher.finish_hex())
    };
    let (stored, original) = tokio::join!(stored, md5_of_file(path));
    let stored = stored
        .map_err(|error| Failure::Transfer(format!("reading the stored File failed: {error}")))?;
    let original = original.map_err(|error| {
        Failure::Transfer(format!("reading {} failed: {error}", path.display()))
    })?;
    if stored != original {
        return Err(Failure::Transfer(format!(
            "the stored File's md5 {stored} differs from {}'s {original}",
            path.display()
        )));
    }
    Ok(())
}

async fn md5_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Md5Hasher::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok(hasher.finish_hex());
        }
        hasher.update(&buffer[..n]);
    }
}
