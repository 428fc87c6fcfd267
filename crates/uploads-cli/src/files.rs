//! `uploads files ...` and `uploads cancel`: one request each (a page walk for `list --all`),
//! the answer as JSON on stdout, a table for people, or the File's bytes for `download`.

use std::fmt::Write;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use uploads_core::types::{
    FileId, FileList, FileObject, ListFilesQuery, ListOrder, Purpose, UploadId,
};

use crate::progress::Transfer;
use crate::size::format_size;
use crate::target::{Target, TargetArgs};
use crate::{Failure, client_help, explain, output};

/// `uploads files`: the subcommand and where it goes.
#[derive(clap::Args)]
#[command(after_help = client_help(concat!(
    "  uploads files list                        a table on a terminal, JSON in a pipe\n",
    "  uploads files list --all --json | jq -r '.data[].id'\n",
    "  uploads files get file-abc123\n",
    "  uploads files download file-abc123 -o .   writes ./<the File's filename>\n",
    "  uploads files delete file-abc123 --local"
)))]
pub struct FilesArgs {
    #[command(subcommand)]
    command: FilesCommand,
    #[command(flatten)]
    target: TargetArgs,
}

/// `uploads files` subcommands.
#[derive(clap::Subcommand, Debug)]
enum FilesCommand {
    /// Lists Files, newest first: a table on a terminal, JSON otherwise.
    #[command(after_help = client_help(concat!(
        "  uploads files list --purpose fine-tune --limit 20\n",
        "  uploads files list --all --order asc --json > files.json"
    )))]
    List {
        /// Only Files with this purpose.
        #[arg(long)]
        purpose: Option<String>,
        /// Files per page (1 to 10000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
        /// Start after this File id (the `last_id` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Order by creation time.
        #[arg(long, value_parser = ["asc", "desc"])]
        order: Option<String>,
        /// Walk every page, not only the first.
        #[arg(long)]
        all: bool,
        /// Print JSON even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Shows one File as JSON.
    #[command(after_help = client_help(concat!(
        "  uploads files get file-abc123"
    )))]
    Get {
        /// The File's id.
        file_id: String,
    },
    /// Writes a File's bytes to a path, into a directory under the File's name, or to a
    /// pipe.
    #[command(after_help = client_help(concat!(
        "  uploads files download file-abc123 -o .            ./<the File's filename>\n",
        "  uploads files download file-abc123 -o out.jsonl --force\n",
        "  uploads files download file-abc123 | gzip > out.gz"
    )))]
    Download {
        /// The File's id.
        file_id: String,
        /// Where to write: a path, or a directory to write <the File's filename> into
        /// (default: stdout, when it is not a terminal).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Deletes a File.
    #[command(after_help = client_help(concat!(
        "  uploads files delete file-abc123"
    )))]
    Delete {
        /// The File's id.
        file_id: String,
    },
}

/// Runs a `files` subcommand.
pub async fn files(args: FilesArgs) -> Result<(), Failure> {
    if let FilesCommand::Download {
        output: None,
        file_id,
        ..
    } = &args.command
        && std::io::stdout().is_terminal()
    {
        return Err(Failure::Usage(format!(
            "refusing to write a File's bytes to the terminal: use -o PATH (or -o . for its own name), or redirect: uploads files download {file_id} > FILE"
        )));
    }
    if args.target.local_data_missing() {
        return nothing_stored(args.command, &args.target.data_dir);
    }
    let target = args.target.resolve(crate::env).await?;
    let outcome = run(args.command, &target).await;
    target.close().await;
    outcome
}

/// The answers of a `--local` data directory that does not exist, without creating it.
fn nothing_stored(command: FilesCommand, data_dir: &Path) -> Result<(), Failure> {
    let file_id = match command {
        FilesCommand::List { json, .. } => {
            return print_list(
                &FileList {
                    object: "list".to_owned(),
                    data: Vec::new(),
                    first_id: None,
                    last_id: None,
                    has_more: false,
                },
                json,
            );
        }
        FilesCommand::Get { file_id }
        | FilesCommand::Download { file_id, .. }
        | FilesCommand::Delete { file_id } => file_id,
    };
    Err(Failure::Transfer(format!(
        "No such File object: {file_id} (nothing is stored: {} does not exist)",
        data_dir.display()
    )))
}

