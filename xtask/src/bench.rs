//! `cargo xtask bench`: how fast and how lean an upload is, next to the official Python SDK
//! and next to the machine's limits, measured in one run and written to `docs/BENCHMARKS.md`
//! with a chart beside it.
//!
//! ```text
//! build `uploads` ─▶ for each profile (loopback, pinned, WAN slow, WAN fast):
//!   generate the file ─▶ start one `uploads serve` (fresh data dir; pinned: on core 0)
//!   ─▶ on a WAN profile, start the link emulator in front of it
//!   ─▶ for each round: for each subject:
//!        reset the server's peak RSS ─▶ run the subject (client under /usr/bin/time)
//!        ─▶ read the server's peak RSS and CPU, the emulator's CPU, the complete request's
//!           latency and the part count ─▶ delete the File
//!   ─▶ stop the server
//! ─▶ print the tables and the targets ─▶ write the report and the chart
//! ```
//!
//! Subjects (see [`Profile::subjects`]): `uploads put` with the async and the blocking
//! adapter at several parts in flight, with no tuning flags at all on the WAN profiles, the
//! official SDK's `upload_file_chunked` with the md5 computed beforehand (the peer), md5 of
//! the file in one thread (the serial bound with md5 on, and the CPU floor) and, on loopback,
//! a raw streaming HTTP POST (the transport bound). Rounds interleave the subjects, so a
//! burst of load from other processes spreads over all of them rather than one.
//!
//! Numbers are never asserted: the `--smoke` mode (tiny files, one round, debug build, every
//! profile) only proves that every subject runs and is measured.
//!
//! `--profile shared` (opt-in, not among the profiles above) runs the server on PostgreSQL
//! and S3-compatible storage instead and times its requests, written to a block of its own
//! in the report: see [`shared`].

mod bounds;
mod chart;
pub mod link;
mod progress;
pub mod report;
mod shared;
mod throttle;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{cargo, target_dir, workspace_root};

use uploads_core::http::Response;
use uploads_core::limits::{GIB, MIB};

use self::chart::Panel;
use self::link::Link;
use self::report::{Machine, Profile, Report, Row, Sample, Section, Subject};
use self::throttle::Throttle;

/// The API key the clients send; the bench server has none configured, so any key goes.
const BENCH_API_KEY: &str = "sk-bench";
/// What the bench tells the API the File is for: a purpose that takes any MIME type.
const PURPOSE: &str = "user_data";
const MIME_TYPE: &str = "application/octet-stream";
/// Measures a client's peak RSS: `/usr/bin/time -f %M` writes it, in KiB.
const TIME: &str = "/usr/bin/time";
/// How long the server may take to accept connections after it starts.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Pins the server and the client of the pinned profile to one core each.
const TASKSET: &str = "taskset";
/// The chart's file name, written beside the report.
const CHART: &str = "bench-throughput.svg";

/// The rate-limited profile answers 429 to every this-many-th part request ...
const THROTTLE_EVERY: u64 = 4;
/// ... during this long after the first part request of each run (shorter in a smoke run,
/// whose uploads take well under a second).
const THROTTLE_WINDOW: Duration = Duration::from_secs(10);
const SMOKE_THROTTLE_WINDOW: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: cargo xtask bench [--profile loopback|pinned|wan-slow|wan-fast|uplink|cloud|rate-limited|shared]... \
[--size 2GiB] [--quick] [--runs 3] [--part-size 64MiB] [--out docs/BENCHMARKS.md] [--no-peer] \
[--smoke]";

/// What one bench run measures and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    /// Where client and server meet, in report order.
    profiles: Vec<Profile>,
    /// Size of the generated file; `None`: each profile's own default.
    size: Option<u64>,
    /// The smaller default sizes.
    quick: bool,
    /// Rounds over every subject; each row reports the median.
    runs: usize,
    /// Part size for our clients and the peer; `None`: their defaults.
    part_size: Option<u64>,
    /// The report's path (relative to the workspace root unless absolute); `None`: the
    /// mode's default (see [`Options::out_path`]).
    out: Option<PathBuf>,
    /// Whether to run the official SDK (needs Python and the package index).
    peer: bool,
    /// The tiny mode that proves the bench works: debug build, tiny files, one round.
    smoke: bool,
}

