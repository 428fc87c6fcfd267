//! The event loop: one virtual clock, one queue of events in time order, and the network
//! between the clients and the instances, where messages are lost, duplicated, delayed,
//! cut and throttled as the seed says.

/// Adds a line to a world's trace; the line is formatted only when the run keeps a trace.
macro_rules! trace {
    ($world:expr, $($line:tt)*) => {
        if $world.tracing() {
            let line = format!($($line)*);
            $world.push_trace(&line);
        }
    };
}
pub(crate) use trace;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use http::{Request, Response};
use uploads_core::ledger::Verification;
use uploads_core::limits::Limits;
use uploads_core::rejection::Rejection;

use crate::client::Client;
use crate::oracle::Oracle;
use crate::rng::Rng;
use crate::scenario::{Backend, ClockEvent, Rates, Rules, STORM_MS, Scenario, UPLOAD_TTL_SECS};
use crate::server::{Instance, Store};

/// Who sent a request, so its answer finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A client's exchange: the client, its incarnation, the exchange.
    Client {
        /// The client's index.
        client: usize,
        /// Its incarnation (a crash starts a new one; answers to the old are dropped).
        life: u32,
        /// The exchange.
        exchange: u64,
    },
    /// The second client racing `client`'s Upload; its answers are not read.
    Racer(usize),
    /// A proxy's second copy of a request; its answer goes nowhere.
    Duplicate,
}

/// A request on its way to an instance.
#[derive(Debug, Clone)]
pub struct Message {
    /// Who sent it.
    pub from: Sender,
    /// The request, its body whole (or cut, see `cut`).
    pub request: Request<Vec<u8>>,
    /// The connection was reset before the body ended: the server reads a body cut short.
    pub cut: bool,
    /// The answer will be lost on the way back.
    pub answer_lost: bool,
}

/// How a request failed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listened (the instance was down).
    Refused,
    /// The connection broke (reset mid-body, or the instance died while serving).
    Reset,
}

/// What happens at a moment of the run.
#[derive(Debug)]
pub enum Event {
    /// A client begins its upload (or begins it again after a crash or a give-up).
    ClientStart(usize),
    /// A client's machine asked to be woken now (a retry is due, a request stalled).
    ClientWake(usize, u32),
    /// An answer (or a failure) reaches a client.
    Answer {
        /// Who asked.
        to: Sender,
        /// The answer.
        answer: Result<Response<Vec<u8>>, Failure>,
    },
    /// A client's md5 pass ends.
    Hashed(usize, u32),
    /// A client's snapshot write (or removal, `None`) ends.
    SnapshotWritten(usize, u32, Option<String>),
    /// A client dies.
    ClientCrash(usize),
    /// A request reaches an instance.
    Arrive(usize, Message),
    /// An instance comes back after a crash: recovery, then serving.
    InstanceRestart(usize),
    /// An instance sweeps.
    Sweep(usize),
    /// A clock moves.
    Clock(ClockEvent),
    /// A frozen instance goes on.
    Thaw(usize),
    /// The database ends a session idle inside a transaction for too long.
    SessionEnded(u64),
    /// A request waiting for a row lock gives up (the database's lock timeout).
    LockTimeout(u64),
    /// The second client races a client's Upload.
    Race(usize),
    /// A complete's md5 is computed (it took time to read the Parts): the change is made.
    FinishComplete {
        /// The instance, and its incarnation when the complete began.
        instance: usize,
        /// Its incarnation (a crash since drops the request).
        life: u32,
        /// The request.
        message: Message,
        /// What the ledger checked before the md5.
        verification: Box<Verification>,
        /// The md5 computed.
        md5: Option<[u8; 16]>,
    },
}

/// The whole simulated system.
pub struct World {
    /// What the seed decided.
    pub scenario: Scenario,
    /// True time, virtual milliseconds since the run began.
    pub now: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    /// The draws of faults and delays.
    pub rng: Rng,
    /// Every message, fault and crash, in order, when tracing.
    pub trace: Option<Vec<String>>,
    /// The clients.
    pub clients: Vec<Client>,
    /// The server instances.
    pub instances: Vec<Instance>,
    /// Each clock's offset from true time, in ms: the instances', then the database's.
    pub clock_offsets: Vec<i64>,
    /// The records and bytes.
    pub store: Store,
    /// The limits every server and client uses.
    pub limits: Limits,
    /// What was promised, and the checks.
    pub oracle: Oracle,
    /// The first invariant broken.
    pub violation: Option<String>,
    /// Events handled.
    pub steps: u64,
}

/// Where the virtual clock starts: a fixed date, so Upload ids and times read the same.
pub const EPOCH_MS: u64 = 1_750_000_000_000;

