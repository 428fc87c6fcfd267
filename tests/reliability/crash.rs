//! Crash consistency: `uploads serve` as a child process, killed with `SIGKILL` at seeded random
//! moments while several clients upload and complete in parallel, restarted on the same data dir, and
//! checked after every restart against what the clients were told.
//!
//! Also the order of system calls of a durable write, observed with `strace`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use uploads_core::types::{FileObject, Upload};

use crate::child::{self, ChildServer, KEY};
use crate::support::{Client, Rng, md5_hex, temp_entries};

/// Restarts after a SIGKILL.
const KILLS: u64 = 8;
/// Clients uploading at once.
const CLIENTS: u64 = 4;
/// Uploads one client starts per round at most (the kill usually comes first).
const UPLOADS_PER_ROUND: u64 = 30;
/// Fixed seed: the same data, part counts and kill delays on every run.
const SEED: u64 = 0x5eed_c4a5_0001;

/// One upload as its client saw it.
#[derive(Debug, Clone)]
struct Tracked {
    upload_id: String,
    /// Unique per upload: how a listed File is traced back to its Upload.
    filename: String,
    parts: Vec<Vec<u8>>,
    /// The id of each part the server acknowledged (200), by index.
    acked: Vec<Option<String>>,
    /// A complete was sent (answered or not).
    complete_sent: bool,
    /// The answered complete: the File's id and the part ids listed.
    completed: Option<String>,
    /// Content and replay were checked after a restart.
    verified: bool,
}

impl Tracked {
    fn content(&self) -> Vec<u8> {
        self.parts.concat()
    }

    fn md5(&self) -> String {
        md5_hex(self.parts.iter().map(Vec::as_slice))
    }

    fn part_ids(&self) -> Option<Vec<String>> {
        self.acked.iter().cloned().collect()
    }
}

type Ledger = Arc<Mutex<Vec<Tracked>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let data_dir = tempfile::tempdir().unwrap();
    let ledger: Ledger = Arc::default();
    let mut rng = Rng::new(SEED);
    let mut stats = BTreeMap::<&str, u64>::new();
    for round in 0..=KILLS {
        let server = ChildServer::start(data_dir.path());
        // Recovery runs before the server listens: no temp file may remain.
        let temps = temp_entries(data_dir.path());
        assert!(
            temps.is_empty(),
            "round {round}: temp files remain: {temps:?}"
        );
        let client = Client::new(server.addr, Some(KEY));
        verify_and_finish(&client, &ledger, round, &mut stats).await;
        if round == KILLS {
            server.kill();
            break;
        }
        let mut workload = JoinSet::new();
        for number in 0..CLIENTS {
            workload.spawn(run_client(
                client.clone(),
                Arc::clone(&ledger),
                round,
                number,
                rng.next_u64(),
            ));
        }
        let delay = rng.below(20..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        while workload.join_next().await.is_some() {}
        *stats.entry("temp files a kill left behind").or_default() +=
            temp_entries(data_dir.path()).len() as u64;
    }
    println!("crash consistency over {KILLS} kills: {stats:?}");
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.iter().all(|tracked| tracked.completed.is_some()),
        "every upload ends completed"
    );
    assert!(
        ledger
            .iter()
            .any(|tracked| tracked.complete_sent && tracked.verified),
        "the workload completed nothing before a kill: the test checked nothing"
    );
}

