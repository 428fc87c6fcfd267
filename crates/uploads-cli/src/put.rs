//! `uploads put FILE...`: each file its own Upload, a few at once in the order given, with
//! the async adapter or (`--blocking`) the blocking one; one JSON line per completed Upload
//! on stdout. A stopped or failed Upload is kept, and the same command continues it.

use std::collections::VecDeque;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use uploads_core::digest::Md5Hasher;
use uploads_core::limits::{Limits, mime_type_for_filename};
use uploads_core::types::{ExpiresAfter, Purpose, Upload, UploadId};
use uploads_core::upload::{AbortCause, OptionsError, UploadError, UploadOptions};
use uploads_core::uploader::{ResumeError, SessionSnapshot};

use crate::progress::{Display, Expiry, ProgressFormat};
use crate::size::{format_duration, format_size, parse_duration, parse_size};
use crate::state::{self, StateDir};
use crate::target::{Target, TargetArgs};
use crate::{Failure, client_help, explain, output};

/// The arguments of `put`.
#[derive(clap::Args, Debug)]
#[command(after_help = format!("{}\n\n{PUT_NOTES}", client_help(concat!(
    "  uploads put train.jsonl --purpose fine-tune\n",
    "  uploads put *.pdf --purpose assistants --jobs 4 > uploads.jsonl\n",
    "  uploads put a.jsonl b.bin --purpose user_data --default-mime-type application/octet-stream\n",
    "  uploads put big.bin --purpose user_data --part-size 16M --expires-after 30d\n",
    "  uploads put big.bin --purpose user_data        (stopped? run it again to continue)\n",
    "  uploads put big.bin --purpose user_data --progress json 2> progress.jsonl\n",
    "  uploads put notes.txt --purpose assistants --local            (no network, ./uploads-data)"
))))]
// Each is a command-line switch.
#[allow(clippy::struct_excessive_bools)]
pub struct PutArgs {
    /// The files to upload, each as its own Upload.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The Files' purpose: assistants, batch, fine-tune, vision, user_data or evals (or any
    /// other the service knows).
    #[arg(long, value_parser = PurposeParser, hide_possible_values = true)]
    pub purpose: String,
    /// The MIME type of every file (default: guessed from each file name's extension).
    #[arg(long)]
    pub mime_type: Option<String>,
    /// The MIME type of the files whose extension says nothing (the others keep theirs).
    #[arg(long, value_name = "MIME_TYPE")]
    pub default_mime_type: Option<String>,
    /// The File's name (default: the file's own name; one file only).
    #[arg(long)]
    pub filename: Option<String>,
    /// Bytes per part, e.g. 64MiB, 64M or 64MB (default: chosen from the file size).
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Parts in flight at once, per file, fixed (default: the uploader decides).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Files uploaded at once, started in the order given.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Do not compute and send the md5.
    #[arg(long)]
    pub no_md5: bool,
    /// When the File expires after its creation, e.g. 1h, 30d or 86400 (1h to 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires_after: Option<u64>,
    /// Keep the upload's state in this file instead of the per-user state directory (one
    /// file only).
    #[arg(long, value_name = "STATE_FILE", conflicts_with = "no_resume")]
    pub resume: Option<PathBuf>,
    /// Start a new Upload even if one of this file is kept, and keep no state: an Upload
    /// stopped by Ctrl-C or a failure is cancelled, as nothing could continue it.
    #[arg(long)]
    pub no_resume: bool,
    /// Cancel the Upload on Ctrl-C or a failure instead of keeping it to continue.
    #[arg(long)]
    pub cancel_on_stop: bool,
    /// Progress on stderr: for a person, or one JSON object per line.
    #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
    pub progress: ProgressFormat,
    /// Use the blocking (thread-based) client instead of the async one.
    #[arg(long)]
    pub blocking: bool,
    /// Show no progress and no summary on stderr (errors still).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// What `put --help` says about resuming, the order of files and JSON progress.
const PUT_NOTES: &str = "\
Resuming:
  Ctrl-C or a failed transfer keeps the Upload (OpenAI expires it an hour after its creation);
  running the same command again continues it from the parts already stored. The state is kept
  per file, destination and API key (never the key itself) in $XDG_STATE_HOME/uploads (else
  ~/.local/state/uploads) and removed when the Upload completes. A kept Upload that expired,
  was cancelled or completed, or whose file changed, is replaced by a new one, saying why.
  `uploads cancel ID` drops a kept Upload; --cancel-on-stop cancels instead of keeping.
  After the first seconds, put says when at the rate measured a file cannot be sent before
  its Upload expires, with what helps.

Order:
  Files start in the order given, --jobs at a time; each completed Upload is printed on stdout
  as one JSON line when it completes (so in the order of completion).

--progress json:
  one object per line on stderr, e.g. {\"event\":\"progress\",\"time_ms\":1719184912000,
  \"file\":\"big.bin\",\"bytes_delivered\":N,\"bytes_sent\":N,\"bytes_total\":N,\"parts_done\":N,
  \"parts_total\":N} at most every 100 ms per file and at each part stored; notes are
  {\"event\":\"note\",\"message\":...} and the summary {\"event\":\"uploaded\",...}. Errors stay
  `uploads: error:` lines.";

/// `--purpose`: shell completion offers the purposes an Upload may have (not the ones only
/// the service gives, such as `batch_output`); any other string is passed on, as a service
/// may know purposes this build does not.
#[derive(Clone, Debug)]
struct PurposeParser;

impl clap::builder::TypedValueParser for PurposeParser {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(command, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let limits = Limits::default();
        Some(Box::new(
            Purpose::KNOWN
                .iter()
                .filter(move |purpose| limits.mime_rule(purpose).is_some())
                .map(|purpose| clap::builder::PossibleValue::new(purpose.as_str())),
        ))
    }
}

/// One file to upload, checked.
struct Job {
    path: PathBuf,
    /// The name shown in messages.
    label: String,
    size: u64,
    /// The MIME type sent (empty: none known, for a purpose this build does not know).
    mime_type: String,
    /// How many parts the plan has (the bar's count before the first part is stored).
    parts: u32,
    /// Where the Upload's state is kept while it runs (none with `--no-resume`).
    state_file: Option<PathBuf>,
    /// Whether the state file was named with `--resume` (else it is the per-user one).
    explicit: bool,
    /// The state to continue from, read and checked.
    resume_from: Option<SessionSnapshot>,
    /// The per-user state, held against a second `put` of the same file.
    claim: Option<state::Claim>,
}

/// Runs `put`.
pub async fn put(args: PutArgs) -> Result<(), Failure> {
    if args.files.len() > 1 && (args.resume.is_some() || args.filename.is_some()) {
        return Err(Failure::Usage(
            "--resume and --filename take one file; run one `uploads put` per file for them"
                .to_owned(),
        ));
    }
    if args.mime_type.is_some() && args.default_mime_type.is_some() {
        return Err(Failure::Usage(
            "--mime-type sets the type of every file and --default-mime-type only of those whose extension says nothing: give one of them".to_owned(),
        ));
    }
    let mut jobs = args
        .files
        .iter()
        .map(|path| check(&args, path))
        .collect::<Result<Vec<_>, _>>()?;
    let target = Arc::new(args.target.resolve(crate::env).await?);
    let display = Arc::new(Display::for_stderr(args.quiet, args.progress));
    let args = Arc::new(args);
    let outcome = match keep_state(&args, &mut jobs, &target, &display) {
        Ok(()) => run_all(&args, jobs, &target, &display).await,
        Err(failure) => Err(failure),
    };
    if let Ok(target) = Arc::try_unwrap(target) {
        target.close().await;
    }
    outcome
}

/// Everything that can be checked before any request: the file, the MIME type for the
/// purpose, the part plan, the expiry, the `--resume` state file.
fn check(args: &PutArgs, path: &Path) -> Result<Job, Failure> {
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
    let guessed = mime_type_for_filename(&filename);
    let mime_type = match (&args.mime_type, guessed, &args.default_mime_type) {
        (Some(forced), _, _) => forced.clone(),
        (None, Some(guessed), _) => guessed.to_owned(),
        (None, None, Some(default)) => default.clone(),
        (None, None, None) if limits.mime_rule(&purpose).is_none() => String::new(),
        (None, None, None) => {
            return Err(Failure::Usage(explain::unknown_mime(
                &limits, &purpose, &filename,
            )));
        }
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
    let (_, plan) = options(args, &mime_type, None)
        .prepare(&filename, metadata.len())
        .map_err(|error| match error {
            OptionsError::Plan(plan) => {
                Failure::Usage(format!("{label}: {}", explain::plan(&plan)))
            }
            other => Failure::Usage(format!("{label}: {other}")),
        })?;
    let resume_from = match &args.resume {
        Some(state) if state.exists() => Some(read_state(state)?),
        _ => None,
    };
    Ok(Job {
        path: path.to_owned(),
        label,
        size: metadata.len(),
        mime_type,
        parts: plan.count(),
        state_file: args.resume.clone(),
        explicit: args.resume.is_some(),
        resume_from,
        claim: None,
    })
}

/// Without `--resume` or `--no-resume`: takes each file's per-user state (refused while
/// another `put` holds it) and reads the Upload it keeps, if any.
fn keep_state(
    args: &PutArgs,
    jobs: &mut [Job],
    target: &Target,
    display: &Display,
) -> Result<(), Failure> {
    if args.no_resume || args.resume.is_some() {
        return Ok(());
    }
    let states = StateDir::for_user(crate::env).ok_or_else(|| {
        Failure::Usage(
            "neither XDG_STATE_HOME nor HOME is set, so there is nowhere to keep the upload's state: set one, or give --no-resume".to_owned(),
        )
    })?;
    // An embedded server's URL changes every run; its data directory does not.
    let destination = match &target.local {
        Some(_) => format!(
            "local:{}",
            std::fs::canonicalize(&args.target.data_dir)
                .unwrap_or_else(|_| args.target.data_dir.clone())
                .display()
        ),
        None => target.config.base_url.clone(),
    };
    for job in jobs {
        let canonical = std::fs::canonicalize(&job.path)
            .map_err(|error| Failure::Usage(format!("cannot read {}: {error}", job.label)))?;
        let claim = states.claim(
            &job.label,
            &canonical,
            &destination,
            target.config.api_key.as_deref(),
        )?;
        job.resume_from = match std::fs::read_to_string(&claim.state_file) {
            Ok(text) => match SessionSnapshot::from_json(&text) {
                Ok(snapshot) => Some(snapshot),
                Err(error) => {
                    display.note(&format!(
                        "{}: the kept state {} is unreadable ({error}): starting a new Upload",
                        job.label,
                        claim.state_file.display()
                    ));
                    let _ = std::fs::remove_file(&claim.state_file);
                    None
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(Failure::Usage(format!(
                    "cannot read {}: {error} (give --no-resume to start a new Upload)",
                    claim.state_file.display()
                )));
            }
        };
        job.state_file = Some(claim.state_file.clone());
        job.claim = Some(claim);
    }
    Ok(())
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

/// Whether a stopped or failed Upload is cancelled rather than kept: when asked, and when no
/// state is kept that could continue it.
fn cancels(args: &PutArgs) -> bool {
    args.cancel_on_stop || args.no_resume
}

/// The adapter's options for one file.
fn options(args: &PutArgs, mime_type: &str, state_file: Option<&Path>) -> UploadOptions {
    let mut options = UploadOptions::new(Purpose::from_wire(&args.purpose))
        .md5(!args.no_md5)
        .cancel_on_failure(cancels(args))
        .mime_type(mime_type);
    if let Some(concurrency) = args.concurrency {
        options = options.concurrency(concurrency);
    }
    if let Some(filename) = &args.filename {
        options = options.filename(filename);
    }
    if let Some(part_size) = args.part_size {
        options = options.part_size(part_size);
    }
    if let Some(seconds) = args.expires_after {
        options = options.expires_after(ExpiresAfter::after_creation(seconds));
    }
    if let Some(state_file) = state_file {
        options = options.snapshot_path(state_file);
    }
    options
}

/// What one file's upload ended with.
type Finished = (String, Result<Upload, Failure>);

/// Uploads every job, `--jobs` at once in the order given, printing each completed Upload
/// as it completes.
async fn run_all(
    args: &Arc<PutArgs>,
    jobs: Vec<Job>,
    target: &Arc<Target>,
    display: &Arc<Display>,
) -> Result<(), Failure> {
    let total = jobs.len();
    let single = total == 1;
    let (finished, mut results) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    // One stop signal for every upload, async or blocking.
    let stop = uploads_ureq::StopSignal::new();
    let mut workers = spawn_workers(args, jobs, target, display, &stop, &finished);
    drop(finished);
    let mut failed = 0;
    let mut first_failure = None;
    let mut stdout_closed = false;
    let mut interrupted = false;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let next = tokio::select! {
            next = results.recv() => next,
            _ = &mut interrupt, if !interrupted => {
                // Both clients stop alike, by the stop signal, and each upload reports how
                // it ended (kept or cancelled) as a failure said below.
                interrupted = true;
                if cancels(args) {
                    stop.cancel();
                } else {
                    stop.stop();
                }
                continue;
            }
        };
        let Some((label, result)) = next else {
            break;
        };
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
            Err(failure) if single && !interrupted => first_failure = Some(failure),
            Err(failure) => {
                failed += 1;
                if let Failure::Usage(message) | Failure::Transfer(message) = &failure {
                    display.error(&format!("{label}: {message}"));
                }
            }
        }
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|error| Failure::Transfer(format!("an upload task failed: {error}")))?;
    }
    if interrupted {
        return Err(Failure::Interrupted);
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

/// Starts `--jobs` workers that upload the jobs in the order given, each reporting to
/// `finished` as it ends; none starts a job once `stop` is given.
fn spawn_workers(
    args: &Arc<PutArgs>,
    jobs: Vec<Job>,
    target: &Arc<Target>,
    display: &Arc<Display>,
    stop: &uploads_ureq::StopSignal,
    finished: &tokio::sync::mpsc::UnboundedSender<Finished>,
) -> JoinSet<()> {
    let count = usize::from(args.jobs).min(jobs.len());
    // A queue the workers take from in turn: tasks spawned at once would start in the
    // runtime's order (the last one first), not the order given.
    let queue = Arc::new(std::sync::Mutex::new(VecDeque::from(jobs)));
    let mut workers = JoinSet::new();
    for _ in 0..count {
        let (args, target, display, queue, stop, finished) = (
            Arc::clone(args),
            Arc::clone(target),
            Arc::clone(display),
            Arc::clone(&queue),
            stop.clone(),
            finished.clone(),
        );
        workers.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut queue| queue.pop_front());
                let Some(job) = next.filter(|_| !stop.is_stopped()) else {
                    return;
                };
                let label = job.label.clone();
                let result = put_one(&args, job, &target, &display, stop.clone()).await;
                if finished.send((label, result)).is_err() {
                    return;
                }
            }
        });
    }
    workers
}

/// How one attempt at a file's upload ended, when it did not complete.
enum Stopped {
    /// The kept Upload cannot be continued (why): a new one should be started.
    StartOver(String),
    /// The upload failed; the failure says what to do.
    Failed(Failure),
}

/// Uploads (or resumes) one file and, with `--local`, verifies what was stored.
async fn put_one(
    args: &PutArgs,
    job: Job,
    target: &Target,
    display: &Display,
    stop: uploads_ureq::StopSignal,
) -> Result<Upload, Failure> {
    let progress = Arc::new(display.transfer("uploading", &job.label, job.size, 0));
    progress.expires_by(match &job.state_file {
        Some(state_file) => Expiry::Snapshot(state_file.clone()),
        None => Expiry::After(Duration::from_secs(Limits::default().upload_ttl_secs)),
    });
    let mut resume_from = job.resume_from.clone();
    let upload = loop {
        match &resume_from {
            Some(snapshot) => {
                let stored = snapshot.part_ids.iter().filter(|id| id.is_some()).count();
                let parts = snapshot.part_ids.len();
                let already = snapshot.stored_bytes();
                display.note(&format!(
                    "{}: resuming Upload {}: {stored} of {parts} parts stored ({} of {})",
                    job.label,
                    snapshot.upload.id,
                    format_size(already),
                    format_size(job.size)
                ));
                progress.begin(
                    already,
                    (
                        u32::try_from(stored).unwrap_or(u32::MAX),
                        u32::try_from(parts).unwrap_or(u32::MAX),
                    ),
                );
            }
            None => progress.begin(0, (0, job.parts)),
        }
        let watched = Arc::clone(&progress);
        let options = options(args, &job.mime_type, job.state_file.as_deref())
            .on_progress(move |event| watched.show(event));
        match send(
            args,
            target,
            &job,
            resume_from.is_some(),
            options,
            stop.clone(),
        )
        .await
        {
            Ok(upload) => break upload,
            // Once only: a new Upload is never resumed, so it cannot end here again.
            Err(Stopped::StartOver(why)) => {
                display.note(&format!("{}: {why}: starting a new Upload", job.label));
                if let Some(state_file) = &job.state_file {
                    let _ = std::fs::remove_file(state_file);
                }
                resume_from = None;
            }
            Err(Stopped::Failed(failure)) => {
                progress.abandon();
                return Err(failure);
            }
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
    drop(job.claim);
    Ok(upload)
}

/// Uploads (or resumes) with the chosen adapter; errors explained for a person.
async fn send(
    args: &PutArgs,
    target: &Target,
    job: &Job,
    resuming: bool,
    options: UploadOptions,
    stop: uploads_ureq::StopSignal,
) -> Result<Upload, Stopped> {
    let file = job.path.clone();
    let state_file = job.state_file.clone().unwrap_or_default();
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
        .map_err(|error| {
            Stopped::Failed(Failure::Transfer(format!(
                "the upload thread failed: {error}"
            )))
        })?;
        result.map_err(|error| upload_failure(&error, &base_url, args, job, resuming))
    } else {
        let client = uploads_hyper::Client::new(target.config.clone()).stop_signal(stop);
        let result = if resuming {
            client
                .resume_upload(state_file.as_path(), &file, options)
                .await
        } else {
            client.upload_file(&file, options).await
        };
        result.map_err(|error| upload_failure(&error, &base_url, args, job, resuming))
    }
}

/// What failed and what to do next: continue (the same command) only when that can help,
/// else start over, or (for the per-user state) start over at once when the kept Upload
/// cannot be continued.
fn upload_failure<E: std::error::Error + 'static>(
    error: &UploadError<E>,
    base_url: &str,
    args: &PutArgs,
    job: &Job,
    resuming: bool,
) -> Stopped {
    let kept_id = job
        .resume_from
        .as_ref()
        .map_or_else(String::new, |snapshot| snapshot.upload.id.to_string());
    if resuming && !job.explicit {
        let why = match error {
            UploadError::Resume(ResumeError::Expired { upload_id, .. }) => {
                Some(format!("Upload {upload_id} has expired"))
            }
            UploadError::Resume(ResumeError::NotPending { upload_id, status }) => {
                Some(format!("Upload {upload_id} is {status}"))
            }
            UploadError::Resume(other) => Some(format!(
                "the kept state of Upload {kept_id} cannot be continued ({other})"
            )),
            UploadError::SourceChanged { .. } => Some(format!(
                "{} changed since Upload {kept_id} was started (that one is left to expire)",
                job.label
            )),
            other => explain::upload_gone(other),
        };
        if let Some(why) = why {
            return Stopped::StartOver(why);
        }
    }
    let state = job
        .state_file
        .as_deref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    match error {
        UploadError::Resume(resume) => {
            return Stopped::Failed(Failure::Usage(explain::resume_refusal(resume, &state)));
        }
        UploadError::SourceChanged { .. } => {
            return Stopped::Failed(Failure::Usage(format!(
                "{} changed since {state} was written, so its stored parts no longer match: delete {state} (rm {state}) and run the command again to upload it from the start",
                job.label
            )));
        }
        UploadError::Interrupted => {
            return Stopped::Failed(Failure::Transfer(
                "interrupted before its Upload was created; nothing to resume or cancel".to_owned(),
            ));
        }
        UploadError::Aborted {
            upload_id,
            cancelled,
            cause,
        } if matches!(cause.as_ref(), AbortCause::Interrupted) => {
            let message = if *cancelled {
                format!("interrupted; Upload {upload_id} is cancelled")
            } else {
                format!(
                    "interrupted; Upload {upload_id} is kept until it expires (an hour after it was created at OpenAI); continue with: {}; drop it with: {}",
                    same_command(),
                    cancel_command(args, upload_id)
                )
            };
            return Stopped::Failed(Failure::Transfer(message));
        }
        _ => {}
    }
    let (message, can_continue) = explain::upload(error, base_url);
    let UploadError::Aborted {
        upload_id,
        cancelled: false,
        ..
    } = error
    else {
        return Stopped::Failed(Failure::Transfer(message));
    };
    let failure = if can_continue {
        format!(
            "{message}; continue with: {}; drop it with: {}",
            same_command(),
            cancel_command(args, upload_id)
        )
    } else if job.explicit {
        format!(
            "{message}; running the same command again would fail the same way: delete {state} (rm {state}) and run the command again to start a new Upload"
        )
    } else {
        format!(
            "{message}; running the same command again would fail the same way: drop it with: {} (the same command then starts a new Upload)",
            cancel_command(args, upload_id)
        )
    };
    Stopped::Failed(Failure::Transfer(failure))
}

/// The command that continues the upload: the one that was run.
fn same_command() -> String {
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

/// The command that cancels `upload_id` where this one sent it.
fn cancel_command(args: &PutArgs, upload_id: &UploadId) -> String {
    let mut command = format!("uploads cancel {upload_id}");
    if let Some(base_url) = &args.target.base_url {
        let _ = write!(command, " --base-url {}", shell_quoted(base_url));
    }
    if args.target.local {
        let _ = write!(
            command,
            " --local --data-dir {}",
            shell_quoted(&args.target.data_dir.to_string_lossy())
        );
    }
    command
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
