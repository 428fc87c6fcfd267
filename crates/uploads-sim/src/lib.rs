//! A seeded, deterministic simulation of the whole upload system under faults, built from the
//! real cores: clients are `uploads_core`'s [`Uploader`](uploads_core::uploader::Uploader),
//! servers run its [`Ledger`](uploads_core::ledger::Ledger) with the real server's plan ->
//! persist -> apply steps, recovery rule and sweep, over a simulated store that keeps what is
//! durable apart from what was only being written. One thread, one virtual clock, one seeded
//! random stream: a seed replays exactly.
//!
//! A seed decides the backend (one directory instance, or two or three instances over shared
//! rows with PostgreSQL's locking), the clients (one to three, each maybe raced by a second
//! client that completes, cancels or adds a Part to its Upload), and the faults: requests and
//! answers lost, duplicated, delayed and reordered; Parts cut mid-body; 429 and 503 with
//! `Retry-After`; client crashes (resumed from the snapshot); server crashes between durable
//! steps; a full disk; clocks that jump forward past expiry, step back, or disagree between
//! instances by up to two Upload lifetimes; an instance frozen inside a transaction holding
//! its row locks (for a while, or for ever); the sweeper at random moments on every instance.
//!
//! The invariants are listed in [`oracle`]. [`run`] runs one seed; [`shrink`] switches fault
//! kinds and clients off while the failure stays, so a failing seed prints a short trace.

pub mod chores;
pub mod client;
pub mod link;
pub mod locks;
pub mod oracle;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod storage;
pub mod world;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use scenario::{FaultKind, Rules, Scenario};

/// A seed kept because it once failed: run first in every batch, with its switches.
#[derive(Debug, Clone, Copy)]
pub struct KeptSeed {
    /// The seed.
    pub seed: u64,
    /// The fault kinds switched off when it failed.
    pub without: &'static [FaultKind],
    /// Why it is kept.
    pub why: &'static str,
}

impl KeptSeed {
    /// The switches it runs with.
    pub fn switches(&self) -> Switches {
        Switches {
            disabled: self.without.iter().copied().collect(),
            without_clients: BTreeSet::new(),
        }
    }
}

/// Seeds that failed once, run first, every time (see `docs/SIMULATION.md`).
pub const REGRESSION_SEEDS: &[KeptSeed] = &[
    KeptSeed {
        seed: 5,
        without: &[],
        why: "before issue 21, an instance whose clock ran ahead swept a live Upload's Parts",
    },
    KeptSeed {
        seed: 20,
        without: &[
            FaultKind::Skew,
            FaultKind::ClockJump,
            FaultKind::ClockStepBack,
        ],
        why: "before issue 21, an instance frozen in a transaction kept an Upload's lock for ever",
    },
    KeptSeed {
        seed: 69,
        without: &[],
        why: "the uploader read the service's expires_at on its own clock: a service 67 \
              minutes behind made it give up at its first retry",
    },
];

/// How one seed's run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The first invariant broken, if one was.
    pub violation: Option<String>,
    /// The trace (when asked for): every message, fault and crash, in order.
    pub trace: Vec<String>,
    /// Events handled.
    pub steps: u64,
    /// The scenario's summary.
    pub summary: String,
}

/// What to switch off in a run (the shrinker's knobs; empty for a plain run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switches {
    /// Fault kinds switched off.
    pub disabled: BTreeSet<FaultKind>,
    /// Clients left out, by index.
    pub without_clients: BTreeSet<usize>,
}

impl Switches {
    /// The command-line flags that replay a run with these switches.
    pub fn flags(&self) -> String {
        let mut flags = String::new();
        if !self.disabled.is_empty() {
            let kinds: Vec<&str> = self.disabled.iter().map(|kind| kind.name()).collect();
            let _ = write!(flags, " --without {}", kinds.join(","));
        }
        if !self.without_clients.is_empty() {
            let clients: Vec<String> = self
                .without_clients
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = write!(flags, " --without-clients {}", clients.join(","));
        }
        flags
    }
}

/// Runs `seed` under `rules`, with `switches`, keeping the trace when `trace` is set.
pub fn run(seed: u64, rules: Rules, switches: &Switches, trace: bool) -> Outcome {
    let scenario = Scenario::generate(seed, rules, &switches.disabled, &|client| {
        !switches.without_clients.contains(&client)
    });
    let summary = scenario.summary();
    let mut world = world::World::new(scenario, trace);
    world.run(scenario::HORIZON_MS);
    Outcome {
        violation: world.violation,
        trace: world.trace.unwrap_or_default(),
        steps: world.steps,
        summary,
    }
}

/// Shrinks a failing seed: switches off each fault kind, then each client, keeping each
/// change while the run still breaks the same invariant (the same message but for ids and
/// numbers). Returns the smallest switches found and that run's outcome, traced.
pub fn shrink(seed: u64, rules: Rules) -> (Switches, Outcome) {
    let mut switches = Switches::default();
    let Some(original) = run(seed, rules, &switches, false).violation else {
        return (switches.clone(), run(seed, rules, &switches, true));
    };
    let kind = violation_kind(&original);
    let same_failure = |switches: &Switches| {
        run(seed, rules, switches, false)
            .violation
            .is_some_and(|violation| violation_kind(&violation) == kind)
    };
    for fault in FaultKind::ALL {
        let mut fewer = switches.clone();
        fewer.disabled.insert(fault);
        if same_failure(&fewer) {
            switches = fewer;
        }
    }
    for client in 0..3 {
        let mut fewer = switches.clone();
        fewer.without_clients.insert(client);
        if same_failure(&fewer) {
            switches = fewer;
        }
    }
    let outcome = run(seed, rules, &switches, true);
    (switches, outcome)
}

/// A violation's message without its ids and numbers: which invariant, not which object.
pub fn violation_kind(violation: &str) -> String {
    violation
        .split_whitespace()
        .filter(|word| {
            word.chars()
                .all(|c| c.is_ascii_alphabetic() || ",.:'()".contains(c))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
