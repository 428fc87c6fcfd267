//! `uploads`: the command line of the uploads workspace.
//!
//! `uploads serve` runs the OpenAI-compatible server until SIGINT or SIGTERM.

mod size;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uploads_core::limits::Limits;
use uploads_server::{ApiKeySpec, Server, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "uploads",
    version,
    about = "OpenAI multipart Uploads: put files, serve them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves /v1/uploads and /v1/files until SIGINT or SIGTERM, logging one line per request.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Directory holding every Upload, Part and File.
    #[arg(long, default_value = "uploads-data")]
    data_dir: PathBuf,
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut limits = Limits::default();
    if let Some(max) = args.max_part_bytes {
        limits.max_part_bytes = max;
    }
    if let Some(max) = args.max_upload_bytes {
        limits.max_upload_bytes = max;
    }
    let mut builder = Server::builder()
        .listen(args.listen)
        .data_dir(args.data_dir)
        .limits(limits);
    for spec in args.api_keys {
        builder = builder.api_key(spec.key, spec.owner);
    }
    match builder.start().await {
        Ok(server) => {
            server.run_until(shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("uploads: cannot start the server: {error}");
            ExitCode::FAILURE
        }
    }
}
