//! `uploads files ...` and `uploads cancel`: one request each, the answer as JSON on stdout
//! (or the File's bytes, for `download`).

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use uploads_core::types::{FileId, ListFilesQuery, Purpose, UploadId};

use crate::Failure;
use crate::target::Target;

/// `uploads files` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum FilesCommand {
    /// Lists Files, newest first.
    List {
        /// Only Files with this purpose.
        #[arg(long)]
        purpose: Option<String>,
    },
    /// Shows one File.
    Get {
        /// The File's id.
        file_id: String,
    },
    /// Writes a File's bytes to a path (or stdout).
    Download {
        /// The File's id.
        file_id: String,
        /// Where to write (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Deletes a File.
    Delete {
        /// The File's id.
        file_id: String,
    },
}

/// Runs a `files` subcommand.
pub async fn files(command: FilesCommand, target: &Target) -> Result<(), Failure> {
    let client = uploads_hyper::Client::new(target.config.clone());
    match command {
        FilesCommand::List { purpose } => {
            let query = ListFilesQuery {
                purpose: purpose.as_deref().map(Purpose::from_wire),
                ..ListFilesQuery::default()
            };
            print_json(&client.list_files(&query).await.map_err(api)?)
        }
        FilesCommand::Get { file_id } => print_json(
            &client
                .retrieve_file(&FileId::new(file_id))
                .await
                .map_err(api)?,
        ),
        FilesCommand::Delete { file_id } => print_json(
            &client
                .delete_file(&FileId::new(file_id))
                .await
                .map_err(api)?,
        ),
        FilesCommand::Download { file_id, output } => {
            let mut content = client
                .file_content(&FileId::new(file_id))
                .await
                .map_err(api)?;
            let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
                Some(path) => Box::new(tokio::fs::File::create(path).await.map_err(|error| {
                    Failure::Transfer(format!("cannot write {}: {error}", path.display()))
                })?),
                None => Box::new(tokio::io::stdout()),
            };
            while let Some(chunk) = content.next_chunk().await {
                let chunk = chunk.map_err(api)?;
                sink.write_all(&chunk)
                    .await
                    .map_err(|error| Failure::Transfer(format!("writing failed: {error}")))?;
            }
            sink.flush()
                .await
                .map_err(|error| Failure::Transfer(format!("writing failed: {error}")))
        }
    }
}

/// Runs `cancel`.
pub async fn cancel(upload_id: String, target: &Target) -> Result<(), Failure> {
    let client = uploads_hyper::Client::new(target.config.clone());
    print_json(
        &client
            .cancel_upload(&UploadId::new(upload_id))
            .await
            .map_err(api)?,
    )
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn api(error: uploads_hyper::Error) -> Failure {
    Failure::Transfer(uploads_core::upload::error_chain(&error))
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::Transfer(format!("cannot print the answer: {error}")))?;
    println!("{json}");
    Ok(())
}