/// One client: uploads of 1-4 parts (sent in parallel), each completed with its md5, until
/// the server dies or the round's quota is done.
async fn run_client(client: Client, ledger: Ledger, round: u64, number: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    for n in 0..UPLOADS_PER_ROUND {
        let parts: Vec<Vec<u8>> = (0..rng.below(1..5))
            .map(|_| {
                let len = rng.below(1..48 * 1024) as usize;
                rng.bytes(len)
            })
            .collect();
        let bytes = parts.iter().map(Vec::len).sum::<usize>() as u64;
        let filename = format!("crash-{round}-{number}-{n}.bin");
        let Ok(reply) = client.create_upload(&filename, bytes).await else {
            return;
        };
        let upload: Upload = reply.expect(200).json();
        let upload_id = upload.id.as_str().to_owned();
        let index = {
            let mut ledger = ledger.lock().unwrap();
            ledger.push(Tracked {
                upload_id: upload_id.clone(),
                filename,
                acked: vec![None; parts.len()],
                parts: parts.clone(),
                complete_sent: false,
                completed: None,
                verified: false,
            });
            ledger.len() - 1
        };
        let mut sends = JoinSet::new();
        for (part, data) in parts.into_iter().enumerate() {
            let (client, upload_id) = (client.clone(), upload_id.clone());
            sends.spawn(async move { (part, client.add_part(&upload_id, &data).await) });
        }
        let mut failed = false;
        while let Some(joined) = sends.join_next().await {
            match joined.unwrap() {
                (part, Ok(reply)) => {
                    let id: uploads_core::types::UploadPart = reply.expect(200).json();
                    ledger.lock().unwrap()[index].acked[part] = Some(id.id.as_str().to_owned());
                }
                (_, Err(_)) => failed = true,
            }
        }
        if failed {
            return;
        }
        let (part_ids, md5) = {
            let mut ledger = ledger.lock().unwrap();
            let tracked = &mut ledger[index];
            tracked.complete_sent = true;
            (tracked.part_ids().unwrap(), tracked.md5())
        };
        let Ok(reply) = client.complete(&upload_id, &part_ids, Some(&md5)).await else {
            return;
        };
        let done: Upload = reply.expect(200).json();
        ledger.lock().unwrap()[index].completed = Some(file_id(&done));
    }
}

fn file_id(upload: &Upload) -> String {
    let file = upload
        .file
        .as_ref()
        .expect("a completed upload carries its file");
    file.id.as_str().to_owned()
}

/// Checks the restarted server against the ledger, then finishes every unfinished upload so
/// the next round starts from a known state.
async fn verify_and_finish(
    client: &Client,
    ledger: &Ledger,
    round: u64,
    stats: &mut BTreeMap<&'static str, u64>,
) {
    let listed: HashMap<String, FileObject> = client
        .files()
        .await
        .into_iter()
        .map(|file| (file.filename.clone(), file))
        .collect();
    let snapshot = ledger.lock().unwrap().clone();
    // No File without its Upload completed, and no File twice.
    for (filename, file) in &listed {
        let tracked = snapshot
            .iter()
            .find(|tracked| &tracked.filename == filename)
            .unwrap_or_else(|| panic!("round {round}: unknown file {file:?}"));
        assert!(
            tracked.complete_sent,
            "round {round}: {filename} is a file but its upload was never completed"
        );
    }
    assert_eq!(
        client.files().await.len(),
        listed.len(),
        "round {round}: a filename is listed twice"
    );
    for (index, mut tracked) in snapshot.into_iter().enumerate() {
        let listed_file = listed.get(&tracked.filename);
        let file_id = match (&tracked.completed, listed_file) {
            (Some(acknowledged), Some(file)) => {
                assert_eq!(
                    file.id.as_str(),
                    acknowledged,
                    "round {round}: {} lists a different file",
                    tracked.filename
                );
                if tracked.verified {
                    continue;
                }
                *stats.entry("acknowledged completes checked").or_default() += 1;
                acknowledged.clone()
            }
            (Some(acknowledged), None) => panic!(
                "round {round}: the acknowledged complete of {} (file {acknowledged}) was lost",
                tracked.upload_id
            ),
            (None, Some(file)) => {
                // A complete that was cut off after it committed.
                *stats
                    .entry("unanswered completes that committed")
                    .or_default() += 1;
                file.id.as_str().to_owned()
            }
            (None, None) => {
                *stats.entry("pending uploads finished").or_default() += 1;
                tracked.complete_sent = true;
                finish_pending(client, &mut tracked, round).await
            }
        };
        check_file(client, &tracked, &file_id, round).await;
        tracked.completed = Some(file_id);
        tracked.verified = true;
        ledger.lock().unwrap()[index] = tracked;
    }
}

/// Sends the parts a crash kept from being acknowledged, then completes with every part:
/// the acknowledged ones must still hold exactly their bytes.
async fn finish_pending(client: &Client, tracked: &mut Tracked, round: u64) -> String {
    let acknowledged_before = tracked.acked.iter().flatten().count();
    for (data, acked) in tracked.parts.iter().zip(&mut tracked.acked) {
        if acked.is_none() {
            *acked = Some(client.new_part(&tracked.upload_id, data).await);
        }
    }
    let part_ids = tracked.part_ids().expect("every part acknowledged now");
    let reply = client
        .complete(&tracked.upload_id, &part_ids, Some(&tracked.md5()))
        .await
        .expect("complete after restart");
    assert_eq!(
        reply.status.as_u16(),
        200,
        "round {round}: pending upload {} ({} parts acknowledged) cannot complete: {}",
        tracked.upload_id,
        acknowledged_before,
        String::from_utf8_lossy(&reply.body)
    );
    file_id(&reply.json())
}

