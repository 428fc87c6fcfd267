//! `uploads`: upload files in one line, run the server in one line.
//!
//! * `uploads put FILE... --purpose P [--local]`: one Upload per file, parts in parallel,
//!   md5, progress;
//! * `uploads serve`: the OpenAI-compatible server until SIGINT or SIGTERM;
//! * `uploads cancel UPLOAD_ID`, `uploads files list|get|download|delete`;
//! * `uploads completions SHELL`.
//!
//! Exit codes: 0 success, 1 API or transfer failure, 2 usage error, 130 interrupted, 141
//! stdout closed early (as a Unix tool killed by SIGPIPE). Errors are one line each on
//! stderr, all starting `uploads: error:`; stdout carries only the answer (JSON, a table, or
//! a File's bytes).

// Doc comments here are clap's help text, read as plain text in a terminal: no Markdown,
// and URLs as they are.
#![allow(clippy::doc_markdown, rustdoc::bare_urls)]

mod explain;
mod files;
mod output;
mod progress;
mod put;
mod serve;
mod size;
mod state;
mod target;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::files::FilesArgs;
use crate::put::PutArgs;
use crate::serve::ServeArgs;
use crate::target::TargetArgs;

/// The environment every client command reads, for the help texts.
const CLIENT_ENV: &str = "\
Environment:
  OPENAI_API_KEY     the API key (not needed with --local)
  OPENAI_BASE_URL    the API's base URL (default https://api.openai.com/v1)
  OPENAI_ORG_ID      sent as OpenAI-Organization
  OPENAI_PROJECT_ID  sent as OpenAI-Project
  RUST_LOG           log filter, e.g. RUST_LOG=debug";

/// The exit codes, for the help texts.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the API refused, or the transfer failed
  2    usage error (bad option, missing key, unreadable file)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (e.g. piped into head)";

#[derive(Parser)]
#[command(
    name = "uploads",
    version,
    about = "OpenAI multipart Uploads: put files, serve them",
    after_help = format!(
        "{TOP_EXAMPLES}\n\n{CLIENT_ENV}\n  UPLOADS_API_KEYS   keys `uploads serve` accepts\n\n{EXIT_CODES}"
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A client command's help epilogue: its examples (indented lines), the environment it reads
/// and the exit codes.
pub(crate) fn client_help(examples: &str) -> String {
    format!("Examples:\n{examples}\n\n{CLIENT_ENV}\n\n{EXIT_CODES}")
}

/// The top-level help's examples.
const TOP_EXAMPLES: &str = "\
Examples:
  uploads put train.jsonl --purpose fine-tune            upload to OpenAI (OPENAI_API_KEY)
  uploads put *.pdf --purpose assistants --local         store in ./uploads-data, no network
  uploads serve --listen 127.0.0.1:8000                  run the server
  OPENAI_BASE_URL=http://127.0.0.1:8000/v1 uploads files list
  uploads completions bash > /etc/bash_completion.d/uploads";

#[derive(Subcommand)]
enum Command {
    /// Uploads files, each as one Upload; prints one JSON line per completed Upload.
    Put(PutArgs),
    /// Serves /v1/uploads and /v1/files until SIGINT or SIGTERM, logging one line per request.
    Serve(ServeArgs),
    /// Cancels a pending Upload and prints it as JSON.
    #[command(after_help = client_help(
        "  uploads cancel upload_abc123\n  uploads cancel upload_abc123 --local"
    ))]
    Cancel {
        /// The Upload's id.
        upload_id: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Lists, shows, downloads and deletes Files.
    Files(FilesArgs),
    /// Prints a shell completion script.
    #[command(after_help = "\
Examples:
  uploads completions bash > ~/.local/share/bash-completion/completions/uploads
  uploads completions zsh > ~/.zfunc/_uploads
  uploads completions fish > ~/.config/fish/completions/uploads.fish
  uploads completions powershell >> $PROFILE")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The command line or the options are wrong (exit 2).
    Usage(String),
    /// The API refused, or the transfer failed (exit 1).
    Transfer(String),
    /// Several things failed and each was already said (exit 1).
    Reported,
    /// Ctrl-C (exit 130); what happened was already said.
    Interrupted,
    /// Stdout was closed by its reader (exit 141, silently, as SIGPIPE would).
    StdoutClosed,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    // `serve` logs a line per request; client commands only warnings, and none from an
    // embedded `--local` server, which is open on an ephemeral loopback port on purpose.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn,uploads_server=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Serve(args) if args.log_format == serve::LogFormat::Json => {
            logs.json().flatten_event(true).init();
        }
        _ => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let outcome = match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Put(args) => put::put(args).await,
        Command::Cancel { upload_id, target } => files::cancel(upload_id, &target).await,
        Command::Files(args) => files::files(args).await,
        Command::Completions { shell } => {
            let mut buffer = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "uploads", &mut buffer);
            output::write_stdout(&buffer)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            output::error(&message);
            ExitCode::from(2)
        }
        Err(Failure::Transfer(message)) => {
            output::error(&message);
            ExitCode::FAILURE
        }
        Err(Failure::Reported) => ExitCode::FAILURE,
        Err(Failure::Interrupted) => ExitCode::from(130),
        Err(Failure::StdoutClosed) => ExitCode::from(141),
    }
}

/// Prints clap's refusal of the command line with the one error prefix (help and version go
/// to stdout as usual).
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
    }
    let text = error.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    output::error(first);
    let _ = write!(std::io::stderr().lock(), "{rest}");
    ExitCode::from(2)
}

/// Reads the process environment (the seam tests replace).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