impl World {
    /// A world for `scenario`, with its first events queued.
    pub fn new(scenario: Scenario, tracing: bool) -> Self {
        let mut rng = Rng::new(scenario.seed ^ 0x5EED_0FFA);
        let limits = Limits::default();
        debug_assert_eq!(limits.upload_ttl_secs, UPLOAD_TTL_SECS);
        let instance_count = match scenario.backend {
            Backend::Directory => 1,
            Backend::Shared { instances } => instances,
        };
        let mut clock_offsets = scenario.clock_offsets_ms.clone();
        clock_offsets.push(0);
        let clients = scenario
            .clients
            .iter()
            .enumerate()
            .map(|(index, plan)| Client::new(index, plan.clone(), &mut rng))
            .collect();
        let mut world = Self {
            now: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            rng,
            trace: tracing.then(Vec::new),
            clients,
            instances: (0..instance_count).map(|_| Instance::new()).collect(),
            clock_offsets,
            store: Store::new(scenario.backend),
            limits,
            oracle: Oracle::default(),
            violation: None,
            steps: 0,
            scenario,
        };
        trace!(world, "{}", world.scenario.summary());
        for index in 0..world.clients.len() {
            let plan = &world.scenario.clients[index];
            let (start, crashes) = (plan.start_ms, plan.crash_at_ms.clone());
            world.at(start, Event::ClientStart(index));
            for crash in crashes {
                world.at(start + crash, Event::ClientCrash(index));
            }
        }
        for instance in 0..instance_count {
            let first = world.rng.range(0, crate::scenario::SWEEP_EVERY_MS);
            world.at(first, Event::Sweep(instance));
        }
        for event in world.scenario.clock_events.clone() {
            world.at(event.at_ms, Event::Clock(event));
        }
        if matches!(world.scenario.backend, Backend::Directory) {
            world.instances[0].recover_directory(&mut world.store, &world.limits);
        }
        world
    }

