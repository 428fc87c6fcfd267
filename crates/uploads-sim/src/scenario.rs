//! What a seed decides before the run starts: the backend, the instances and their clocks,
//! the clients and their files, which faults may strike and how often.

use std::collections::BTreeSet;
use std::fmt;

use crate::rng::Rng;

/// An Upload's lifetime in the simulation (the server's default, as OpenAI's: one hour).
pub const UPLOAD_TTL_SECS: u64 = 3600;
/// An Upload's lifetime in milliseconds, for clock offsets.
const UPLOAD_TTL_MS: i64 = 3_600_000;
/// How long a run lasts, in virtual milliseconds: long enough for expiries and retention.
pub const HORIZON_MS: u64 = 4 * 3600 * 1000;
/// Faults strike in the first part of a run (the storm); after it, the network and the
/// disks are calm, and a client that gave up runs again: a service that still cannot finish
/// its upload then is down, not unlucky. What a fault left behind (a clock moved, an
/// instance frozen for ever) stays.
pub const STORM_MS: u64 = 20 * 60 * 1000;
/// How often each instance sweeps, at least (the seed adds sweeps at random moments).
pub const SWEEP_EVERY_MS: u64 = 60_000;

/// Which rules the simulated server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Today's: every decision of the team backend uses the database's clock, a lock wait is
    /// bounded (the database ends a session frozen inside a transaction), an expired
    /// Upload's mark is stored with its record, and a complete checks the listed Parts'
    /// bytes are there.
    Current,
    /// The team backend as it was before those four fixes (issue 21, before commit
    /// `65edb5c`'s successors): each instance's own clock decides, a lock is waited for
    /// without bound, the records have no place for the mark, and a complete trusts its
    /// records. Kept so the simulator shows it finds the data loss and the outage those
    /// rules had (see `tests/seeds.rs`).
    BeforeIssue21,
}

/// Where the records and bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One instance on a local directory: an in-memory ledger, every step made durable in
    /// order, recovery at start.
    Directory,
    /// Several instances over one record store with PostgreSQL's semantics (row locks, one
    /// transaction per change) and one object store.
    Shared {
        /// How many instances.
        instances: usize,
    },
}

/// The faults a seed may switch on; the shrinker switches them off one kind at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A request never reaches the server.
    LoseRequest,
    /// The server acts on a request, but its answer never arrives.
    LoseAnswer,
    /// A request reaches the server twice (a proxy's retry).
    Duplicate,
    /// A Part's connection is reset half-way through its body.
    ResetMidBody,
    /// A proxy answers 429 or 503 with `Retry-After` instead of the server.
    Throttle,
    /// A server instance dies while it makes a change durable: the unsynced step is lost.
    ServerCrash,
    /// The disk is full for a while: durable writes fail.
    FullDisk,
    /// A client dies and is started again from its last snapshot.
    ClientCrash,
    /// An instance's clock jumps forward past Uploads' expiry.
    ClockJump,
    /// An instance's clock steps back.
    ClockStepBack,
    /// Instances' clocks disagree from the start (by up to two Upload lifetimes).
    Skew,
    /// An instance freezes inside a transaction, holding its row locks.
    Freeze,
    /// A second client races the first on its Upload (complete, cancel or add a Part).
    Race,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::LoseRequest,
        FaultKind::LoseAnswer,
        FaultKind::Duplicate,
        FaultKind::ResetMidBody,
        FaultKind::Throttle,
        FaultKind::ServerCrash,
        FaultKind::FullDisk,
        FaultKind::ClientCrash,
        FaultKind::ClockJump,
        FaultKind::ClockStepBack,
        FaultKind::Skew,
        FaultKind::Freeze,
        FaultKind::Race,
    ];

    /// The name used on the command line and in traces.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LoseRequest => "lose-request",
            FaultKind::LoseAnswer => "lose-answer",
            FaultKind::Duplicate => "duplicate",
            FaultKind::ResetMidBody => "reset-mid-body",
            FaultKind::Throttle => "throttle",
            FaultKind::ServerCrash => "server-crash",
            FaultKind::FullDisk => "full-disk",
            FaultKind::ClientCrash => "client-crash",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockStepBack => "clock-step-back",
            FaultKind::Skew => "skew",
            FaultKind::Freeze => "freeze",
            FaultKind::Race => "race",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a racing second client does to another client's Upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Race {
    /// Completes it with the Parts stored so far, in order (as the owner would).
    Complete,
    /// Cancels it.
    Cancel,
    /// Adds a Part of its own bytes.
    AddPart,
}