/// The File's bytes are the upload's parts in order, and a re-sent complete replays it.
async fn check_file(client: &Client, tracked: &Tracked, expected_file: &str, round: u64) {
    let content = client
        .content(expected_file)
        .await
        .expect("download")
        .expect(200)
        .body
        .clone();
    assert!(
        content == tracked.content(),
        "round {round}: {} holds {} bytes (md5 {}), its parts {} (md5 {})",
        tracked.filename,
        content.len(),
        md5_hex([&content[..]]),
        tracked.content().len(),
        tracked.md5()
    );
    let part_ids = tracked
        .part_ids()
        .unwrap_or_else(|| panic!("round {round}: completed with unacknowledged parts"));
    let replay = client
        .complete(&tracked.upload_id, &part_ids, Some(&tracked.md5()))
        .await
        .expect("replay");
    assert_eq!(
        file_id(&replay.expect(200).json()),
        expected_file,
        "round {round}: a re-sent complete of {} names another file",
        tracked.upload_id
    );
}

/// A system call of interest from an strace log, in the order it finished.
#[derive(Debug, Clone)]
struct Call {
    pid: u32,
    name: String,
    args: String,
    result: i64,
}

/// Parses `strace -f` lines (joining `<unfinished ...>` with `<... resumed>`).
fn parse_strace(log: &str) -> Vec<Call> {
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let full = if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, start.to_owned());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(start) = pending.remove(&pid) else {
                continue;
            };
            let Some((_, tail)) = rest.split_once("resumed>") else {
                continue;
            };
            format!("{start}{tail}")
        } else {
            rest.to_owned()
        };
        let Some(open) = full.find('(') else { continue };
        // `name(args)   = result`: strace pads the call to a column.
        let Some(equals) = full.rfind(" = ") else {
            continue;
        };
        let Some(args) = full[open + 1..equals].trim_end().strip_suffix(')') else {
            continue;
        };
        let name = full[..open].to_owned();
        let args = args.to_owned();
        let result = full[equals + 3..]
            .split_whitespace()
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or(-1);
        calls.push(Call {
            pid,
            name,
            args,
            result,
        });
    }
    calls
}