impl Options {
    /// Parses the arguments after `bench`.
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut profiles = Vec::new();
        let mut size = None;
        let mut runs = None;
        let mut part_size = None;
        let mut out = None;
        let mut quick = false;
        let mut smoke = false;
        let mut peer = true;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--profile" => {
                    let key = value()?;
                    let profile = Profile::from_key(key)
                        .ok_or_else(|| format!("unknown profile {key:?}\n{USAGE}"))?;
                    if !profiles.contains(&profile) {
                        profiles.push(profile);
                    }
                }
                "--size" => size = Some(parse_size(value()?)?),
                "--part-size" => part_size = Some(parse_size(value()?)?),
                "--runs" => {
                    let text = value()?;
                    runs = Some(
                        text.parse::<usize>()
                            .ok()
                            .filter(|runs| *runs > 0)
                            .ok_or_else(|| {
                                format!("--runs takes a positive count, not {text:?}")
                            })?,
                    );
                }
                "--out" => out = Some(PathBuf::from(value()?)),
                "--quick" => quick = true,
                "--smoke" => smoke = true,
                "--no-peer" => peer = false,
                other => return Err(format!("unknown bench option {other:?}\n{USAGE}")),
            }
        }
        if profiles.is_empty() {
            profiles = Profile::DEFAULT.to_vec();
        }
        profiles.sort_by_key(|profile| Profile::ALL.iter().position(|p| p == profile));
        Ok(Self {
            profiles,
            size,
            quick,
            runs: runs.unwrap_or(if smoke { 1 } else { 3 }),
            part_size,
            out,
            peer,
            smoke,
        })
    }

    /// Where the report goes: `--out`, else `docs/BENCHMARKS.md`, or for a smoke run
    /// `bench/BENCHMARKS-smoke.md` in cargo's target folder (wherever that is).
    fn out_path(&self) -> Result<PathBuf, String> {
        Ok(match &self.out {
            Some(out) => workspace_root().join(out),
            None if self.smoke => target_dir()?.join("bench").join("BENCHMARKS-smoke.md"),
            None => workspace_root().join("docs/BENCHMARKS.md"),
        })
    }

    /// The file size a profile uses.
    fn size_for(&self, profile: Profile) -> u64 {
        self.size
            .unwrap_or_else(|| profile.default_size(self.quick, self.smoke))
    }
}

/// Runs `cargo xtask bench` with the arguments after `bench`.
pub fn run(args: &[String]) -> Result<(), String> {
    if args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "--help"))
    {
        eprintln!("{USAGE}");
        return Ok(());
    }
    let options = Options::parse(args)?;
    let command_line = format!("cargo xtask bench {}", args.join(" "))
        .trim_end()
        .to_owned();
    // The bounds are measured in this process: a debug build would hash several times
    // slower than `uploads` does, so a real run re-runs itself optimised.
    if cfg!(debug_assertions) && !options.smoke {
        let mut rerun = vec![
            "run",
            "--release",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
        ];
        rerun.extend(args.iter().map(String::as_str));
        return run_command(cargo().args(&rerun).current_dir(workspace_root()));
    }
    let out = options.out_path()?;
    if options
        .profiles
        .iter()
        .any(|profile| *profile != Profile::Shared)
    {
        let report = measure(&options, &command_line, &out)?;
        print!("{}", report.to_text());
        report::write_markdown(&out, &report.to_markdown())
            .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
        eprintln!("xtask: bench: wrote {}", out.display());
    }
    // The shared profile writes a block of its own, so a run of either kind leaves the
    // other's numbers in the report.
    if options.profiles.contains(&Profile::Shared) {
        let block = shared::measure(&options, &command_line)?.to_markdown();
        print!("{block}");
        report::write_block(&out, shared::MARKERS, &block)
            .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
        eprintln!(
            "xtask: bench: wrote the shared profile's block of {}",
            out.display()
        );
    }
    Ok(())
}