    /// Queues `event` at true time `at` (never in the past).
    pub fn at(&mut self, at: u64, event: Event) {
        let at = at.max(self.now);
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((at, id)));
        self.events.insert(id, event);
    }

    /// Queues `event` `delay` milliseconds from now.
    pub fn after(&mut self, delay: u64, event: Event) {
        self.at(self.now + delay, event);
    }

    /// Whether the run keeps a trace (the `trace!` macro formats a line only then).
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Adds a line to the trace, stamped with the time.
    pub fn push_trace(&mut self, line: &str) {
        let stamp = format!("{:>11}  ", seconds(self.now));
        if let Some(trace) = &mut self.trace {
            trace.push(stamp + line);
        }
    }

    /// Runs events until the horizon, the queue empties, or an invariant breaks.
    ///
    /// # Panics
    /// Never: every queued event is kept until it runs.
    pub fn run(&mut self, horizon_ms: u64) {
        while self.violation.is_none() {
            let Some(Reverse((at, id))) = self.queue.pop() else {
                break;
            };
            if at > horizon_ms {
                break;
            }
            self.now = at;
            let event = self
                .events
                .remove(&id)
                .expect("every queued id has its event");
            self.steps += 1;
            self.handle(event);
            if self.violation.is_none() {
                self.check();
            }
        }
        if self.violation.is_none() {
            self.check_end();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::ClientStart(client) => self.client_start(client),
            Event::ClientWake(client, life) => self.client_wake(client, life),
            Event::Answer { to, answer } => self.answer_arrives(to, answer),
            Event::Hashed(client, life) => self.client_hashed(client, life),
            Event::SnapshotWritten(client, life, json) => {
                self.client_snapshot_written(client, life, json);
            }
            Event::ClientCrash(client) => self.client_crash(client),
            Event::Arrive(instance, message) => self.arrive(instance, message),
            Event::InstanceRestart(instance) => self.instance_restart(instance),
            Event::Sweep(instance) => {
                self.sweep(instance);
                let next = self.rng.range(1, 2 * crate::scenario::SWEEP_EVERY_MS);
                self.after(next, Event::Sweep(instance));
            }
            Event::Clock(event) => {
                trace!(
                    self,
                    "clock {} moves by {} ms",
                    clock_name(event.instance, self.instances.len()),
                    event.by_ms
                );
                self.clock_offsets[event.instance] += event.by_ms;
            }
            Event::Thaw(instance) => self.thaw(instance),
            Event::SessionEnded(transaction) => self.session_ended(transaction),
            Event::LockTimeout(waiter) => self.lock_timeout(waiter),
            Event::Race(client) => self.race(client),
            Event::FinishComplete {
                instance,
                life,
                message,
                verification,
                md5,
            } => {
                self.finish_complete(instance, life, message, *verification, md5);
            }
        }
    }

    /// Sends a request from a client into the network, with the seed's faults.
    pub fn send(&mut self, from: Sender, request: Request<Vec<u8>>, is_part: bool) {
        let rates = self.rates();
        let label = describe(&request);
        if self.rng.chance(rates.throttle) {
            let rejection = if self.rng.chance(0.5) {
                Rejection::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    uploads_core::rejection::INVALID_REQUEST_ERROR,
                    "Rate limit reached. Retry after the time given.",
                    None,
                    None,
                )
            } else {
                Rejection::unavailable("The service is busy. Retry it.")
            };
            let retry_after_ms = self.rng.range(0, 3000);
            let mut answer = rejection_response(&rejection);
            answer
                .headers_mut()
                .insert("retry-after-ms", http::HeaderValue::from(retry_after_ms));
            trace!(
                self,
                "{label} throttled by the proxy: {} retry-after-ms {retry_after_ms}",
                answer.status()
            );
            let delay = self.latency();
            self.after(
                delay,
                Event::Answer {
                    to: from,
                    answer: Ok(answer),
                },
            );
            return;
        }
        if self.rng.chance(rates.lose_request) {
            trace!(self, "{label} lost on the way");
            return;
        }
        let cut = is_part && self.rng.chance(rates.reset_mid_body);
        let answer_lost = !cut && self.rng.chance(rates.lose_answer);
        let instance = self.route();
        if self.rng.chance(rates.duplicate) {
            // A proxy sent it twice: the copy's answer is not the one that returns.
            trace!(self, "{label} duplicated");
            let copy = Message {
                from: Sender::Duplicate,
                request: request.clone(),
                cut: false,
                answer_lost: false,
            };
            let delay = self.latency();
            let other = self.route();
            self.after(delay, Event::Arrive(other, copy));
        }
        let message = Message {
            from,
            request,
            cut,
            answer_lost,
        };
        let delay = self.latency();
        self.after(delay, Event::Arrive(instance, message));
    }

    /// Sends a server's answer back: a reset when the body was cut, nothing when the answer
    /// is lost on the way.
    pub fn reply(&mut self, message: &Message, answer: Result<Response<Vec<u8>>, Failure>) {
        let answer = if message.from == Sender::Duplicate {
            return;
        } else if message.cut {
            Err(Failure::Reset)
        } else if message.answer_lost {
            trace!(
                self,
                "answer to {} lost on the way",
                describe(&message.request)
            );
            return;
        } else {
            answer
        };
        let delay = self.latency();
        self.after(
            delay,
            Event::Answer {
                to: message.from,
                answer,
            },
        );
    }

    /// The fault rates now: the seed's during the storm, none after.
    pub fn rates(&self) -> Rates {
        if self.now < STORM_MS {
            self.scenario.rates
        } else {
            Rates::default()
        }
    }

    /// The instance a load balancer sends a request to: one that serves (its health check
    /// answers), at random; any when none does.
    fn route(&mut self) -> usize {
        let serving: Vec<usize> = (0..self.instances.len())
            .filter(|&index| self.instances[index].serving())
            .collect();
        if serving.is_empty() {
            self.rng.range(0, self.instances.len() as u64 - 1) as usize
        } else {
            *self.rng.pick(&serving)
        }
    }

    /// One way's delay.
    pub fn latency(&mut self) -> u64 {
        self.rng.range(1, 40)
    }

    /// What instance `instance`'s clock reads, in unix seconds.
    pub fn clock_secs(&self, clock: usize) -> u64 {
        let ms = (EPOCH_MS + self.now).saturating_add_signed(self.clock_offsets[clock]);
        ms / 1000
    }

    /// The time that decides a change made by `instance`: the database's on the team
    /// backend under today's rules, else the instance's own.
    pub fn deciding_secs(&self, instance: usize) -> u64 {
        match (self.scenario.backend, self.scenario.rules) {
            (Backend::Shared { .. }, Rules::Current) => self.clock_secs(self.instances.len()),
            _ => self.clock_secs(instance),
        }
    }

    /// Records the first broken invariant.
    pub fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            trace!(self, "VIOLATION: {what}");
            self.violation = Some(what);
        }
    }
}

fn clock_name(clock: usize, instances: usize) -> String {
    if clock == instances {
        "of the database".to_owned()
    } else {
        format!("of instance {clock}")
    }
}

/// Virtual milliseconds as seconds, `12.345s`, for the trace.
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// `POST /v1/uploads/upload_x/parts` and such, for the trace.
pub fn describe<B>(request: &Request<B>) -> String {
    let path = request.uri().path();
    let path = path.rsplit_once("/v1").map_or(path, |(_, rest)| rest);
    let index = request
        .headers()
        .get("x-uploads-part-index")
        .and_then(|value| value.to_str().ok())
        .map(|index| format!(" #{index}"))
        .unwrap_or_default();
    format!("{} {path}{index}", request.method())
}

/// An OpenAI-shaped error answer, with its `Retry-After` headers.
pub fn rejection_response(rejection: &Rejection) -> Response<Vec<u8>> {
    let mut response = Response::new(rejection.body_json());
    *response.status_mut() = rejection.status;
    for (name, value) in rejection.retry_after_headers() {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