/// The quoted paths in a call's arguments.
fn quoted_paths(args: &str) -> Vec<String> {
    args.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Asserts the durable-write discipline for every rename onto a final name `is_target`
/// accepts: open(temp) -> write or writev(temp fd)+ -> fsync(temp fd) -> rename(temp, final)
/// -> open(dir) -> fsync(dir fd), in that order. The open, the writes and the fsync may be on
/// any thread (the server writes a Part's batches from whichever blocking thread is free), so
/// the file is followed by its fd from its open to its close; the rename and the directory's
/// fsync are one step on one thread.
/// Returns how many such renames were checked.
fn assert_durable_writes(calls: &[Call], is_target: impl Fn(&str) -> bool, what: &str) -> usize {
    let mut checked = 0;
    for (at, rename) in calls.iter().enumerate() {
        if !rename.name.starts_with("rename") || rename.result != 0 {
            continue;
        }
        let paths = quoted_paths(&rename.args);
        let [temp, target] = paths.as_slice() else {
            panic!("rename without two paths: {rename:?}");
        };
        if !is_target(target) {
            continue;
        }
        let opened = calls[..at]
            .iter()
            .rposition(|call| {
                call.name == "openat" && quoted_paths(&call.args).first() == Some(temp)
            })
            .unwrap_or_else(|| panic!("{what}: {temp} renamed but never opened"));
        let fd = calls[opened].result;
        let fd_prefix = format!("{fd},");
        let fd_only = fd.to_string();
        let uses_fd = |call: &Call| call.args == fd_only || call.args.starts_with(&fd_prefix);
        // From its open to its close the fd is this file's, whichever thread uses it.
        let closed = (opened + 1..at)
            .find(|&i| calls[i].name == "close" && calls[i].args == fd_only)
            .unwrap_or(at);
        let is_write =
            |call: &Call| matches!(call.name.as_str(), "write" | "writev") && uses_fd(call);
        let fsync = (opened + 1..closed)
            .rfind(|&i| {
                matches!(calls[i].name.as_str(), "fsync" | "fdatasync") && uses_fd(&calls[i])
            })
            .unwrap_or_else(|| panic!("{what}: {temp} renamed without an fsync of its fd {fd}"));
        let writes: Vec<usize> = (opened + 1..closed)
            .filter(|&i| is_write(&calls[i]))
            .collect();
        assert!(!writes.is_empty(), "{what}: nothing written to {temp}");
        assert!(
            writes.iter().all(|&write| write < fsync),
            "{what}: a write to {temp} after its fsync"
        );
        let after: Vec<&Call> = calls[at + 1..]
            .iter()
            .filter(|call| call.pid == rename.pid)
            .collect();
        let dir = Path::new(target)
            .parent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let dir_open = after
            .iter()
            .position(|call| {
                call.name == "openat" && quoted_paths(&call.args).first() == Some(&dir)
            })
            .unwrap_or_else(|| panic!("{what}: {dir} not opened after renaming into it"));
        let dir_fd = after[dir_open].result.to_string();
        after[dir_open..]
            .iter()
            .find(|call| call.name == "fsync" && call.args == dir_fd)
            .unwrap_or_else(|| panic!("{what}: {dir} not fsynced after renaming {target}"));
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_and_state_writes_are_fsynced_renamed_and_dir_fsynced_in_order() {
    if cfg!(not(target_os = "linux")) {
        println!("skipped: strace tracing is Linux-only");
        return;
    }
    let strace_works = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !strace_works {
        println!("skipped: `strace` is not on PATH (or ptrace is not permitted here)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let log_path = work.path().join("strace.log");
    let log_arg = log_path.to_str().unwrap().to_owned();
    let server = ChildServer::start_wrapped(
        &data_dir,
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,close,write,writev,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
            &log_arg,
        ],
    );
    let client = Client::new(server.addr, Some(KEY));
    let data = b"durable bytes, in order".to_vec();
    let upload = client.new_upload("strace.bin", data.len() as u64).await;
    let upload_id = upload.id.as_str().to_owned();
    let part = client.new_part(&upload_id, &data).await;
    client
        .complete(
            &upload_id,
            std::slice::from_ref(&part),
            Some(&md5_hex([&data[..]])),
        )
        .await
        .unwrap()
        .expect(200);
    // Stop the server (not strace) so strace sees it exit and flushes the log.
    let children = std::fs::read_to_string(format!(
        "/proc/{pid}/task/{pid}/children",
        pid = server.pid()
    ))
    .unwrap_or_default();
    let server_pid: u32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("strace has no child; its log:\n{}", server.log()));
    child::signal(server_pid, "TERM");
    server.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let calls = parse_strace(&log);
    let part_path = format!("/uploads/{upload_id}/parts/{part}");
    let parts = assert_durable_writes(&calls, |target| target.ends_with(&part_path), "part");
    assert_eq!(parts, 1, "the part is written once");
    let state_path = format!("/uploads/{upload_id}/state.json");
    let states = assert_durable_writes(&calls, |target| target.ends_with(&state_path), "state");
    // create and complete commit the Upload's state; a Part is one record in its log.
    assert!(states >= 2, "only {states} state.json writes seen");
    let log_path = format!("/uploads/{upload_id}/parts.log");
    let open = calls
        .iter()
        .position(|call| {
            call.name == "openat"
                && quoted_paths(&call.args)
                    .iter()
                    .any(|path| path.ends_with(&log_path))
        })
        .unwrap_or_else(|| panic!("{log_path} never opened"));
    let fd = calls[open].result.to_string();
    let write = open
        + calls[open..]
            .iter()
            .position(|call| call.name == "write" && call.args.starts_with(&format!("{fd}, ")))
            .unwrap_or_else(|| panic!("{log_path} never written"));
    assert!(
        calls[write..]
            .iter()
            .any(|call| call.name == "fdatasync" && call.args == fd),
        "the Part's record is not fdatasynced after it is written"
    );
}
