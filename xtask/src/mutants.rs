//! `cargo xtask mutants`: how strong the core's tests are, as a number. cargo-mutants (27.x,
//! `cargo install cargo-mutants --locked`) changes the core's decision code one small edit at
//! a time (the files `.cargo/mutants.toml` names) and runs the tests against every change. A
//! change some test fails on is *caught*; one that makes a test hang until cargo-mutants gives
//! up *timed out* (it is caught too); one that does not build is *unviable*; one no test
//! notices is *missed*.
//!
//! ```text
//! list the examined files ─▶ cargo mutants (into <target>/mutants.out)
//!   ─▶ read its outcomes.json ─▶ merge them into the report's per-file results
//!   ─▶ quote each missed mutant's justification ─▶ write docs/MUTANTS.md
//!   ─▶ fail if a missed mutant has no justification, or a justification no missed mutant
//! ```
//!
//! The report is also where the results live between runs: `-f FILE` (a path, or its end such
//! as `retry.rs` or `uploader/mod.rs`) re-runs only the files it names and replaces their
//! results, keeping every other file's from the run that last measured it; `--no-run` only
//! rewrites the report, after a justification was edited. A missed mutant that cannot change
//! behaviour (an equivalent mutant) is justified in `docs/mutants-justified.txt`.
//!
//! A whole run takes about an hour on two cores, so `ci` does not run it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::fs;
use std::path::Path;

use crate::{cargo, shown, target_dir, workspace_root};

/// The package whose files are mutated (the workspace root is a package of its own, the
/// cross-crate tests, which cargo-mutants would otherwise pick).
const PACKAGE: &str = "uploads-core";
/// The report, relative to the workspace root.
const REPORT: &str = "docs/MUTANTS.md";
/// Why each justified missed mutant cannot change behaviour, relative to the workspace root.
const JUSTIFIED: &str = "docs/mutants-justified.txt";

const USAGE: &str = "usage: cargo xtask mutants [-f FILE]... [--no-run] [--outcomes JSON]
  -f, --file FILE  re-run only this examined file (a path, or its end: retry.rs,
                   uploader/mod.rs); the other files keep their results in the report
  --no-run         only rewrite docs/MUTANTS.md (after editing docs/mutants-justified.txt)
  --outcomes JSON  run nothing: write the report from this outcomes.json of a whole run
                   (one made in another checkout or target folder)";

/// Runs cargo-mutants as the options say and writes the report.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(options) = Options::parse(args)? else {
        eprintln!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    let report_path = root.join(REPORT);
    let previous = match fs::read_to_string(&report_path) {
        Ok(text) => Report::parse(&text)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Report::default(),
        Err(error) => return Err(format!("cannot read {REPORT}: {error}")),
    };
    let justified_text = fs::read_to_string(root.join(JUSTIFIED))
        .map_err(|error| format!("cannot read {JUSTIFIED}: {error}"))?;
    let justified = parse_justifications(&justified_text)?;
    let examined = examined_files(&root)?;
    let report = if options.no_run {
        previous.only(&examined)
    } else if let Some(path) = &options.outcomes {
        let outcomes =
            fs::read_to_string(path).map_err(|error| format!("cannot read {path}: {error}"))?;
        Report::default()
            .merged(Report::from_outcomes(&outcomes)?, &examined)
            .only(&examined)
    } else {
        let chosen = select(&examined, &options.files)?;
        let target = target_dir()?;
        run_cargo_mutants(&root, &target, &examined, &chosen)?;
        let outcomes_path = target.join("mutants.out").join("outcomes.json");
        let outcomes = fs::read_to_string(&outcomes_path)
            .map_err(|error| format!("cannot read {}: {error}", outcomes_path.display()))?;
        let fresh = Report::from_outcomes(&outcomes)?;
        let base = if options.files.is_empty() {
            Report::default()
        } else {
            previous
        };
        base.merged(fresh, &chosen).only(&examined)
    };
    fs::write(&report_path, report.to_markdown(&justified))
        .map_err(|error| format!("cannot write {REPORT}: {error}"))?;
    let totals = report.totals();
    eprintln!(
        "xtask: wrote {REPORT}: {} caught, {} timed out, {} missed, {} unviable",
        totals.caught,
        totals.timeouts.len(),
        totals.missed.len(),
        totals.unviable
    );
    check_justifications(&report, &justified)
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// The `-f` arguments, as given; empty for every examined file.
    files: Vec<String>,
    /// Rewrite the report from itself and the justifications, without running anything.
    no_run: bool,
    /// Write the report from this `outcomes.json` of a whole run, without running anything.
    outcomes: Option<String>,
}