/// Everything from building to the finished report (and the chart beside `out`).
fn measure(options: &Options, command_line: &str, out: &Path) -> Result<Report, String> {
    let root = workspace_root();
    let target_dir = target_dir()?;
    let bench_dir = target_dir.join("bench");
    std::fs::create_dir_all(&bench_dir)
        .map_err(|error| format!("cannot create {}: {error}", bench_dir.display()))?;
    if !Path::new(TIME).exists() {
        return Err(format!(
            "{TIME} is needed to measure the clients' peak RSS (apt-get install time)"
        ));
    }
    let uploads = build_uploads(&root, &target_dir, options.smoke)?;

    let mut notes = Vec::new();
    let peer = if options.peer {
        // The conformance suite's venv: one pinned official SDK for both.
        match crate::conformance::ensure_venv(&workspace_root()) {
            Ok(python) => Some(Subject::Peer { python }),
            Err(reason) => {
                eprintln!("xtask: bench: skipping the official SDK: {reason}");
                notes.push(format!("The official SDK's rows are missing: {reason}."));
                None
            }
        }
    } else {
        notes.push(
            "The official SDK's rows are missing: the run was asked for `--no-peer`.".to_owned(),
        );
        None
    };

    let machine_before = Machine::observe();
    let mut sections = Vec::new();
    for &profile in options.profiles.iter().filter(|p| **p != Profile::Shared) {
        let size = options.size_for(profile);
        let file = bench_dir.join(format!("bench-{}.bin", report::size_label(size)));
        check_free_space(&bench_dir, &file, size)?;
        generate_file(&file, size)
            .map_err(|error| format!("cannot generate {}: {error}", file.display()))?;
        let mut subjects = profile.subjects(options.smoke);
        subjects.extend(peer.clone());
        // Logs and the server's data live in a directory of this run's own, so that two
        // runs (a smoke test beside a real run) never share a server's data.
        let work_dir = bench_dir.join(format!("run-{}-{}", std::process::id(), profile.key()));
        std::fs::create_dir_all(&work_dir)
            .map_err(|error| format!("cannot create {}: {error}", work_dir.display()))?;
        eprintln!(
            "xtask: bench: {}: {}",
            profile.title(),
            report::bytes_label(size)
        );
        let rows = run_rounds(options, profile, subjects, &uploads, &file, &work_dir);
        // The stored copies go in any case; the logs stay when something failed.
        let _ = std::fs::remove_dir_all(work_dir.join("data"));
        let rows =
            rows.map_err(|error| format!("{error}\n(logs are in {})", work_dir.display()))?;
        let _ = std::fs::remove_dir_all(&work_dir);
        sections.push(Section {
            profile,
            size,
            rows,
        });
    }

    let chart = chart::svg(&panels(&sections));
    let chart_path = out.with_file_name(CHART);
    if let Some(parent) = chart_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    std::fs::write(&chart_path, chart)
        .map_err(|error| format!("cannot write {}: {error}", chart_path.display()))?;
    Ok(Report {
        command_line: command_line.to_owned(),
        runs: options.runs,
        smoke: options.smoke,
        sections,
        machine_before,
        machine_after: Machine::observe(),
        notes,
        chart: Some(CHART.to_owned()),
    })
}

/// The chart's panels: each profile's rates by parts in flight.
fn panels(sections: &[Section]) -> Vec<Panel> {
    sections
        .iter()
        .map(|section| Panel {
            title: section.profile.title(),
            profile: section.profile,
            async_rates: section.sweep(false),
            blocking_rates: section.sweep(true),
            sdk: section.peer(),
        })
        .collect()
}

/// Starts the server (and the link), and measures every subject once per round.
fn run_rounds(
    options: &Options,
    profile: Profile,
    subjects: Vec<Subject>,
    uploads: &Path,
    file: &Path,
    work_dir: &Path,
) -> Result<Vec<Row>, String> {
    let pinned = profile == Profile::Pinned;
    let server = Server::start(
        uploads,
        &work_dir.join("data"),
        &work_dir.join("server.log"),
        pinned.then_some("0"),
    )?;
    let throttle = if profile == Profile::RateLimited {
        let window = if options.smoke {
            SMOKE_THROTTLE_WINDOW
        } else {
            THROTTLE_WINDOW
        };
        Some(
            Throttle::start(server.addr, THROTTLE_EVERY, window)
                .map_err(|error| format!("cannot start the 429 proxy: {error}"))?,
        )
    } else {
        None
    };
    let upstream = throttle.as_ref().map_or(server.addr, Throttle::addr);
    let link = match profile.link() {
        Some(link) => Some(
            Link::start(upstream, link)
                .map_err(|error| format!("cannot start the link emulator: {error}"))?,
        ),
        None => None,
    };
    let base_url = link.as_ref().map_or_else(
        || server.base_url(),
        |link| format!("http://{}/v1", link.addr()),
    );
    let bench = Bench {
        uploads,
        file,
        size: options.size_for(profile),
        part_size: options.part_size,
        server: &server,
        base_url,
        client_core: pinned.then_some("1"),
        work_dir,
        link: link.as_ref(),
        throttle: throttle.as_ref(),
        progress_json: profile.sweeps() && accepts_progress_json(uploads),
    };
    let mut rows: Vec<Row> = subjects.into_iter().map(Row::new).collect();
    for round in 1..=options.runs {
        for row in &mut rows {
            let sample = bench.sample(&row.subject)?;
            eprintln!(
                "xtask: bench: {}: round {round}/{}: {}: {}",
                profile.key(),
                options.runs,
                row.subject.label(),
                sample.describe(bench.size)
            );
            row.samples.push(sample);
        }
    }
    drop(link);
    drop(throttle);
    server.stop();
    Ok(rows)
}

