//! The `uploads` binary in a pseudo-terminal, read as a person sees the screen (`vt100`):
//! the live progress line, the summary it leaves, `TERM=dumb`, the files table, and a
//! download that refuses to print binary on the screen.

mod support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};

use rustix::pty::OpenptFlags;
use support::{command, sample_file, stdout_json};

const ROWS: u16 = 30;

/// What a terminal showed while a command ran.
struct Screens {
    status: ExitStatus,
    /// The screen after each read, as text.
    seen: Vec<String>,
    /// The screen at the end, row by row.
    last: String,
    /// The screen at the end, a wrapped line joined into one.
    logical: String,
    /// stdout, when it was a pipe.
    stdout: Vec<u8>,
}

/// Runs the binary with stderr (and stdout too, unless `stdout_piped`) on a terminal of
/// `cols` columns.
fn in_terminal(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &std::path::Path,
    cols: u16,
    stdout_piped: bool,
) -> Screens {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let size = rustix::termios::Winsize {
        ws_row: ROWS,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, size).unwrap();
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap()
        .into();
    let mut command = command(args, env, cwd);
    command.stderr(Stdio::from(slave.try_clone().unwrap()));
    if stdout_piped {
        command.stdout(Stdio::piped());
    } else {
        command.stdout(Stdio::from(slave.try_clone().unwrap()));
    }
    let mut child = command.spawn().unwrap();
    // Only the child may hold the terminal, so reading ends when it exits.
    drop(command);
    drop(slave);
    let stdout = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).unwrap();
            bytes
        })
    });
    let mut parser = vt100::Parser::new(ROWS, cols, 0);
    let mut seen = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buffer = [0; 4096];
    // Reading ends with EIO once the child (the last holder of the terminal) exits.
    while let Ok(n) = master.read(&mut buffer) {
        if n == 0 {
            break;
        }
        parser.process(&buffer[..n]);
        let screen = rows(parser.screen(), cols);
        if seen.last() != Some(&screen) {
            seen.push(screen);
        }
    }
    let status = child.wait().unwrap();
    Screens {
        status,
        last: rows(parser.screen(), cols),
        logical: parser.screen().contents(),
        seen,
        stdout: stdout
            .map(|thread| thread.join().unwrap())
            .unwrap_or_default(),
    }
}

/// The screen row by row, as a person reads it (a row the terminal marks as wrapped is still
/// a row of its own on the glass).
fn rows(screen: &vt100::Screen, cols: u16) -> String {
    screen
        .rows(0, cols)
        .map(|row| row.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn put_shows_a_live_line_then_leaves_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "big.txt", 4 << 20);
    for cols in [120, 60] {
        let screens = in_terminal(
            &[
                "put",
                "big.txt",
                "--purpose",
                "assistants",
                "--part-size",
                "16KiB",
                "--concurrency",
                "1",
                "--local",
            ],
            &[("TERM", "xterm-256color")],
            dir.path(),
            cols,
            true,
        );
        assert!(screens.status.success(), "{}", screens.last);
        let file_id = stdout_json(&std::process::Output {
            status: screens.status,
            stdout: screens.stdout.clone(),
            stderr: Vec::new(),
        })["file"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let live = screens
            .seen
            .iter()
            .find(|screen| screen.contains("ETA") && screen.contains("parts "))
            .unwrap_or_else(|| panic!("no live line among {:#?}", screens.seen));
        let bar = live.lines().find(|line| line.contains("ETA")).unwrap();
        assert!(bar.starts_with("big.txt "), "{bar}");
        assert!(bar.contains("/4 MiB ") && bar.contains("/s ETA"), "{bar}");
        assert!(bar.chars().count() <= usize::from(cols), "{bar}");
        let text = screens.last.trim_end();
        assert!(!text.contains("ETA"), "the live line stays:\n{text}");
        let summary = screens.logical.trim_end().lines().last().unwrap();
        assert!(
            summary.starts_with("uploads: uploaded big.txt: 4 MiB in "),
            "{text}"
        );
        assert!(
            summary.ends_with(&format!("File {file_id} (md5 verified)")),
            "{text}"
        );
        if cols >= 120 {
            assert_eq!(
                summary,
                text.lines().last().unwrap(),
                "one row on a wide screen"
            );
        }
    }
}

#[test]
fn a_dumb_terminal_gets_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "big.txt", 1 << 20);
    let screens = in_terminal(
        &[
            "put",
            "big.txt",
            "--purpose",
            "assistants",
            "--part-size",
            "16KiB",
            "--local",
        ],
        &[("TERM", "dumb")],
        dir.path(),
        80,
        true,
    );
    assert!(screens.status.success(), "{}", screens.last);
    assert!(
        screens.seen.iter().all(|screen| !screen.contains("ETA")),
        "{:#?}",
        screens.seen
    );
    let text = screens.last.trim_end();
    assert!(
        text.starts_with("uploads: uploading big.txt: 1 MiB"),
        "{text}"
    );
    assert!(
        text.contains("uploads: uploaded big.txt: 1 MiB in "),
        "{text}"
    );
}

