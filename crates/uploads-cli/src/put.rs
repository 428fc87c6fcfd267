//! `uploads put`: one file, one Upload, with the async adapter or (`--blocking`) the blocking
//! one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use uploads_core::digest::Md5Hasher;
use uploads_core::session::SessionSnapshot;
use uploads_core::types::{ExpiresAfter, Purpose, Upload};
use uploads_core::upload::UploadOptions;

use crate::Failure;
use crate::progress::Progress;
use crate::size::parse_size;
use crate::target::{LocalServer, Target};

/// The arguments of `put`.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// The File's purpose: assistants, batch, fine-tune, vision, user_data or evals.
    #[arg(long)]
    pub purpose: String,
    /// The MIME type (default: guessed from the file name's extension).
    #[arg(long)]
    pub mime_type: Option<String>,
    /// The File's name (default: the file's own name).
    #[arg(long)]
    pub filename: Option<String>,
    /// Bytes per part, e.g. 8MiB or 64MiB (default: sized to the file and the concurrency).
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Parts in flight at once.
    #[arg(long, default_value_t = uploads_core::upload::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Do not compute and send the md5.
    #[arg(long)]
    pub no_md5: bool,
    /// Seconds after which the resulting File expires (3600 to 2592000).
    #[arg(long)]
    pub expires_after: Option<u64>,
    /// Keep the upload's state in this file: an interrupted or failed upload is kept (not
    /// cancelled) and the same command continues it.
    #[arg(long, value_name = "STATE_FILE")]
    pub resume: Option<PathBuf>,
    /// Use the blocking (thread-based) client instead of the async one.
    #[arg(long)]
    pub blocking: bool,
}

/// Runs `put`; prints the completed Upload as JSON on stdout and nothing else there.
pub async fn put(args: PutArgs, target: &Target) -> Result<(), Failure> {
    let metadata = std::fs::metadata(&args.file)
        .map_err(|error| Failure::Usage(format!("cannot read {}: {error}", args.file.display())))?;
    let name = args
        .file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = Arc::new(Progress::for_stderr(metadata.len()));
    let options = options(&args, &progress);
    // Every check the service would make, before any request.
    options
        .prepare(&name, metadata.len())
        .map_err(|error| Failure::Usage(error.to_string()))?;
    let state_file = options.snapshot_path.clone().unwrap_or_default();
    let resuming = args.resume.as_deref().is_some_and(Path::exists);
    // Ctrl-C stops both clients alike: the async one when its future is dropped, the
    // blocking one by its stop signal, waited for so no thread outlives the runtime. Either
    // way the Upload and the state file are kept, and `interrupted` cancels unless --resume.
    let stop = uploads_ureq::StopSignal::new();
    let sending = send(&args, target, options, resuming, stop.clone());
    tokio::pin!(sending);
    let upload = tokio::select! {
        result = &mut sending => result,
        _ = tokio::signal::ctrl_c() => {
            if args.blocking {
                stop.stop();
                let _ = sending.await;
            }
            progress.finish();
            return Err(interrupted(&args, &state_file, target).await);
        }
    };
    progress.finish();
    let upload = upload?;
    if let Some(local) = &target.local {
        verify_local(local, target, &args.file, &upload).await?;
    }
    let json = serde_json::to_string_pretty(&upload)
        .map_err(|error| Failure::Transfer(format!("cannot print the Upload: {error}")))?;
    println!("{json}");
    Ok(())
}

fn options(args: &PutArgs, progress: &Arc<Progress>) -> UploadOptions {
    let mut options = UploadOptions::new(Purpose::from_wire(&args.purpose))
        .concurrency(args.concurrency)
        .md5(!args.no_md5)
        // With a state file the upload is kept for a resume; without one it is cancelled.
        .cancel_on_failure(args.resume.is_none());
    if let Some(mime_type) = &args.mime_type {
        options = options.mime_type(mime_type);
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
    // A state file always exists while uploading: it is how Ctrl-C finds the Upload to cancel.
    let state_file = args.resume.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("uploads-put-{}.json", std::process::id()))
    });
    let progress = Arc::clone(progress);
    options
        .snapshot_path(state_file)
        .on_progress(move |event| progress.show(event))
}

/// Uploads (or resumes) with the chosen adapter.
async fn send(
    args: &PutArgs,
    target: &Target,
    options: UploadOptions,
    resuming: bool,
    stop: uploads_ureq::StopSignal,
) -> Result<Upload, Failure> {
    let file = args.file.clone();
    let state_file = options.snapshot_path.clone().unwrap_or_default();
    if args.blocking {
        let client = uploads_ureq::Client::new(target.config.clone()).stop_signal(stop);
        let kept = args.resume.is_some();
        tokio::task::spawn_blocking(move || {
            let result = if resuming {
                client.resume_upload(state_file.as_path(), &file, options)
            } else {
                client.upload_file(&file, options)
            };
            result.map_err(|error| upload_failure(&error, kept))
        })
        .await
        .map_err(|error| Failure::Transfer(format!("the upload thread failed: {error}")))?
    } else {
        let client = uploads_hyper::Client::new(target.config.clone());
        let result = if resuming {
            client
                .resume_upload(state_file.as_path(), &file, options)
                .await
        } else {
            client.upload_file(&file, options).await
        };
        result.map_err(|error| upload_failure(&error, args.resume.is_some()))
    }
}

/// One line saying what failed (the error and its causes), and how to continue when the
/// Upload was kept.
fn upload_failure(error: &(dyn std::error::Error + 'static), kept: bool) -> Failure {
    let error = uploads_core::upload::error_chain(error);
    if kept {
        Failure::Transfer(format!("{error}; continue with: {}", resume_command()))
    } else {
        Failure::Transfer(error)
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

/// Ctrl-C: keep the Upload for `--resume`, else cancel it.
async fn interrupted(args: &PutArgs, state_file: &Path, target: &Target) -> Failure {
    if args.resume.is_some() {
        eprintln!(
            "uploads: interrupted; the Upload is kept until it expires. Continue with: {}",
            resume_command()
        );
        return Failure::Interrupted;
    }
    let snapshot = std::fs::read_to_string(state_file)
        .ok()
        .and_then(|json| SessionSnapshot::from_json(&json).ok());
    let Some(snapshot) = snapshot else {
        eprintln!(
            "uploads: interrupted before the Upload was recorded; if it was created, it expires within an hour"
        );
        return Failure::Interrupted;
    };
    let _ = std::fs::remove_file(state_file);
    let client = uploads_hyper::Client::new(target.config.clone());
    match client.cancel_upload(&snapshot.upload.id).await {
        Ok(upload) => eprintln!(
            "uploads: interrupted; Upload {} is {}",
            upload.id, upload.status
        ),
        Err(error) => eprintln!(
            "uploads: interrupted; cancelling Upload {} failed: {error}",
            snapshot.upload.id
        ),
    }
    Failure::Interrupted
}

/// `--local`: reads the stored File back, checks it has the local file's md5, and says where
/// it lives.
async fn verify_local(
    local: &LocalServer,
    target: &Target,
    path: &Path,
    upload: &Upload,
) -> Result<(), Failure> {
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
    eprintln!(
        "uploads: verified md5 {stored}; {}",
        local.describe_file(upload.id.as_str(), file.id.as_str())
    );
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
