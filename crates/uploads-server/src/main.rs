//! `uploads-server serve`: runs the server until SIGINT or SIGTERM. The `uploads` CLI exposes
//! the same command with the same flags.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uploads_server::{ApiKeySpec, Server, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "uploads-server",
    version,
    about = "An OpenAI-compatible Uploads + Files server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves /v1/uploads and /v1/files until SIGINT or SIGTERM.
    Serve {
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
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Command::Serve {
        listen,
        data_dir,
        api_keys,
    } = Cli::parse().command;
    let mut builder = Server::builder().listen(listen).data_dir(data_dir);
    for spec in api_keys {
        builder = builder.api_key(spec.key, spec.owner);
    }
    match builder.start().await {
        Ok(server) => {
            server.run_until(shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("uploads-server: cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}