async fn run(command: FilesCommand, target: &Target) -> Result<(), Failure> {
    let client = uploads_hyper::Client::new(target.config.clone());
    let base_url = &target.config.base_url;
    let api = |error: uploads_hyper::Error| Failure::Transfer(explain::request(&error, base_url));
    match command {
        FilesCommand::List {
            purpose,
            limit,
            after,
            order,
            all,
            json,
        } => {
            let mut query = ListFilesQuery {
                purpose: purpose.as_deref().map(Purpose::from_wire),
                limit,
                order: order.as_deref().map(ListOrder::from_wire),
                after: after.map(FileId::new),
            };
            let mut list = client.list_files(&query).await.map_err(api)?;
            while all && list.has_more {
                let Some(cursor) = list.last_id.clone() else {
                    break;
                };
                query.after = Some(cursor);
                let page = client.list_files(&query).await.map_err(api)?;
                list.data.extend(page.data);
                list.last_id = page.last_id;
                list.has_more = page.has_more;
            }
            print_list(&list, json)
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
        FilesCommand::Download {
            file_id,
            output,
            force,
        } => {
            let file_id = FileId::new(file_id);
            match output {
                None => {
                    let content = client.file_content(&file_id).await.map_err(api)?;
                    copy(content, &mut tokio::io::stdout(), None, base_url)
                        .await
                        .map_err(|failure| match failure {
                            Sink::Write(error) => output::stdout_failure(&error),
                            Sink::Other(failure) => failure,
                        })
                }
                Some(output) => {
                    let file = client.retrieve_file(&file_id).await.map_err(api)?;
                    let path = output_path(&output, &file);
                    if path.exists() && !force {
                        return Err(Failure::Usage(format!(
                            "{} exists: add --force to overwrite it, or choose another -o",
                            path.display()
                        )));
                    }
                    let content = client.file_content(&file_id).await.map_err(api)?;
                    download_to(content, &path, &file, base_url).await
                }
            }
        }
    }
}

/// Where `-o` puts a File: into a directory (one that exists, or a path ending in `/`) under
/// the File's own name made safe, else at the path itself.
fn output_path(output: &Path, file: &FileObject) -> PathBuf {
    let is_dir = output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/');
    if is_dir {
        output.join(safe_filename(&file.filename, file.id.as_str()))
    } else {
        output.to_owned()
    }
}

/// A File's name as a plain name in a directory: its last path component, without control
/// characters; `fallback` when nothing usable is left.
fn safe_filename(name: &str, fallback: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim().to_owned();
    if clean.is_empty() || clean == "." || clean == ".." {
        fallback.to_owned()
    } else {
        clean
    }
}

/// Downloads into a temporary file beside `path`, renamed over it once complete, so a failed
/// download never leaves a partial file under the final name.
async fn download_to(
    content: uploads_hyper::FileContent,
    path: &Path,
    file: &FileObject,
    base_url: &str,
) -> Result<(), Failure> {
    let partial = path.with_file_name(format!(
        ".{}.uploads-partial",
        path.file_name()
            .map(|name| name.to_string_lossy())
            .unwrap_or_default()
    ));
    let cannot_write = |error: std::io::Error| {
        Failure::Transfer(format!("cannot write {}: {error}", path.display()))
    };
    let mut sink = tokio::fs::File::create(&partial)
        .await
        .map_err(cannot_write)?;
    let label = path.display().to_string();
    let progress = Transfer::start("downloading", &label, file.bytes, 0);
    let copied = copy(content, &mut sink, Some(&progress), base_url).await;
    let copied = match copied {
        Ok(()) => sink.sync_all().await.map_err(cannot_write),
        Err(Sink::Write(error)) => Err(cannot_write(error)),
        Err(Sink::Other(failure)) => Err(failure),
    };
    drop(sink);
    if let Err(failure) = copied.and(
        tokio::fs::rename(&partial, path)
            .await
            .map_err(cannot_write),
    ) {
        progress.abandon();
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(failure);
    }
    progress.finish(&format!("File {}", file.id));
    Ok(())
}

/// Why a copy stopped: the sink refused a write, or the download failed.
enum Sink {
    Write(std::io::Error),
    Other(Failure),
}

async fn copy(
    mut content: uploads_hyper::FileContent,
    sink: &mut (impl tokio::io::AsyncWrite + Unpin),
    progress: Option<&Transfer>,
    base_url: &str,
) -> Result<(), Sink> {
    while let Some(chunk) = content.next_chunk().await {
        let chunk = chunk.map_err(|error| {
            Sink::Other(Failure::Transfer(format!(
                "downloading failed: {}",
                explain::request(&error, base_url)
            )))
        })?;
        sink.write_all(&chunk).await.map_err(Sink::Write)?;
        if let Some(progress) = progress {
            progress.advance(chunk.len() as u64);
        }
    }
    sink.flush().await.map_err(Sink::Write)
}

/// Runs `cancel`.
pub async fn cancel(upload_id: String, args: &TargetArgs) -> Result<(), Failure> {
    if args.local_data_missing() {
        return Err(Failure::Transfer(format!(
            "No such Upload object: {upload_id} (nothing is stored: {} does not exist)",
            args.data_dir.display()
        )));
    }
    let target = args.resolve(crate::env).await?;
    let client = uploads_hyper::Client::new(target.config.clone());
    let outcome = match client.cancel_upload(&UploadId::new(upload_id)).await {
        Ok(upload) => print_json(&upload),
        Err(error) => Err(Failure::Transfer(explain::request(
            &error,
            &target.config.base_url,
        ))),
    };
    target.close().await;
    outcome
}

/// A list as a table on a terminal, as JSON when asked or in a pipe.
fn print_list(list: &FileList, json: bool) -> Result<(), Failure> {
    if json || !std::io::stdout().is_terminal() {
        print_json(list)
    } else {
        output::write_stdout(table(list).as_bytes())
    }
}

/// The table people read: id, size, created, filename, purpose, status.
fn table(list: &FileList) -> String {
    if list.data.is_empty() {
        return "no Files\n".to_owned();
    }
    let rows: Vec<[String; 6]> = list
        .data
        .iter()
        .map(|file| {
            [
                file.id.to_string(),
                format_size(file.bytes),
                utc_minute(file.created_at),
                file.filename.clone(),
                file.purpose.to_string(),
                file.status
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "SIZE",
        "CREATED (UTC)",
        "FILENAME",
        "PURPOSE",
        "STATUS",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column == 1 {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if list.has_more {
        let _ = writeln!(
            text,
            "more: --after {} or --all",
            list.last_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
    }
    text
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
fn utc_minute(unix: u64) -> String {
    let days = unix / 86_400;
    let (hour, minute) = (unix % 86_400 / 3600, unix % 3600 / 60);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::Transfer(format!("cannot print the answer: {error}")))?;
    output::print_line(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_minutes() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_minute(1_795_854_059), "2026-11-28 08:20");
    }

    #[test]
    fn a_files_name_cannot_leave_the_directory() {
        assert_eq!(safe_filename("../../etc/passwd", "file-1"), "passwd");
        assert_eq!(safe_filename("a\\b\\c.txt", "file-1"), "c.txt");
        assert_eq!(safe_filename("..", "file-1"), "file-1");
        assert_eq!(safe_filename("bad\u{7}name\n", "file-1"), "badname");
        assert_eq!(safe_filename("", "file-1"), "file-1");
    }
}
