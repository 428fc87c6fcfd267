//! `uploads`: upload a file in one line, run the server in one line.
//!
//! * `uploads put FILE --purpose P [--local]`: one Upload, parts in parallel, md5, progress;
//! * `uploads serve`: the OpenAI-compatible server until SIGINT or SIGTERM;
//! * `uploads cancel UPLOAD_ID`, `uploads files list|get|download|delete`.
//!
//! Exit codes: 0 success, 1 API or transfer failure, 2 usage error, 130 interrupted. Errors
//! are one line on stderr; stdout carries only the answer (JSON, or a File's bytes).

// Doc comments here are clap's help text, read as plain text in a terminal: no Markdown,
// and URLs as they are.
#![allow(clippy::doc_markdown, rustdoc::bare_urls)]

mod files;
mod progress;
mod put;
mod size;
mod target;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uploads_core::limits::Limits;
use uploads_server::{ApiKeySpec, Server, shutdown_signal};

use crate::files::FilesCommand;
use crate::put::PutArgs;
use crate::target::TargetArgs;

#[derive(Parser)]
#[command(
    name = "uploads",
    version,
    about = "OpenAI multipart Uploads: put files, serve them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Uploads a file as one Upload and prints the completed Upload (with its File) as JSON.
    Put(PutArgs),
    /// Serves /v1/uploads and /v1/files until SIGINT or SIGTERM, logging one line per request.
    Serve(ServeArgs),
    /// Cancels an Upload.
    Cancel {
        /// The Upload's id.
        upload_id: String,
    },
    /// Lists, shows, downloads and deletes Files.
    #[command(subcommand)]
    Files(FilesCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// An accepted API key, as KEY or KEY=OWNER (repeatable; comma-separated in the
    /// environment). Without any, the server is open.
    #[arg(long = "api-key", env = "UPLOADS_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<ApiKeySpec>,
    /// Largest Part, e.g. 64MiB.
    #[arg(long, value_parser = size::parse_size)]
    max_part_bytes: Option<u64>,
    /// Largest Upload, e.g. 8GiB.
    #[arg(long, value_parser = size::parse_size)]
    max_upload_bytes: Option<u64>,
    /// Keep records in this PostgreSQL database (postgres://USER@HOST:PORT/DB) instead of
    /// the data directory, so that several instances serve one namespace; needs
    /// --object-store.
    #[arg(long, env = "UPLOADS_DATABASE_URL", requires = "object_store")]
    database_url: Option<String>,
    /// Keep bytes in this object store (s3://BUCKET/PREFIX, gs://..., az://...,
    /// file:///DIR), configured from the standard environment (AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP, ...); needs
    /// --database-url.
    #[arg(long, env = "UPLOADS_OBJECT_STORE", requires = "database_url")]
    object_store: Option<String>,
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The command line or the options are wrong (exit 2).
    Usage(String),
    /// The API refused, or the transfer failed (exit 1).
    Transfer(String),
    /// Ctrl-C (exit 130); what happened was already said.
    Interrupted,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs a line per request; client commands only warnings, and none from an
    // embedded `--local` server, which is open on an ephemeral loopback port on purpose.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn,uploads_server=error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args, cli.target.data_dir).await,
        Command::Put(args) => {
            remote(&cli.target, async |target| put::put(args, target).await).await
        }
        Command::Cancel { upload_id } => {
            remote(&cli.target, async |target| {
                files::cancel(upload_id, target).await
            })
            .await
        }
        Command::Files(command) => {
            remote(&cli.target, async |target| {
                files::files(command, target).await
            })
            .await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("uploads: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Transfer(message)) => {
            eprintln!("uploads: error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Interrupted) => ExitCode::from(130),
    }
}

/// Runs a command against its target; an embedded `--local` server is shut down gracefully
/// afterwards.
async fn remote(
    args: &TargetArgs,
    run: impl AsyncFnOnce(&target::Target) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let target = args.resolve(env).await?;
    let outcome = run(&target).await;
    if let Some(local) = target.local {
        local.server.shutdown().await;
    }
    outcome
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn serve(args: ServeArgs, data_dir: PathBuf) -> Result<(), Failure> {
    let mut limits = Limits::default();
    if let Some(max) = args.max_part_bytes {
        limits.max_part_bytes = max;
    }
    if let Some(max) = args.max_upload_bytes {
        limits.max_upload_bytes = max;
    }
    let mut builder = Server::builder()
        .listen(args.listen)
        .data_dir(data_dir)
        .limits(limits);
    for spec in args.api_keys {
        builder = builder.api_key(spec.key, spec.owner);
    }
    if let (Some(database_url), Some(object_store)) = (args.database_url, args.object_store) {
        builder = builder.shared(database_url, object_store, std::env::vars());
    }
    let server = builder
        .start()
        .await
        .map_err(|error| Failure::Transfer(format!("cannot start the server: {error}")))?;
    server.run_until(shutdown_signal()).await;
    Ok(())
}