/// One uploading client.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// The file's size.
    pub size: u64,
    /// The Parts' size.
    pub part_size: u64,
    /// Parts in flight at most.
    pub concurrency: usize,
    /// Whether the client sends the md5.
    pub md5: bool,
    /// Whether a give-up cancels the Upload.
    pub cancel_on_failure: bool,
    /// When it starts, in virtual milliseconds.
    pub start_ms: u64,
    /// A second client racing this one, and when (after the first Part is stored).
    pub race: Option<(Race, u64)>,
    /// When the client dies (and restarts from its snapshot), if it does.
    pub crash_at_ms: Vec<u64>,
    /// The File's `expires_after` (seconds after its creation), if it asks for one.
    pub file_ttl_secs: Option<u64>,
}

/// How often each per-message or per-step fault strikes, when switched on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// Per request.
    pub lose_request: f64,
    /// Per answer.
    pub lose_answer: f64,
    /// Per request.
    pub duplicate: f64,
    /// Per Part request.
    pub reset_mid_body: f64,
    /// Per request.
    pub throttle: f64,
    /// Per durable step.
    pub server_crash: f64,
    /// Per durable step (then the disk stays full for a while).
    pub full_disk: f64,
    /// Per transaction that locks a record.
    pub freeze: f64,
}

/// A clock event planned at a moment of the run.
#[derive(Debug, Clone, Copy)]
pub struct ClockEvent {
    /// When (true time, virtual milliseconds).
    pub at_ms: u64,
    /// Which instance's clock.
    pub instance: usize,
    /// By how much it moves (forward when positive).
    pub by_ms: i64,
}

/// Everything a seed decided.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// The rules the servers keep.
    pub rules: Rules,
    /// The backend.
    pub backend: Backend,
    /// Each instance's clock offset from true time at the start, in milliseconds.
    pub clock_offsets_ms: Vec<i64>,
    /// The clients.
    pub clients: Vec<ClientPlan>,
    /// How often faults strike.
    pub rates: Rates,
    /// Clock jumps and steps back.
    pub clock_events: Vec<ClockEvent>,
    /// The fault kinds switched on.
    pub enabled: BTreeSet<FaultKind>,
}