/// Whether this `uploads` takes `put --progress json` (the flag is newer than the bench): clap
/// refuses an unknown flag before it prints the help.
fn accepts_progress_json(uploads: &Path) -> bool {
    Command::new(uploads)
        .args(["put", "--progress", "json", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Builds `uploads` (release, or debug for `--smoke`) and returns the binary's path.
fn build_uploads(root: &Path, target_dir: &Path, smoke: bool) -> Result<PathBuf, String> {
    let args: &[&str] = if smoke {
        // The features `cargo test --workspace` builds with (dev-dependencies included), so
        // that the smoke test inside it finds everything built and compiles nothing.
        &["build", "--quiet", "--workspace", "--all-targets"]
    } else {
        &[
            "build",
            "--quiet",
            "--release",
            "--package",
            "uploads-cli",
            "--bin",
            "uploads",
        ]
    };
    run_command(cargo().args(args).current_dir(root))?;
    let profile = if smoke { "debug" } else { "release" };
    Ok(target_dir.join(profile).join("uploads"))
}

/// Refuses to start without room for the file, one stored copy of it and some slack.
fn check_free_space(dir: &Path, file: &Path, size: u64) -> Result<(), String> {
    let output = Command::new("df")
        .args(["-Pk"])
        .arg(dir)
        .output()
        .map_err(|error| format!("cannot run df: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let available_kib = parse_df_available_kib(&text)
        .ok_or_else(|| format!("cannot read df's answer for {}: {text:?}", dir.display()))?;
    let existing = std::fs::metadata(file).map_or(0, |metadata| metadata.len());
    let needed = (3 * size).saturating_sub(existing);
    let available = available_kib * 1024;
    if available < needed {
        return Err(format!(
            "not enough free disk space in {}: the bench needs about {} (3 x the file size, \
             less the file if already generated) and {} is free; use a smaller --size",
            dir.display(),
            report::bytes_label(needed),
            report::bytes_label(available),
        ));
    }
    Ok(())
}

/// The "Available" column of `df -Pk` for one path, in KiB.
fn parse_df_available_kib(df: &str) -> Option<u64> {
    df.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// Writes `size` bytes of deterministic, incompressible noise to `path`, unless a file of
/// that size is already there (it was made by an earlier run: the content never changes).
fn generate_file(path: &Path, size: u64) -> io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|metadata| metadata.len() == size) {
        return Ok(());
    }
    eprintln!(
        "xtask: bench: generating {} ({})",
        path.display(),
        report::bytes_label(size)
    );
    // Written aside and renamed, so a run beside this one never reads a half-made file.
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let mut writer = BufWriter::with_capacity(MIB as usize, File::create(&partial)?);
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut chunk = vec![0; MIB as usize];
    let mut left = size;
    while left > 0 {
        let len = left.min(MIB) as usize;
        noise.fill(&mut chunk[..len]);
        writer.write_all(&chunk[..len])?;
        left -= len as u64;
    }
    writer
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&partial, path)
}

/// xorshift64*: fast, deterministic bytes that neither compress nor repeat within a part.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buffer: &mut [u8]) {
        for word in buffer.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bytes = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
}

/// What every sample needs.
struct Bench<'a> {
    uploads: &'a Path,
    file: &'a Path,
    /// The file's size.
    size: u64,
    part_size: Option<u64>,
    server: &'a Server,
    /// Where clients send requests: the server, or the link emulator in front of it.
    base_url: String,
    /// The core the client is pinned to, on the pinned profile.
    client_core: Option<&'static str>,
    work_dir: &'a Path,
    /// The link emulator, on a WAN profile: what it delivered gives the progress gap.
    link: Option<&'a Link>,
    /// The 429 proxy, on the rate-limited profile; a client that gives up there is a result.
    throttle: Option<&'a Throttle>,
    /// Whether to run `uploads put --progress json` and measure the progress gap.
    progress_json: bool,
}

impl Bench<'_> {
    /// Measures one run of `subject`.
    fn sample(&self, subject: &Subject) -> Result<Sample, String> {
        match subject {
            Subject::Md5Bound => {
                let cpu_before = link::own_cpu_time();
                let hashed = bounds::md5_of_file(self.file)
                    .map_err(|error| format!("md5 bound: {error}"))?;
                let cpu = report::cpu_between(cpu_before, link::own_cpu_time());
                eprintln!("xtask: bench: the file's md5 is {}", hashed.md5_hex);
                Ok(Sample::of_bound(hashed.elapsed, cpu))
            }
            Subject::TransportBound => {
                let elapsed = bounds::post_over_loopback(self.file)
                    .map_err(|error| format!("transport bound: {error}"))?;
                Ok(Sample::of_bound(elapsed, None))
            }
            Subject::Ours {
                blocking,
                concurrency,
                md5,
            } => self.ours(subject, *blocking, *concurrency, *md5),
            Subject::Peer { python } => {
                let mut command = Command::new(python);
                command
                    .arg(workspace_root().join("tests/bench/peer.py"))
                    .arg("--file")
                    .arg(self.file)
                    .args(["--base-url", &self.base_url])
                    .args(["--purpose", PURPOSE, "--mime-type", MIME_TYPE]);
                if let Some(part_size) = self.part_size {
                    command.args(["--part-size", &part_size.to_string()]);
                }
                let mut finished = self.timed_client(&command, &subject.label())?;
                if let Some(failure) = finished.failure.take() {
                    return Err(failure);
                }
                let answer = PeerAnswer::parse(&finished.stdout)
                    .ok_or_else(|| format!("peer: unexpected answer {:?}", finished.stdout))?;
                // The peer times the md5 and the upload itself: interpreter start-up and
                // `import openai` are not the SDK's transfer, and leaving them out favours it.
                finished.elapsed = answer.elapsed;
                self.finish_upload(&finished, &answer.upload_id, Some(&answer.file_id), subject)
            }
        }
    }

    /// Measures one run of `uploads put`.
    fn ours(
        &self,
        subject: &Subject,
        blocking: bool,
        concurrency: Option<usize>,
        md5: bool,
    ) -> Result<Sample, String> {
        let mut command = Command::new(self.uploads);
        // What `put` keeps for a re-run stays beside the bench's file, not in the user's
        // own state directory.
        let state_home = self.file.with_extension("state");
        command
            .env("XDG_STATE_HOME", state_home)
            .arg("put")
            .arg(self.file)
            .args(["--purpose", PURPOSE, "--mime-type", MIME_TYPE])
            .args(["--base-url", &self.base_url]);
        if let Some(concurrency) = concurrency {
            command.args(["--concurrency", &concurrency.to_string()]);
        }
        if let Some(part_size) = self.part_size {
            command.args(["--part-size", &part_size.to_string()]);
        }
        if blocking {
            command.arg("--blocking");
        }
        if !md5 {
            command.arg("--no-md5");
        }
        if self.progress_json {
            command.args(["--progress", "json"]);
        }
        if let Some(link) = self.link {
            link.deliveries().reset();
        }
        let throttled_before = self.throttle.map(|throttle| {
            throttle.restart();
            throttle.sent()
        });
        let finished = self.timed_client(&command, &subject.label())?;
        let throttled = self
            .throttle
            .zip(throttled_before)
            .map(|(throttle, before)| throttle.sent() - before);
        let progress_gap = self.progress_gap();
        if let Some(failure) = finished.failure {
            if self.throttle.is_none() {
                return Err(failure);
            }
            // Giving up under 429s is what the rate-limited profile measures.
            eprintln!("xtask: bench: {failure}");
            return Ok(Sample {
                elapsed: finished.elapsed,
                client_rss_kib: Some(finished.client_rss_kib),
                gave_up: true,
                throttled,
                ..Sample::default()
            });
        }
        let upload =
            uploads_core::api::parse_complete_upload(&Response::new(finished.stdout.as_bytes()))
                .map_err(|error| {
                    format!(
                        "{}: stdout is not a completed Upload ({error})",
                        subject.label()
                    )
                })?;
        let file_id = upload.file.as_ref().map(|file| file.id.as_str().to_owned());
        let sample =
            self.finish_upload(&finished, upload.id.as_str(), file_id.as_deref(), subject)?;
        Ok(Sample {
            throttled,
            progress_gap,
            ..sample
        })
    }

    /// The largest progress gap of the client run that just ended: its progress lines (in
    /// its log) against what the emulator delivered.
    fn progress_gap(&self) -> Option<u64> {
        let link = self.link.filter(|_| self.progress_json)?;
        let stderr = std::fs::read_to_string(self.work_dir.join("client.log")).ok()?;
        progress::largest_gap(&progress::parse_log(&stderr), &link.deliveries().timeline())
    }

    /// Runs a client under `/usr/bin/time` with the server's peak RSS reset first, and
    /// measures the CPU the server and the link emulator spent meanwhile. A client that
    /// fails is reported in [`Finished::failure`].
    fn timed_client(&self, command: &Command, label: &str) -> Result<Finished, String> {
        self.server.reset_peak_rss()?;
        let usage_file = self.work_dir.join("client-usage.txt");
        let log = self.work_dir.join("client.log");
        let log_file = File::create(&log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut timed = match self.client_core {
            Some(core) => {
                let mut pinned = Command::new(TASKSET);
                pinned.args(["-c", core, TIME]);
                pinned
            }
            None => Command::new(TIME),
        };
        timed
            .args(["-f", "%M %U %S", "-o"])
            .arg(&usage_file)
            .arg(program)
            .args(args)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_ORG_ID")
            .env_remove("OPENAI_PROJECT_ID")
            .env_remove("RUST_LOG")
            .env("OPENAI_API_KEY", BENCH_API_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let server_cpu_before = self.server.cpu_time();
        let link_cpu_before = link::own_cpu_time();
        let started = Instant::now();
        let output = timed
            .output()
            .map_err(|error| format!("{label}: cannot start {TIME}: {error}"))?;
        let elapsed = started.elapsed();
        let link_cpu = report::cpu_between(link_cpu_before, link::own_cpu_time());
        let server_cpu = report::cpu_between(server_cpu_before, self.server.cpu_time());
        let failure = (!output.status.success()).then(|| {
            format!(
                "{label} failed ({}); its stderr ends with:\n{}",
                output.status,
                tail(&log, 20)
            )
        });
        let usage = std::fs::read_to_string(&usage_file).unwrap_or_default();
        let (client_rss_kib, client_cpu) = parse_time_usage(&usage).ok_or_else(|| {
            format!(
                "{label}: {TIME} left no usage in {}: {usage:?}",
                usage_file.display()
            )
        })?;
        Ok(Finished {
            elapsed,
            client_rss_kib,
            client_cpu,
            server_cpu,
            link_cpu,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            failure,
        })
    }

    /// Reads what the server saw of a finished upload, then deletes its File so the disk
    /// holds at most one stored copy at a time.
    fn finish_upload(
        &self,
        finished: &Finished,
        upload_id: &str,
        file_id: Option<&str>,
        subject: &Subject,
    ) -> Result<Sample, String> {
        let server_rss_kib = self.server.peak_rss_kib()?;
        let server_log = std::fs::read_to_string(&self.server.log).unwrap_or_default();
        let file_id = file_id
            .ok_or_else(|| format!("{}: the completed Upload carries no File", subject.label()))?;
        let deleted = Command::new(self.uploads)
            .args(["files", "delete", file_id, "--base-url"])
            .arg(self.server.base_url())
            .env("OPENAI_API_KEY", BENCH_API_KEY)
            .stdout(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run `uploads files delete`: {error}"))?;
        if !deleted.status.success() {
            return Err(format!(
                "deleting File {file_id} failed: {}",
                String::from_utf8_lossy(&deleted.stderr).trim()
            ));
        }
        if finished.elapsed.is_zero() {
            return Err(format!("{}: no time elapsed", subject.label()));
        }
        Ok(Sample {
            elapsed: finished.elapsed,
            client_rss_kib: Some(finished.client_rss_kib),
            server_rss_kib: Some(server_rss_kib),
            complete_ms: report::complete_elapsed_ms(&server_log, upload_id),
            client_cpu: Some(finished.client_cpu),
            server_cpu: finished.server_cpu,
            link_cpu: finished
                .link_cpu
                .filter(|_| self.base_url != self.server.base_url()),
            parts: report::part_count(&server_log, upload_id),
            ..Sample::default()
        })
    }
}

/// `/usr/bin/time -f "%M %U %S"`'s last line: peak RSS in KiB, user and system seconds.
fn parse_time_usage(text: &str) -> Option<(u64, Duration)> {
    let mut fields = text.trim().lines().last()?.split_whitespace();
    let rss = fields.next()?.parse().ok()?;
    let mut cpu = Duration::ZERO;
    for _ in 0..2 {
        cpu += Duration::try_from_secs_f64(fields.next()?.parse().ok()?).ok()?;
    }
    Some((rss, cpu))
}

/// A client process that exited successfully.
struct Finished {
    elapsed: Duration,
    client_rss_kib: u64,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    link_cpu: Option<Duration>,
    stdout: String,
    /// Why the client failed, when it did.
    failure: Option<String>,
}

/// The peer's one line on stdout: `upload_id=… file_id=… seconds=…`.
#[derive(Debug, PartialEq)]
struct PeerAnswer {
    upload_id: String,
    file_id: String,
    elapsed: Duration,
}

impl PeerAnswer {
    fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().rev().find(|line| !line.trim().is_empty())?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let seconds: f64 = field("seconds")?.parse().ok()?;
        Some(Self {
            upload_id: field("upload_id")?.to_owned(),
            file_id: field("file_id")?.to_owned(),
            elapsed: Duration::try_from_secs_f64(seconds).ok()?,
        })
    }
}

/// The last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command with inherited stdio; a failure names it.
fn run_command(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|error| format!("could not start {shown}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// The one `uploads serve` every client of a profile talks to, logging to a file.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `uploads serve` on a free loopback port (pinned to `core` when given) and waits
    /// until it accepts connections.
    fn start(
        uploads: &Path,
        data_dir: &Path,
        log: &Path,
        core: Option<&str>,
    ) -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("cannot find a free port: {error}"))?
            .port();
        let log_file = File::create(log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let mut command = match core {
            // taskset execs the server: the child's pid is the server's.
            Some(core) => {
                let mut pinned = Command::new(TASKSET);
                pinned.args(["-c", core]).arg(uploads);
                pinned
            }
            None => Command::new(uploads),
        };
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env_remove("UPLOADS_API_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", uploads.display()))?;
        let mut server = Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log: log.to_owned(),
        };
        let started = Instant::now();
        while TcpStream::connect(server.addr).is_err() {
            let exited = server.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > SERVER_START_TIMEOUT {
                return Err(format!(
                    "`uploads serve` did not start; its log ends with:\n{}",
                    tail(log, 20)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The base URL that reaches the server directly.
    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server's CPU time so far.
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        report::cpu_time_from_stat(&stat)
    }

    /// Resets the server's peak RSS (`VmHWM`) to its current RSS.
    fn reset_peak_rss(&self) -> Result<(), String> {
        let path = format!("/proc/{}/clear_refs", self.child.id());
        std::fs::write(&path, "5").map_err(|error| format!("cannot write {path}: {error}"))
    }

    /// The server's peak RSS since the last reset, in KiB.
    fn peak_rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {path}: {error}"))?;
        report::parse_vm_hwm_kib(&status).ok_or_else(|| format!("no VmHWM in {path}"))
    }

    /// Stops the server gracefully (SIGTERM), or kills it if it does not stop in time.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Drop kills it.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A size such as `2GiB`, `256MiB`, `8MiB`, `512KiB` or a plain number of bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1024,
        "mib" | "m" => MIB,
        "gib" | "g" => GIB,
        _ => {
            return Err(format!(
                "unknown size unit in {text:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size such as 2GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("2GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("256MiB"), Ok(256 * MIB));
        assert_eq!(parse_size("8m"), Ok(8 * MIB));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "0MiB", "2TB", "GiB", "-1", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_follow_the_mode_and_flags_override_them() {
        let full = Options::parse(&[]).unwrap();
        assert_eq!(
            full,
            Options {
                profiles: Profile::DEFAULT.to_vec(),
                size: None,
                quick: false,
                runs: 3,
                part_size: None,
                out: None,
                peer: true,
                smoke: false,
            }
        );
        assert_eq!(full.size_for(Profile::Loopback), 2 * GIB);
        assert_eq!(full.size_for(Profile::Wan(link::WAN_SLOW)), 256 * MIB);
        let quick = Options::parse(&args("--quick")).unwrap();
        assert_eq!(quick.size_for(Profile::Loopback), 256 * MIB);
        let smoke = Options::parse(&args("--smoke --no-peer")).unwrap();
        assert_eq!((smoke.runs, smoke.peer), (1, false));
        assert_eq!(smoke.size_for(Profile::Pinned), 8 * MIB);
        assert_eq!((smoke.smoke, smoke.out), (true, None));
        let custom =
            Options::parse(&args("--size 1GiB --runs 5 --out x.md --part-size 8MiB")).unwrap();
        assert_eq!((custom.size_for(Profile::Pinned), custom.runs), (GIB, 5));
        assert_eq!(
            (custom.out, custom.part_size),
            (Some(PathBuf::from("x.md")), Some(8 * MIB))
        );
        let some = Options::parse(&args("--profile wan-fast --profile loopback")).unwrap();
        assert_eq!(
            some.profiles,
            [Profile::Loopback, Profile::Wan(link::WAN_FAST)],
            "report order"
        );
        let shared = Options::parse(&args("--profile shared --profile loopback")).unwrap();
        assert_eq!(shared.profiles, [Profile::Loopback, Profile::Shared]);
        assert!(Options::parse(&args("--profile wan")).is_err());
        assert!(Options::parse(&args("--runs 0")).is_err());
        assert!(Options::parse(&args("--size")).is_err());
        assert!(Options::parse(&args("--fast")).is_err());
    }

    #[test]
    fn time_s_usage_line_is_read() {
        assert_eq!(
            parse_time_usage("Command exited with non-zero status 1\n40960 1.25 0.50\n"),
            Some((40_960, Duration::from_millis(1750)))
        );
        assert_eq!(parse_time_usage("40960\n"), None);
        assert_eq!(parse_time_usage(""), None);
    }

    #[test]
    fn df_and_the_peer_answer_are_read() {
        let df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                  /dev/vda 264137564 23000000 73400320 24% /\n";
        assert_eq!(parse_df_available_kib(df), Some(73_400_320));
        assert_eq!(parse_df_available_kib("Filesystem\n"), None);
        let answer = PeerAnswer::parse("upload_id=upload_1 file_id=file-2 seconds=1.5\n").unwrap();
        assert_eq!(
            answer,
            PeerAnswer {
                upload_id: "upload_1".to_owned(),
                file_id: "file-2".to_owned(),
                elapsed: Duration::from_millis(1500),
            }
        );
        assert_eq!(PeerAnswer::parse("upload_id=u seconds=1"), None);
    }

    /// The whole bench, tiny, against a real `uploads serve` on every profile (the WAN ones
    /// through the link emulator): every subject runs and is measured (the peer is left out:
    /// it would need the package index).
    #[test]
    fn a_smoke_run_measures_every_subject_and_writes_the_report() {
        let dir = std::env::temp_dir().join(format!("xtask-smoke-{}", std::process::id()));
        let out = dir.join("report.md");
        run(&args(&format!("--smoke --no-peer --out {}", out.display()))).unwrap();
        let report = std::fs::read_to_string(&out).unwrap();
        let chart = std::fs::read_to_string(dir.join(CHART)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for profile in Profile::DEFAULT {
            let heading = format!("### {}: ", profile.title());
            let start = report
                .find(&heading)
                .unwrap_or_else(|| panic!("no section {heading} in:\n{report}"));
            let section = &report[start..];
            let section = &section[..section[4..]
                .find("### ")
                .map_or(section.len(), |end| end + 4)];
            let table_row = |label: String| {
                section
                    .lines()
                    .find(|line| line.starts_with(&format!("| {label} | ")))
                    .unwrap_or_else(|| panic!("no row for {label} in:\n{section}"))
                    .to_owned()
            };
            // The md5 bound's own CPU was measured.
            let md5 = table_row(Subject::Md5Bound.label());
            assert!(!md5.contains("| - | - | - | - | - | - | - | - |"), "{md5}");
            for subject in profile.subjects(true) {
                if !matches!(subject, Subject::Ours { .. }) {
                    continue;
                }
                let row = table_row(subject.label());
                // Client RSS, server RSS and the complete latency were all read, and the
                // bound column is filled (the link's, on a WAN profile).
                assert_eq!(row.matches(" MiB |").count(), 2, "{row}");
                assert_eq!(row.matches(" ms (").count(), 1, "{row}");
                let bound = if profile.link().is_some() {
                    "of link |"
                } else {
                    "of "
                };
                assert!(row.contains(bound), "{row}");
            }
            if profile.link().is_some() {
                assert!(
                    section.contains("The emulator used at most 0."),
                    "{section}"
                );
            }
        }
        assert!(report.contains("the run was asked for `--no-peer`"));
        assert!(report.contains("| complete without md5 < 50 ms (loopback, async, c=8) | "));
        assert_eq!(
            chart.matches("<g transform").count(),
            Profile::DEFAULT.len()
        );
    }

    #[test]
    fn generated_files_are_noise_of_the_exact_size_and_always_the_same() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (first, second) = (dir.join("a.bin"), dir.join("b.bin"));
        generate_file(&first, 3 * MIB + 5).unwrap();
        generate_file(&second, 3 * MIB + 5).unwrap();
        let bytes = std::fs::read(&first).unwrap();
        assert_eq!(bytes.len() as u64, 3 * MIB + 5);
        assert_eq!(bytes, std::fs::read(&second).unwrap());
        // No 4 KiB page repeats, so nothing along the way can compress or dedupe it.
        let mut pages: Vec<&[u8]> = bytes.chunks_exact(4096).collect();
        let count = pages.len();
        pages.sort_unstable();
        pages.dedup();
        assert_eq!(pages.len(), count);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