impl Options {
    /// The options, or `None` when help was asked for.
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--no-run" => options.no_run = true,
                "--outcomes" => {
                    let path = args
                        .next()
                        .ok_or_else(|| format!("{arg} needs a file\n{USAGE}"))?;
                    options.outcomes = Some(path.clone());
                }
                "-f" | "--file" => {
                    let file = args
                        .next()
                        .ok_or_else(|| format!("{arg} needs a file\n{USAGE}"))?;
                    options.files.push(file.clone());
                }
                other => match other.strip_prefix("--file=") {
                    Some(file) => options.files.push(file.to_owned()),
                    // Anything else (a name filter, a shard) would leave some mutants of a file
                    // untested and its results in the report wrong.
                    None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
                },
            }
        }
        if options.no_run && !options.files.is_empty() {
            return Err(format!("--no-run runs no file; drop -f\n{USAGE}"));
        }
        if options.outcomes.is_some() && (options.no_run || !options.files.is_empty()) {
            return Err(format!(
                "--outcomes is a whole run; drop -f and --no-run\n{USAGE}"
            ));
        }
        Ok(Some(options))
    }
}

/// The files `.cargo/mutants.toml` selects, relative to the workspace root, as cargo-mutants
/// lists them.
fn examined_files(root: &Path) -> Result<Vec<String>, String> {
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["mutants", "--list-files", "--json", "--package", PACKAGE]);
    let output = command
        .output()
        .map_err(|error| format!("could not run `{}`: {error}", shown(&command)))?;
    if !output.status.success() {
        return Err(format!(
            "`{}` failed (is cargo-mutants installed? cargo install cargo-mutants --locked): {}",
            shown(&command),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo mutants --list-files answered no JSON: {error}"))?;
    let files = listed
        .as_array()
        .ok_or("cargo mutants --list-files answered no list")?
        .iter()
        .map(|file| {
            file["path"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("a listed file has no path: {file}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if files.is_empty() {
        return Err("cargo mutants examines no file: check .cargo/mutants.toml".to_owned());
    }
    Ok(files)
}

/// The examined files the `-f` arguments name (all of them when there are none): a path
/// matches itself and every path it ends, at a folder boundary.
fn select(examined: &[String], wanted: &[String]) -> Result<Vec<String>, String> {
    if wanted.is_empty() {
        return Ok(examined.to_vec());
    }
    let mut chosen = Vec::new();
    for name in wanted {
        let suffix = format!("/{name}");
        let matching: Vec<&String> = examined
            .iter()
            .filter(|path| *path == name || path.ends_with(&suffix))
            .collect();
        if matching.is_empty() {
            return Err(format!(
                "-f {name} names no examined file; they are:\n  {}",
                examined.join("\n  ")
            ));
        }
        for path in matching {
            if !chosen.contains(path) {
                chosen.push(path.clone());
            }
        }
    }
    Ok(chosen)
}

/// Runs cargo-mutants on the chosen files, writing `<target>/mutants.out`. Missed mutants and
/// timeouts are results, not failures.
fn run_cargo_mutants(
    root: &Path,
    target: &Path,
    examined: &[String],
    chosen: &[String],
) -> Result<(), String> {
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["mutants", "--package", PACKAGE, "--output"])
        .arg(target)
        // cargo-mutants builds a copy of the tree; in our target folder the dependencies are
        // built once for every run, where the copy's own would start empty each time.
        .env("CARGO_TARGET_DIR", target);
    // `-f` on cargo-mutants' command line adds to the config's `examine_globs` (27.x), and its
    // name filters (`-F`) let struct-field mutants of every file through (27.1.0); excluding
    // the other files is the one way to run just the chosen ones.
    for path in examined.iter().filter(|path| !chosen.contains(path)) {
        command.args(["--exclude", path]);
    }
    let shown = shown(&command);
    eprintln!("xtask: running `{shown}`");
    let status = command
        .status()
        .map_err(|error| format!("could not start `{shown}`: {error}"))?;
    // 2: some mutants missed; 3: some timed out (see the book's "Exit codes").
    match status.code() {
        Some(0 | 2 | 3) => Ok(()),
        _ => Err(format!("`{shown}` failed with {status}")),
    }
}

/// The results of one file's mutants.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct FileResults {
    caught: usize,
    unviable: usize,
    /// Names as cargo-mutants prints them, with line and column, in the order it ran them.
    timeouts: Vec<String>,
    /// Likewise.
    missed: Vec<String>,
}

impl FileResults {
    fn total(&self) -> usize {
        self.caught + self.unviable + self.timeouts.len() + self.missed.len()
    }

    fn add(&mut self, other: &FileResults) {
        self.caught += other.caught;
        self.unviable += other.unviable;
        self.timeouts.extend_from_slice(&other.timeouts);
        self.missed.extend_from_slice(&other.missed);
    }
}

/// Every examined file's results, and the cargo-mutants version that measured them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Report {
    version: String,
    files: BTreeMap<String, FileResults>,
}

/// Opens the summary table's rows and the lists' items; what `Report::parse` looks for.
const ROW_START: &str = "| `";
const ITEM_START: &str = "- `";
const VERSION_START: &str = "Measured with cargo-mutants ";
const MISSED_HEADING: &str = "## Missed";
const TIMEOUT_HEADING: &str = "## Timed out";

impl Report {
    /// The results in cargo-mutants' `outcomes.json`.
    fn from_outcomes(json: &str) -> Result<Report, String> {
        let outcomes: serde_json::Value = serde_json::from_str(json)
            .map_err(|error| format!("outcomes.json is not JSON: {error}"))?;
        if outcomes["end_time"].is_null() {
            return Err("outcomes.json is of a run that did not finish".to_owned());
        }
        let mut report = Report {
            version: outcomes["cargo_mutants_version"]
                .as_str()
                .unwrap_or("(unknown)")
                .to_owned(),
            files: BTreeMap::new(),
        };
        let list = outcomes["outcomes"]
            .as_array()
            .ok_or("outcomes.json has no outcomes")?;
        for outcome in list {
            let mutant = &outcome["scenario"]["Mutant"];
            if mutant.is_null() {
                continue; // the baseline, which must have passed for the run to go on
            }
            let (Some(name), Some(file)) = (mutant["name"].as_str(), mutant["file"].as_str())
            else {
                return Err(format!("a mutant without name or file: {mutant}"));
            };
            let results = report.files.entry(file.to_owned()).or_default();
            match outcome["summary"].as_str() {
                Some("CaughtMutant") => results.caught += 1,
                Some("Unviable") => results.unviable += 1,
                Some("Timeout") => results.timeouts.push(name.to_owned()),
                Some("MissedMutant") => results.missed.push(name.to_owned()),
                other => return Err(format!("{name}: unexpected outcome {other:?}")),
            }
        }
        Ok(report)
    }

    /// This report with the `run` files' results replaced by those of `fresh` (none for a
    /// file where it generated no mutant).
    fn merged(mut self, fresh: Report, run: &[String]) -> Report {
        let Report { version, mut files } = fresh;
        for path in run {
            self.files
                .insert(path.clone(), files.remove(path).unwrap_or_default());
        }
        self.version = version;
        self
    }

    /// This report without the files no longer examined.
    fn only(mut self, examined: &[String]) -> Report {
        self.files.retain(|path, _| examined.contains(path));
        self
    }

    fn totals(&self) -> FileResults {
        let mut totals = FileResults::default();
        for results in self.files.values() {
            totals.add(results);
        }
        totals
    }

    /// The report as `docs/MUTANTS.md`, each missed mutant with its justification.
    fn to_markdown(&self, justified: &BTreeMap<String, String>) -> String {
        let totals = self.totals();
        let viable = totals.total() - totals.unviable;
        let caught = totals.caught + totals.timeouts.len();
        let mut text = String::from("# Mutation testing\n\n");
        let _ = writeln!(
            text,
            "<!-- Written by `cargo xtask mutants`, which reads it back: edit \
             docs/mutants-justified.txt and run `cargo xtask mutants --no-run` instead. -->\n\n\
             {VERSION_START}{} on the files `.cargo/mutants.toml` names, against the tests of \
             the packages it names. A mutant is one small change to the code; it is caught when \
             a test fails, or hangs until cargo-mutants stops it (timed out), missed when every \
             test passes, unviable when it does not build. Each file's results are from the \
             last run that measured it (`cargo xtask mutants -f FILE` re-runs one file).\n\n\
             **{caught} of {viable} viable mutants caught** ({} missed, {} of them justified \
             as unable to change behaviour).\n",
            self.version,
            totals.missed.len(),
            totals
                .missed
                .iter()
                .filter(|name| justified.contains_key(&unlocated(name)))
                .count()
        );
        text.push_str(
            "| file | mutants | caught | timed out | missed | unviable |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for (path, results) in &self.files {
            let _ = writeln!(
                text,
                "{ROW_START}{path}` | {} | {} | {} | {} | {} |",
                results.total(),
                results.caught,
                results.timeouts.len(),
                results.missed.len(),
                results.unviable
            );
        }
        let _ = writeln!(
            text,
            "| **total** | {} | {} | {} | {} | {} |",
            totals.total(),
            totals.caught,
            totals.timeouts.len(),
            totals.missed.len(),
            totals.unviable
        );
        let _ = writeln!(
            text,
            "\n{MISSED_HEADING}\n\nEach with why it cannot change behaviour \
             (from `{JUSTIFIED}`).\n"
        );
        if totals.missed.is_empty() {
            text.push_str("None.\n");
        }
        for name in &totals.missed {
            let reason = justified
                .get(&unlocated(name))
                .map_or("**not justified: a test should catch it**", String::as_str);
            let _ = writeln!(text, "{ITEM_START}{name}`: {reason}");
        }
        let _ = writeln!(
            text,
            "\n{TIMEOUT_HEADING}\n\nCaught because a test hung until cargo-mutants stopped it.\n"
        );
        if totals.timeouts.is_empty() {
            text.push_str("None.\n");
        }
        for name in &totals.timeouts {
            let _ = writeln!(text, "{ITEM_START}{name}`");
        }
        text
    }

    /// The results a report written by [`Report::to_markdown`] holds.
    fn parse(text: &str) -> Result<Report, String> {
        let mut report = Report::default();
        // The table's counts of timeouts and missed mutants, which the lists must agree with.
        let mut counted = BTreeMap::new();
        let mut section = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(VERSION_START) {
                rest.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .clone_into(&mut report.version);
            } else if line.starts_with("## ") {
                section = line;
            } else if let Some(row) = line.strip_prefix(ROW_START) {
                let (path, results, timeouts_and_missed) = parse_row(row)?;
                counted.insert(path.clone(), timeouts_and_missed);
                report.files.insert(path, results);
            } else if let Some(item) = line.strip_prefix(ITEM_START) {
                let name = item
                    .split_once('`')
                    .map(|(name, _)| name.to_owned())
                    .ok_or_else(|| format!("{REPORT}: no closing backtick in {line:?}"))?;
                let results = report
                    .files
                    .get_mut(file_of(&name))
                    .ok_or_else(|| format!("{REPORT}: {name} is of no file in the table"))?;
                match section {
                    MISSED_HEADING => results.missed.push(name),
                    TIMEOUT_HEADING => results.timeouts.push(name),
                    _ => return Err(format!("{REPORT}: {line:?} is in no list")),
                }
            }
        }
        for (path, results) in &report.files {
            let listed = (results.timeouts.len(), results.missed.len());
            if counted.get(path) != Some(&listed) {
                return Err(format!(
                    "{REPORT}: the table's counts of {path} differ from its lists; \
                     was it edited by hand?"
                ));
            }
        }
        Ok(report)
    }
}

/// A summary row's file, its results with the lists left empty, and its counts of timeouts
/// and missed mutants; `row` follows the opening `` | ` ``.
fn parse_row(row: &str) -> Result<(String, FileResults, (usize, usize)), String> {
    let (path, cells) = row
        .split_once('`')
        .ok_or_else(|| format!("{REPORT}: no closing backtick in row {row:?}"))?;
    let counts = cells
        .split('|')
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::parse::<usize>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{REPORT}: row of {path}: {error}"))?;
    let [total, caught, timeouts, missed, unviable] = counts[..] else {
        return Err(format!("{REPORT}: row of {path} has not five counts"));
    };
    if total != caught + timeouts + missed + unviable {
        return Err(format!("{REPORT}: row of {path} does not add up"));
    }
    let results = FileResults {
        caught,
        unviable,
        ..FileResults::default()
    };
    Ok((path.to_owned(), results, (timeouts, missed)))
}

/// The file a mutant's name starts with.
fn file_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(file, _)| file)
}