impl Scenario {
    /// The scenario of `seed` under `rules`, with the kinds in `disabled` switched off and
    /// only the clients `keep_client` keeps. Everything is drawn whatever is switched off,
    /// so switching a fault off leaves the rest of the scenario as it was.
    #[expect(
        clippy::too_many_lines,
        reason = "one draw after another, in the order that keeps seeds stable"
    )]
    pub fn generate(
        seed: u64,
        rules: Rules,
        disabled: &BTreeSet<FaultKind>,
        keep_client: &dyn Fn(usize) -> bool,
    ) -> Self {
        let mut rng = Rng::new(seed);
        // One stream per part of the scenario: drawing more of one never shifts another.
        let (mut shape, mut faults, mut times) = (rng.fork(), rng.fork(), rng.fork());
        // Streams added later come after these, so the earlier draws stay as they were.
        let mut files = rng.fork();
        let backend = if shape.chance(0.5) {
            Backend::Directory
        } else {
            Backend::Shared {
                instances: shape.range(2, 3) as usize,
            }
        };
        let instances = match backend {
            Backend::Directory => 1,
            Backend::Shared { instances } => instances,
        };
        // Calm seeds and stormy ones: a rate per kind, zero for about a third of kinds.
        let mut rate = |high: f64| {
            if faults.chance(0.35) {
                0.0
            } else {
                high * faults.unit()
            }
        };
        let rates = Rates {
            lose_request: rate(0.08),
            lose_answer: rate(0.08),
            duplicate: rate(0.1),
            reset_mid_body: rate(0.15),
            throttle: rate(0.15),
            server_crash: rate(0.04),
            full_disk: rate(0.03),
            freeze: rate(0.1),
        };
        let ttl_ms = UPLOAD_TTL_MS;
        let clock_offsets_ms = (0..instances)
            .map(|_| {
                // Up to two Upload lifetimes either way, or close to true time.
                if times.chance(0.5) {
                    times.signed_range(-2 * ttl_ms, 2 * ttl_ms)
                } else {
                    times.signed_range(-1000, 1000)
                }
            })
            .collect();
        let client_count = shape.range(1, 3) as usize;
        let mut clients = Vec::new();
        for index in 0..client_count {
            let size = match shape.range(0, 9) {
                0 => 0,
                1..=2 => shape.range(1, 8),
                _ => shape.range(9, 120),
            };
            let part_size = shape.range(1, 24);
            let racer = shape.chance(0.5).then(|| {
                let kind = *shape.pick(&[Race::Complete, Race::Cancel, Race::AddPart]);
                (kind, shape.range(0, 400))
            });
            let crashes = (0..shape.range(0, 2))
                .map(|_| shape.range(0, 120_000))
                .collect();
            // Some Files expire within the run (the shortest `expires_after` is an hour).
            let file_ttl_secs = files.chance(0.4).then(|| files.range(3600, 7200));
            let plan = ClientPlan {
                size,
                part_size,
                concurrency: shape.range(1, 4) as usize,
                md5: shape.chance(0.7),
                cancel_on_failure: shape.chance(0.5),
                start_ms: shape.range(0, 5000),
                race: racer,
                crash_at_ms: crashes,
                file_ttl_secs,
            };
            if keep_client(index) {
                clients.push(plan);
            }
        }
        let clock_events = (0..times.range(0, 3))
            .map(|_| {
                let forward = times.chance(0.6);
                let by_ms = if forward {
                    times.signed_range(1, 2 * ttl_ms)
                } else {
                    times.signed_range(-2 * ttl_ms, -1)
                };
                ClockEvent {
                    at_ms: times.range(0, 600_000),
                    // One past the instances: the database's clock.
                    instance: times.range(
                        0,
                        if backend == Backend::Directory {
                            0
                        } else {
                            instances as u64
                        },
                    ) as usize,
                    by_ms,
                }
            })
            .collect();
        let enabled = FaultKind::ALL
            .into_iter()
            .filter(|kind| !disabled.contains(kind))
            .collect();
        let mut scenario = Self {
            seed,
            rules,
            backend,
            clock_offsets_ms,
            clients,
            rates,
            clock_events,
            enabled,
        };
        scenario.apply_switches();
        scenario
    }

    /// Zeroes what the switched-off kinds would do.
    fn apply_switches(&mut self) {
        let off = |kind| !self.enabled.contains(&kind);
        let rates = &mut self.rates;
        for (kind, rate) in [
            (FaultKind::LoseRequest, &mut rates.lose_request),
            (FaultKind::LoseAnswer, &mut rates.lose_answer),
            (FaultKind::Duplicate, &mut rates.duplicate),
            (FaultKind::ResetMidBody, &mut rates.reset_mid_body),
            (FaultKind::Throttle, &mut rates.throttle),
            (FaultKind::ServerCrash, &mut rates.server_crash),
            (FaultKind::FullDisk, &mut rates.full_disk),
            (FaultKind::Freeze, &mut rates.freeze),
        ] {
            if off(kind) {
                *rate = 0.0;
            }
        }
        if off(FaultKind::Skew) {
            self.clock_offsets_ms
                .iter_mut()
                .for_each(|offset| *offset = 0);
        }
        self.clock_events.retain(|event| {
            let kind = if event.by_ms > 0 {
                FaultKind::ClockJump
            } else {
                FaultKind::ClockStepBack
            };
            !off(kind)
        });
        for client in &mut self.clients {
            if off(FaultKind::Race) {
                client.race = None;
            }
            if off(FaultKind::ClientCrash) {
                client.crash_at_ms.clear();
            }
        }
    }

    /// A one-line summary, printed at the head of a trace.
    pub fn summary(&self) -> String {
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|client| {
                format!(
                    "{}B/{}B x{}{}{}{}{}",
                    client.size,
                    client.part_size,
                    client.concurrency,
                    if client.md5 { " md5" } else { "" },
                    if client.cancel_on_failure {
                        " cancel-on-failure"
                    } else {
                        ""
                    },
                    client
                        .race
                        .map(|(race, _)| format!(" raced by {race:?}"))
                        .unwrap_or_default(),
                    client
                        .file_ttl_secs
                        .map(|ttl| format!(" File expires after {ttl}s"))
                        .unwrap_or_default(),
                )
            })
            .collect();
        format!(
            "seed {} rules {:?} backend {:?} clocks {:?} ms, clients [{}], faults on: {}",
            self.seed,
            self.rules,
            self.backend,
            self.clock_offsets_ms,
            clients.join("; "),
            self.enabled
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}
