//! `uploads-sim`: runs seeds of the simulation (see the library's docs); `cargo xtask sim`
//! runs it.
//!
//! ```text
//! uploads-sim --seeds N [--from S]      N seeds (the regression seeds first); prints "N passed, N failed"
//! uploads-sim --seed S [--rules R] [--without kinds] [--without-clients 0,1]
//!                                        replays one seed and prints its trace
//! --rules current | before-issue-21      the server's rules (default: current)
//! ```

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

use uploads_sim::{FaultKind, Outcome, REGRESSION_SEEDS, Rules, Switches, run, shrink};

const USAGE: &str = "usage: uploads-sim --seeds N [--from S] [--rules current|before-issue-21]
       uploads-sim --seed S [--rules current|before-issue-21] [--without kind,...] [--without-clients i,...]";

struct Args {
    seeds: Option<u64>,
    seed: Option<u64>,
    from: u64,
    rules: Rules,
    switches: Switches,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        seeds: None,
        seed: None,
        from: 0,
        rules: Rules::Current,
        switches: Switches::default(),
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag} takes a number, not {text:?}"))
        };
        match flag.as_str() {
            "--seeds" => parsed.seeds = Some(number(value()?)?),
            "--seed" => parsed.seed = Some(number(value()?)?),
            "--from" => parsed.from = number(value()?)?,
            "--rules" => {
                parsed.rules = match value()?.as_str() {
                    "current" => Rules::Current,
                    "before-issue-21" => Rules::BeforeIssue21,
                    other => return Err(format!("unknown rules {other:?}")),
                }
            }
            "--without" => {
                parsed.switches.disabled = value()?
                    .split(',')
                    .map(|name| {
                        FaultKind::from_name(name).ok_or_else(|| format!("unknown fault {name:?}"))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
            }
            "--without-clients" => {
                parsed.switches.without_clients = value()?
                    .split(',')
                    .map(|index| {
                        index
                            .parse()
                            .map_err(|_| format!("not a client index: {index:?}"))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("uploads-sim: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match (args.seed, args.seeds) {
        (Some(seed), None) => replay(seed, &args),
        (None, Some(count)) => many(count, &args),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Replays one seed and prints its trace.
fn replay(seed: u64, args: &Args) -> ExitCode {
    let outcome = run(seed, args.rules, &args.switches, true);
    for line in &outcome.trace {
        println!("{line}");
    }
    match outcome.violation {
        None => {
            println!("seed {seed}: passed ({} events)", outcome.steps);
            ExitCode::SUCCESS
        }
        Some(violation) => {
            println!("seed {seed}: FAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}

/// Failures shrunk and printed in full; the rest are listed.
const SHRUNK_AT_MOST: usize = 3;

/// Runs the regression seeds, then `count` seeds from `--from`, on every core; shrinks and
/// prints the first failures.
fn many(count: u64, args: &Args) -> ExitCode {
    let started = Instant::now();
    // The kept seeds with their own switches, then the batch with the command line's.
    let seeds: Vec<(u64, Switches)> = REGRESSION_SEEDS
        .iter()
        .map(|kept| {
            let mut switches = kept.switches();
            switches
                .disabled
                .extend(args.switches.disabled.iter().copied());
            (kept.seed, switches)
        })
        .chain((args.from..args.from + count).map(|seed| (seed, args.switches.clone())))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Each thread takes every `threads`-th seed; a seed's run is the same on any thread.
    let outcomes: Vec<(u64, Outcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let seeds = &seeds;
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(worker)
                        .step_by(threads)
                        .map(|(seed, switches)| (*seed, run(*seed, args.rules, switches, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut outcomes: Vec<(u64, Outcome)> = workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a simulation thread panicked"))
            .collect();
        outcomes.sort_by_key(|(seed, _)| seeds.iter().position(|(s, _)| s == seed));
        outcomes
    });
    let events: u64 = outcomes.iter().map(|(_, outcome)| outcome.steps).sum();
    let failures: Vec<(u64, String)> = outcomes
        .into_iter()
        .filter_map(|(seed, outcome)| outcome.violation.map(|violation| (seed, violation)))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    for (shown, (seed, violation)) in failures.iter().enumerate() {
        println!("seed {seed} FAILED: {violation}");
        if shown >= SHRUNK_AT_MOST {
            continue;
        }
        let (switches, shrunk) = shrink(*seed, args.rules);
        println!(
            "shrunk: cargo xtask sim --seed {seed}{}{} ({} trace lines)",
            if args.rules == Rules::Current {
                ""
            } else {
                " --rules before-issue-21"
            },
            switches.flags(),
            shrunk.trace.len()
        );
        for line in &shrunk.trace {
            println!("    {line}");
        }
        if let Some(violation) = shrunk.violation {
            println!("    => {violation}");
        }
    }
    let (failed, passed) = (failures.len(), seeds.len() - failures.len());
    println!(
        "{passed} passed, {failed} failed ({:.0} seeds/s on {threads} threads, {events} events, {elapsed:.1}s)",
        f64::from(u32::try_from(seeds.len()).unwrap_or(u32::MAX)) / elapsed.max(1e-9)
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