#[test]
fn files_list_is_a_table_and_download_will_not_print_binary_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "notes.txt", 100_000);
    let put = support::uploads(
        &["put", "notes.txt", "--purpose", "assistants", "--local"],
        &[],
        dir.path(),
    );
    let file_id = stdout_json(&put)["file"]["id"].as_str().unwrap().to_owned();

    let screens = in_terminal(
        &["files", "list", "--local"],
        &[("TERM", "xterm")],
        dir.path(),
        120,
        false,
    );
    assert!(screens.status.success(), "{}", screens.last);
    let mut lines = screens.last.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|cell| !cell.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "SIZE",
            "CREATED (UTC)",
            "FILENAME",
            "PURPOSE",
            "STATUS"
        ]
    );
    let row = lines.next().unwrap();
    for cell in [
        file_id.as_str(),
        "97.7 KiB",
        "notes.txt",
        "assistants",
        "processed",
    ] {
        assert!(row.contains(cell), "{row}");
    }

    let screens = in_terminal(
        &["files", "download", &file_id, "--local"],
        &[("TERM", "xterm")],
        dir.path(),
        120,
        false,
    );
    assert_eq!(screens.status.code(), Some(2), "{}", screens.last);
    let text = screens.last.trim_end();
    assert!(
        text.starts_with(
            "uploads: error: refusing to write a File's bytes to the terminal: use -o PATH"
        ),
        "{text}"
    );

    let screens = in_terminal(
        &["files", "download", &file_id, "-o", "copy.txt", "--local"],
        &[("TERM", "xterm")],
        dir.path(),
        120,
        false,
    );
    assert!(screens.status.success(), "{}", screens.last);
    let text = screens.last.trim_end();
    assert!(
        text.starts_with("uploads: downloaded copy.txt: 97.7 KiB in "),
        "{text}"
    );
    // The path is named once, before the size.
    assert!(text.ends_with(&format!(", File {file_id}")), "{text}");
    assert_eq!(text.matches("copy.txt").count(), 1, "{text}");
}

#[test]
fn a_resume_on_a_terminal_says_what_was_stored_already() {
    let dir = tempfile::tempdir().unwrap();
    sample_file(dir.path(), "big.txt", 16 << 20);
    let args = [
        "put",
        "big.txt",
        "--purpose",
        "assistants",
        "--part-size",
        "64KiB",
        "--concurrency",
        "1",
        "--resume",
        "big.state",
        "--local",
    ];
    let (interrupted, upload_id) =
        support::interrupt_once_a_part_is_stored(&args, dir.path(), &dir.path().join("big.state"));
    assert_eq!(interrupted.status.code(), Some(130));
    let screens = in_terminal(&args, &[("TERM", "xterm")], dir.path(), 120, true);
    assert!(screens.status.success(), "{}", screens.last);
    let text = screens.last.trim_end();
    assert!(
        text.contains(&format!("uploads: big.txt: resuming Upload {upload_id}: ")),
        "{text}"
    );
    assert!(text.contains(" of 256 parts stored"), "{text}");
    // The summary gives this run's bytes, not the whole file's at this run's rate.
    let summary = &text[text.rfind("uploads: uploaded big.txt: ").unwrap()..];
    assert!(summary.contains(" of 16 MiB this run ("), "{summary}");
    assert!(summary.contains(" already stored) in "), "{summary}");
}
