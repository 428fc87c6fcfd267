//! The simulator's own promises: a seed replays exactly, the kept seeds pass, a batch of
//! seeds passes, shrinking keeps a failure, and the simulator finds the two faults the team
//! backend had before issue 21's fixes (the seeds it found them with are kept here).

use uploads_sim::{REGRESSION_SEEDS, Rules, Switches, run, shrink, violation_kind};

/// Seeds each `cargo test` (and each mutant of `cargo mutants`) runs; `cargo xtask sim`
/// runs many more.
const BATCH: u64 = 48;

/// Under the old rules, an instance whose clock ran more than an Upload's lifetime ahead
/// swept a live Upload's Parts, and another instance completed it into a File without
/// bytes (found by `cargo xtask sim --seeds 400 --rules before-issue-21`).
const SKEWED_CLOCK_SEED: u64 = REGRESSION_SEEDS[0].seed;
/// Under the old rules, an instance frozen inside a transaction kept its row lock for
/// ever, and every request for that Upload waited on it: the client could never finish
/// (found with the clock faults switched off, so that no clock excuses the give-up).
const FROZEN_INSTANCE_SEED: u64 = REGRESSION_SEEDS[1].seed;

fn without_clock_faults() -> Switches {
    REGRESSION_SEEDS[1].switches()
}

#[test]
fn a_seed_replays_the_same_trace() {
    let first = run(7, Rules::Current, &Switches::default(), true);
    let second = run(7, Rules::Current, &Switches::default(), true);
    assert!(first.trace.len() > 20, "{}", first.trace.join("\n"));
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.violation, second.violation);
}

#[test]
fn the_kept_seeds_and_a_batch_of_seeds_pass() {
    let seeds = REGRESSION_SEEDS
        .iter()
        .map(|kept| (kept.seed, kept.switches()))
        .chain((0..BATCH).map(|seed| (seed, Switches::default())));
    let failed: Vec<String> = seeds
        .filter_map(|(seed, switches)| {
            let outcome = run(seed, Rules::Current, &switches, false);
            outcome
                .violation
                .map(|violation| format!("seed {seed}: {violation}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "replay with `cargo xtask sim --seed S`:\n{}",
        failed.join("\n")
    );
}

#[test]
fn the_old_rules_lose_a_file_s_bytes_under_skewed_clocks() {
    let old = run(
        SKEWED_CLOCK_SEED,
        Rules::BeforeIssue21,
        &Switches::default(),
        false,
    );
    let violation = old.violation.expect("the old rules lose data on this seed");
    assert!(
        violation.contains("are gone") || violation.contains("lost the bytes"),
        "{violation}"
    );
    let current = run(
        SKEWED_CLOCK_SEED,
        Rules::Current,
        &Switches::default(),
        false,
    );
    assert_eq!(current.violation, None);
}

#[test]
fn the_old_rules_stall_clients_behind_a_frozen_instance() {
    let switches = without_clock_faults();
    let old = run(FROZEN_INSTANCE_SEED, Rules::BeforeIssue21, &switches, true);
    let violation = old
        .violation
        .expect("the old rules stall a client on this seed");
    assert!(
        violation.contains("still pending and not expired"),
        "{violation}"
    );
    assert!(
        old.trace
            .iter()
            .any(|line| line.contains("freezes inside a transaction")),
        "the outage is the frozen instance's"
    );
    let current = run(FROZEN_INSTANCE_SEED, Rules::Current, &switches, false);
    assert_eq!(current.violation, None);
}

#[test]
fn shrinking_keeps_the_failure_with_fewer_faults_and_a_shorter_trace() {
    let full = run(
        SKEWED_CLOCK_SEED,
        Rules::BeforeIssue21,
        &Switches::default(),
        true,
    );
    let (switches, shrunk) = shrink(SKEWED_CLOCK_SEED, Rules::BeforeIssue21);
    assert_eq!(
        shrunk.violation.as_deref().map(violation_kind),
        full.violation.as_deref().map(violation_kind),
        "the same invariant breaks"
    );
    assert!(!switches.disabled.is_empty());
    assert!(shrunk.trace.len() < full.trace.len());
    // The flags printed replay the shrunk run.
    let replayed = run(SKEWED_CLOCK_SEED, Rules::BeforeIssue21, &switches, true);
    assert_eq!(replayed.trace, shrunk.trace);
    assert!(switches.flags().contains("--without "));
}