/// A mutant's name without its line and column, which move with every edit above it:
/// `src/a.rs:12:5: replace x with y` is `src/a.rs: replace x with y`.
fn unlocated(name: &str) -> String {
    match name.split_once(": ") {
        Some((located, change)) => format!("{}: {change}", file_of(located)),
        None => name.to_owned(),
    }
}

/// The justifications file: a line at the margin names a mutant without its line and column;
/// the indented lines below it say why it cannot change behaviour. `#` starts a comment line.
fn parse_justifications(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let (_, reason) = entries
                .last_mut()
                .ok_or_else(|| format!("{JUSTIFIED}:{}: a reason under no mutant", index + 1))?;
            if !reason.is_empty() {
                reason.push(' ');
            }
            reason.push_str(trimmed);
        } else {
            entries.push((trimmed.to_owned(), String::new()));
        }
    }
    let mut justified = BTreeMap::new();
    for (key, reason) in entries {
        if reason.is_empty() {
            return Err(format!("{JUSTIFIED}: {key} has no reason"));
        }
        if justified.insert(key.clone(), reason).is_some() {
            return Err(format!("{JUSTIFIED}: {key} is justified twice"));
        }
    }
    Ok(justified)
}

/// Fails on a missed mutant without a justification, and on a justification of a file the
/// report measured that names no missed mutant (it was caught since, or its code changed).
fn check_justifications(
    report: &Report,
    justified: &BTreeMap<String, String>,
) -> Result<(), String> {
    let totals = report.totals();
    let missed: BTreeSet<String> = totals.missed.iter().map(|name| unlocated(name)).collect();
    let unjustified: Vec<&String> = totals
        .missed
        .iter()
        .filter(|name| !justified.contains_key(&unlocated(name)))
        .collect();
    let stale: Vec<&String> = justified
        .keys()
        .filter(|key| report.files.contains_key(file_of(key)) && !missed.contains(*key))
        .collect();
    let mut problems = String::new();
    if !unjustified.is_empty() {
        let _ = write!(
            problems,
            "\n{} missed mutant(s) need a test, or a justification in {JUSTIFIED}:",
            unjustified.len()
        );
        for name in unjustified {
            let _ = write!(problems, "\n  {name}");
        }
    }
    if !stale.is_empty() {
        let _ = write!(
            problems,
            "\n{JUSTIFIED} justifies mutants that are not missed (remove them):"
        );
        for key in stale {
            let _ = write!(problems, "\n  {key}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the report is written, but:{problems}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "crates/uploads-core/src/digest.rs";
    const RETRY: &str = "crates/uploads-core/src/retry.rs";
    const UNMEASURED: &str = "crates/uploads-core/src/forms.rs";

    fn sample() -> Report {
        let mut files = BTreeMap::new();
        files.insert(
            DIGEST.to_owned(),
            FileResults {
                caught: 70,
                unviable: 8,
                timeouts: vec![format!(
                    "{DIGEST}:155:9: replace Md5Chain::next_slot -> (usize, bool) with (0, true)"
                )],
                missed: vec![
                    format!("{DIGEST}:125:40: replace + with - in Md5Chain::slot_started_at"),
                    format!("{DIGEST}:202:9: replace Md5Chain::abandon with ()"),
                ],
            },
        );
        files.insert(RETRY.to_owned(), FileResults::default());
        Report {
            version: "27.1.0".to_owned(),
            files,
        }
    }

    #[test]
    fn a_written_report_reads_back_as_the_same_results() {
        let report = sample();
        let justified = BTreeMap::from([(
            format!("{DIGEST}: replace Md5Chain::abandon with ()"),
            "nothing reads the slot again".to_owned(),
        )]);
        let text = report.to_markdown(&justified);
        assert!(text.contains("**71 of 73 viable mutants caught** (2 missed, 1 of them"));
        assert!(text.contains("with ()`: nothing reads the slot again\n"));
        assert!(text.contains("slot_started_at`: **not justified"));
        assert_eq!(Report::parse(&text), Ok(report));
    }

    #[test]
    fn a_report_whose_lists_disagree_with_its_table_is_refused() {
        let text = sample().to_markdown(&BTreeMap::new());
        let edited = text.replace("| 81 | 70 | 1 | 2 | 8 |", "| 80 | 70 | 1 | 1 | 8 |");
        assert_ne!(edited, text);
        assert!(
            Report::parse(&edited)
                .unwrap_err()
                .contains("edited by hand")
        );
    }

    #[test]
    fn a_rerun_replaces_only_the_files_it_ran() {
        let fresh = Report {
            version: "27.2.0".to_owned(),
            files: BTreeMap::from([(
                DIGEST.to_owned(),
                FileResults {
                    caught: 80,
                    ..FileResults::default()
                },
            )]),
        };
        let mut kept = sample();
        kept.files
            .get_mut(RETRY)
            .expect("retry.rs is in the sample")
            .caught = 5;
        let merged = kept.clone().merged(fresh, &[DIGEST.to_owned()]);
        assert_eq!(merged.version, "27.2.0");
        assert_eq!(merged.files[DIGEST].caught, 80);
        assert!(merged.files[DIGEST].missed.is_empty());
        assert_eq!(merged.files[RETRY], kept.files[RETRY]);
        // A file the run measured that has no mutant left has none in the report either.
        let emptied = sample().merged(Report::default(), &[DIGEST.to_owned()]);
        assert_eq!(emptied.files[DIGEST], FileResults::default());
    }

    #[test]
    fn outcomes_are_counted_per_file() {
        let json = format!(
            r#"{{"end_time": "2026-01-01T00:00:00Z", "cargo_mutants_version": "27.1.0",
            "outcomes": [
              {{"scenario": "Baseline", "summary": "Success"}},
              {{"scenario": {{"Mutant": {{"name": "{DIGEST}:1:1: a", "file": "{DIGEST}"}}}}, "summary": "CaughtMutant"}},
              {{"scenario": {{"Mutant": {{"name": "{DIGEST}:2:1: b", "file": "{DIGEST}"}}}}, "summary": "Timeout"}},
              {{"scenario": {{"Mutant": {{"name": "{RETRY}:3:1: c", "file": "{RETRY}"}}}}, "summary": "MissedMutant"}},
              {{"scenario": {{"Mutant": {{"name": "{RETRY}:4:1: d", "file": "{RETRY}"}}}}, "summary": "Unviable"}}
            ]}}"#
        );
        let report = Report::from_outcomes(&json).expect("the outcomes parse");
        assert_eq!(report.version, "27.1.0");
        assert_eq!(
            report.files[DIGEST],
            FileResults {
                caught: 1,
                timeouts: vec![format!("{DIGEST}:2:1: b")],
                ..FileResults::default()
            }
        );
        assert_eq!(
            report.files[RETRY],
            FileResults {
                unviable: 1,
                missed: vec![format!("{RETRY}:3:1: c")],
                ..FileResults::default()
            }
        );
        let unfinished = json.replace(r#""2026-01-01T00:00:00Z""#, "null");
        assert!(Report::from_outcomes(&unfinished).is_err());
    }

    #[test]
    fn a_justification_names_its_mutant_without_line_and_column() {
        assert_eq!(
            unlocated(&format!(
                "{DIGEST}:12:5: replace <impl Foo for Bar>::baz -> u8 with 0"
            )),
            format!("{DIGEST}: replace <impl Foo for Bar>::baz -> u8 with 0")
        );
        let text = format!(
            "# why\n\n{DIGEST}: replace a with b\n    first line,\n    second line.\n\
             {RETRY}: replace c with d\n\tone line.\n"
        );
        let justified = parse_justifications(&text).expect("the file parses");
        assert_eq!(
            justified,
            BTreeMap::from([
                (
                    format!("{DIGEST}: replace a with b"),
                    "first line, second line.".to_owned()
                ),
                (format!("{RETRY}: replace c with d"), "one line.".to_owned()),
            ])
        );
        assert!(parse_justifications(&format!("{DIGEST}: a\n{RETRY}: b\n  why\n")).is_err());
        assert!(
            parse_justifications(&format!("{DIGEST}: a\n  why\n{DIGEST}: a\n  why\n")).is_err()
        );
        assert!(parse_justifications("  why, of nothing\n").is_err());
    }

    #[test]
    fn unjustified_and_stale_justifications_fail_the_run() {
        let report = sample();
        let abandon = format!("{DIGEST}: replace Md5Chain::abandon with ()");
        let started = format!("{DIGEST}: replace + with - in Md5Chain::slot_started_at");
        let all = BTreeMap::from([
            (abandon.clone(), "why".to_owned()),
            (started.clone(), "why".to_owned()),
        ]);
        assert_eq!(check_justifications(&report, &all), Ok(()));
        let one = BTreeMap::from([(abandon, "why".to_owned())]);
        let failure = check_justifications(&report, &one).unwrap_err();
        assert!(failure.contains("1 missed mutant(s) need a test"));
        assert!(failure.contains("slot_started_at"));
        let mut stale = all;
        // Of a file the report has no results for: nothing says it is not missed.
        stale.insert(format!("{UNMEASURED}: replace x with y"), "why".to_owned());
        assert_eq!(check_justifications(&report, &stale), Ok(()));
        stale.insert(format!("{RETRY}: replace x with y"), "why".to_owned());
        let failure = check_justifications(&report, &stale).unwrap_err();
        assert!(failure.contains("not missed (remove them):\n  crates/uploads-core/src/retry.rs"));
    }

    #[test]
    fn a_file_argument_names_examined_files_by_their_end() {
        let examined = [
            "crates/uploads-core/src/ledger/mod.rs".to_owned(),
            "crates/uploads-core/src/uploader/mod.rs".to_owned(),
            RETRY.to_owned(),
        ];
        assert_eq!(select(&examined, &[]), Ok(examined.to_vec()));
        assert_eq!(
            select(&examined, &["uploader/mod.rs".to_owned(), RETRY.to_owned()]),
            Ok(vec![examined[1].clone(), RETRY.to_owned()])
        );
        assert_eq!(
            select(&examined, &["mod.rs".to_owned()]).map(|files| files.len()),
            Ok(2)
        );
        // Only at a folder boundary: `try.rs` is not `retry.rs`.
        assert!(select(&examined, &["try.rs".to_owned()]).is_err());
    }

    #[test]
    fn options_take_files_and_refuse_what_would_skew_the_report() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&args(&["-f", "retry.rs", "--file=digest.rs"])),
            Ok(Some(Options {
                files: args(&["retry.rs", "digest.rs"]),
                no_run: false,
                outcomes: None,
            }))
        );
        assert_eq!(
            Options::parse(&args(&["--outcomes", "run/outcomes.json"])),
            Ok(Some(Options {
                outcomes: Some("run/outcomes.json".to_owned()),
                ..Options::default()
            }))
        );
        assert!(Options::parse(&args(&["--outcomes", "o.json", "-f", "retry.rs"])).is_err());
        assert_eq!(Options::parse(&args(&["--help"])), Ok(None));
        assert!(Options::parse(&args(&["-F", "next_job"])).is_err());
        assert!(Options::parse(&args(&["-f"])).is_err());
        assert!(Options::parse(&args(&["--no-run", "-f", "retry.rs"])).is_err());
    }
}
