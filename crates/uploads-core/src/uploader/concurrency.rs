//! How many parts are in flight: fixed by the caller, or found from what the link carries.
//!
//! Eight connections is a guess: too few on a long fat path that caps each flow, too many on
//! a shared bottleneck (where they only add memory and queueing), and wrong whenever a
//! service starts answering 429. [`PartsInFlight::Adaptive`] measures instead, in windows of
//! a few round trips, the bytes the link carried (goodput: what left the machine when the
//! driver reports its sockets, what was handed to them otherwise):
//!
//! ```text
//!            a step up paid (>= CLIMB_GAIN): x4 the first time, then x2
//!             ┌──────┐
//!             ▼      │   a step up did not pay: back below it, halved    the half kept the goodput
//!  start ─▶ Climbing ─┴──────────────────────────────────────────▶ Descending ──┐ (>= KEEP_SHARE)
//!  (8)        ▲                                                 │  ▲           │ (not under 2)
//!             │ a clean window                     it did not   │  └───────────┘
//!             │ (back to the level before)                      ▼
//!         Throttled ◀── 429, or 503 with Retry-After ──────── Settled ── every REPROBE_WINDOWS: try x2
//!           (cut by a quarter, once a window, to half the level   │
//!            at most; no new part before Retry-After)           └─ goodput under COLLAPSE_SHARE: climb again
//! ```
//!
//! azcopy tunes its connection count the same way (x4, then x2 while the gain stays above
//! 0.75 of linear). The thresholds here were chosen on the simulated links of `uploads-sim`
//! (`transfer`, on the bench's link model), where the default comes within a tenth of the
//! best fixed setting on each of the bench's paths: a step up that buys under a fifth more
//! is not worth its memory and queueing, and a half that keeps 95% is worth taking. A level
//! never goes over the caller's maximum, nor under one.

use crate::upload::DEFAULT_CONCURRENCY;

/// A step up is kept when the goodput grew at least this much (6/5: a fifth).
const CLIMB_GAIN: Ratio = Ratio(6, 5);
/// The first step up multiplies the level by this; later ones double it.
const FIRST_STEP: u32 = 4;
/// The fewest parts a descent tries: one part alone leaves the link idle for a round trip
/// between parts.
const MIN_DESCENT: u32 = 2;
/// A halving is kept when the goodput stayed at least this share of what it was.
const KEEP_SHARE: Ratio = Ratio(19, 20);
/// A settled level is measured again from scratch when its goodput falls under this share
/// of what it was (the link changed, or other traffic came).
const COLLAPSE_SHARE: Ratio = Ratio(3, 5);
/// A settled level tries the double again after this many windows (the link may have grown).
const REPROBE_WINDOWS: u32 = 16;
/// The shortest and longest measuring window: long enough for new connections to leave
/// slow start on a path of a few tens of milliseconds, short enough to find 32 parts in
/// flight in the first seconds of a gigabyte.
const MIN_WINDOW_MS: u64 = 500;
const MAX_WINDOW_MS: u64 = 2_000;
/// A window lasts this many round trips (as the create request measured one), within the
/// bounds above.
const WINDOW_ROUND_TRIPS: u64 = 8;
/// A part should last this many round trips on its connection (see
/// [`PartsInFlight::part_worth_a_request`]).
const ROUND_TRIPS_PER_PART: u64 = 10;
/// The round trip assumed before one is measured (a resumed upload sends no create).
const DEFAULT_ROUND_TRIP_MS: u64 = 50;
/// The window when no round trip was measured (a resumed upload sends no create).
const DEFAULT_WINDOW_MS: u64 = 1_000;
/// The first part of each window is not measured: connections started by a level change
/// are still opening and leaving slow start. A third of the window.
const SETTLE_DIVISOR: u64 = 3;
/// A throttling answer keeps this share of the level (3/4).
const THROTTLE_KEEP_NUMERATOR: u32 = 3;
const THROTTLE_KEEP_DENOMINATOR: u32 = 4;
/// How long parts stay large after the service last throttled: a service that throttled
/// once a minute ago may do so again.
pub const THROTTLE_MEMORY_MS: u64 = 60_000;
/// How long new part starts wait after a throttling answer without a `Retry-After`.
const DEFAULT_THROTTLE_PAUSE_MS: u64 = 1_000;

/// How many parts may be in flight.
#[derive(Debug, Clone)]
pub(crate) enum PartsInFlight {
    /// Always this many (the caller fixed it).
    Fixed(u32),
    /// Found from what the link carries, up to a maximum.
    Adaptive(Adaptive),
}

impl PartsInFlight {
    /// How many parts may be in flight now.
    pub fn limit(&self) -> u32 {
        match self {
            Self::Fixed(limit) => *limit,
            Self::Adaptive(adaptive) => adaptive.level,
        }
    }

    /// Whether a new part may start at `now_unix_ms` (a service that throttled asked to wait).
    pub fn may_start(&self, now_unix_ms: u64) -> bool {
        self.paused_until().is_none_or(|until| now_unix_ms >= until)
    }

    /// Whether the service throttled in the last [`THROTTLE_MEMORY_MS`] before
    /// `now_unix_ms`: parts are then cut large, so the same bytes take fewer requests.
    pub fn throttled_lately(&self, now_unix_ms: u64) -> bool {
        match self {
            Self::Fixed(_) => false,
            Self::Adaptive(adaptive) => adaptive
                .throttled_at_unix_ms
                .is_some_and(|at| now_unix_ms < at.saturating_add(THROTTLE_MEMORY_MS)),
        }
    }

    /// The smallest part worth a request of its own: what one part in flight carried in
    /// [`ROUND_TRIPS_PER_PART`] round trips at the last measure (0 before one, or when
    /// fixed). A part's request leaves its connection idle for a round trip; a part ten
    /// times longer keeps that under a tenth.
    pub fn part_worth_a_request(&self) -> u64 {
        match self {
            Self::Fixed(_) => 0,
            Self::Adaptive(adaptive) => adaptive.last_goodput.map_or(0, |measured| {
                let per_part = measured.goodput / u64::from(measured.level.max(1));
                let round_trips_ms = adaptive.round_trip_ms.saturating_mul(ROUND_TRIPS_PER_PART);
                per_part.saturating_mul(round_trips_ms) / 1000
            }),
        }
    }

    /// The parts in flight to cut the next part for: while climbing, the level the next step
    /// would reach, so that parts cut during the first seconds do not outlast the rest.
    pub fn cut_level(&self) -> u32 {
        match self {
            Self::Fixed(limit) => *limit,
            Self::Adaptive(adaptive) => match adaptive.state {
                State::Climbing { below: None } => adaptive.level.saturating_mul(FIRST_STEP),
                State::Climbing { below: Some(_) } => adaptive.level.saturating_mul(2),
                State::Descending { .. }
                | State::Settled { .. }
                | State::Reprobing { .. }
                | State::Throttled { .. } => adaptive.level,
            }
            .min(adaptive.max),
        }
    }

    /// Until when new part starts are paused (a service that throttled asked to wait).
    pub fn paused_until(&self) -> Option<u64> {
        match self {
            Self::Fixed(_) => None,
            Self::Adaptive(adaptive) => adaptive.paused_until_unix_ms,
        }
    }

    /// When the machine must look again: a window's measurement starts or ends, or a pause
    /// of new starts ends.
    pub fn next_wakeup(&self) -> Option<u64> {
        match self {
            Self::Fixed(_) => None,
            Self::Adaptive(adaptive) => adaptive.next_wakeup(),
        }
    }

    /// Time has come to `now_unix_ms` and the link has carried `carried` bytes in all.
    pub fn tick(&mut self, now_unix_ms: u64, carried: u64) {
        if let Self::Adaptive(adaptive) = self {
            adaptive.tick(now_unix_ms, carried);
        }
    }

    /// The service throttled a part at `now_unix_ms`, asking to wait `retry_after_ms`.
    pub fn throttled(&mut self, now_unix_ms: u64, retry_after_ms: Option<u64>) {
        if let Self::Adaptive(adaptive) = self {
            adaptive.throttled(now_unix_ms, retry_after_ms);
        }
    }
}

/// A ratio of two whole numbers: goodputs are compared without floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ratio(u64, u64);

/// What one level carried, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Measured {
    level: u32,
    goodput: u64,
}

impl Measured {
    /// Whether this goodput is at least `ratio` times `other`'s.
    fn at_least(&self, ratio: Ratio, other: &Self) -> bool {
        u128::from(self.goodput) * u128::from(ratio.1)
            >= u128::from(other.goodput) * u128::from(ratio.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Doubling while each doubling pays; `below` is the level before this one.
    Climbing { below: Option<Measured> },
    /// Trying half of `above`'s level.
    Descending { above: Measured },
    /// Holding a level that carried `goodput`; tries the double after some windows.
    Settled { at: Measured, windows: u32 },
    /// Trying the double of a settled level.
    Reprobing { settled: Measured },
    /// Backed off after a throttling answer; back to `resume_level` after a clean window.
    Throttled { resume_level: u32 },
}

/// One measuring window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// When the measurement starts (after the settling part).
    measure_from_unix_ms: u64,
    /// The bytes carried then, once it started.
    carried_at_start: Option<u64>,
    ends_at_unix_ms: u64,
}

/// The adaptive level and how it is being found. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct Adaptive {
    max: u32,
    level: u32,
    state: State,
    window_ms: u64,
    window: Option<Window>,
    /// No new part starts before this (the service's `Retry-After`).
    paused_until_unix_ms: Option<u64>,
    /// No second cut before this: answers until then are to requests sent before the cut.
    no_cut_before_unix_ms: Option<u64>,
    /// When the service last throttled.
    throttled_at_unix_ms: Option<u64>,
    /// The round trip create measured (or [`DEFAULT_ROUND_TRIP_MS`]).
    round_trip_ms: u64,
    /// What the last window measured.
    last_goodput: Option<Measured>,
}

impl Adaptive {
    /// Starts at [`DEFAULT_CONCURRENCY`] (or `max`, if lower), climbing.
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        let start = u32::try_from(DEFAULT_CONCURRENCY).unwrap_or(u32::MAX);
        Self {
            max,
            level: start.min(max),
            state: State::Climbing { below: None },
            window_ms: DEFAULT_WINDOW_MS,
            window: None,
            paused_until_unix_ms: None,
            no_cut_before_unix_ms: None,
            throttled_at_unix_ms: None,
            round_trip_ms: DEFAULT_ROUND_TRIP_MS,
            last_goodput: None,
        }
    }

    /// Sizes the windows from a round trip measured at `round_trip_ms`.
    pub fn with_round_trip(mut self, round_trip_ms: u64) -> Self {
        self.round_trip_ms = round_trip_ms;
        self.window_ms = round_trip_ms
            .saturating_mul(WINDOW_ROUND_TRIPS)
            .clamp(MIN_WINDOW_MS, MAX_WINDOW_MS);
        self
    }

    fn next_wakeup(&self) -> Option<u64> {
        let window = self.window.map(|window| match window.carried_at_start {
            None => window.measure_from_unix_ms,
            Some(_) => window.ends_at_unix_ms,
        });
        [window, self.paused_until_unix_ms]
            .into_iter()
            .flatten()
            .min()
    }

    fn start_window(&mut self, now_unix_ms: u64) {
        self.window = Some(Window {
            measure_from_unix_ms: now_unix_ms + self.window_ms / SETTLE_DIVISOR,
            carried_at_start: None,
            ends_at_unix_ms: now_unix_ms + self.window_ms,
        });
    }

    fn tick(&mut self, now_unix_ms: u64, carried: u64) {
        if self
            .paused_until_unix_ms
            .is_some_and(|until| now_unix_ms >= until)
        {
            self.paused_until_unix_ms = None;
        }
        let Some(window) = &mut self.window else {
            // The first tick: the parts start now.
            self.start_window(now_unix_ms);
            return;
        };
        if now_unix_ms < window.measure_from_unix_ms {
            return;
        }
        let Some(carried_at_start) = window.carried_at_start else {
            window.carried_at_start = Some(carried);
            return;
        };
        if now_unix_ms < window.ends_at_unix_ms {
            return;
        }
        let measured_ms = now_unix_ms
            .saturating_sub(window.measure_from_unix_ms)
            .max(1);
        let bytes = u128::from(carried.saturating_sub(carried_at_start));
        let goodput = u64::try_from(bytes * 1000 / u128::from(measured_ms)).unwrap_or(u64::MAX);
        let measured = Measured {
            level: self.level,
            goodput,
        };
        self.last_goodput = Some(measured);
        self.decide(measured);
        self.start_window(now_unix_ms);
    }

    /// The level's next step from what the window just measured. A window that ends in
    /// [`State::Throttled`] was clean: a throttling answer in it would have cut the level and
    /// started a new window.
    fn decide(&mut self, now: Measured) {
        let (state, level) = match self.state {
            State::Throttled { resume_level } => (State::Climbing { below: None }, resume_level),
            State::Climbing { below } => match below {
                Some(below) if !now.at_least(CLIMB_GAIN, &below) => {
                    // The last doubling bought little: the level below is as good, and
                    // fewer may be as good again.
                    (State::Descending { above: below }, below.level / 2)
                }
                _ if self.level >= self.max => (
                    State::Settled {
                        at: now,
                        windows: 0,
                    },
                    self.level,
                ),
                // The first step from a fresh start is the longest: most paths that gain
                // from more parts gain from many more.
                None => (
                    State::Climbing { below: Some(now) },
                    self.level * FIRST_STEP,
                ),
                Some(_) => (State::Climbing { below: Some(now) }, self.level * 2),
            },
            State::Descending { above } => {
                if now.at_least(KEEP_SHARE, &above) {
                    (State::Descending { above: now }, now.level / 2)
                } else {
                    (
                        State::Settled {
                            at: above,
                            windows: 0,
                        },
                        above.level,
                    )
                }
            }
            State::Settled { at, windows } => {
                if !now.at_least(COLLAPSE_SHARE, &at) {
                    (State::Climbing { below: None }, self.level)
                } else if windows + 1 >= REPROBE_WINDOWS && self.level < self.max {
                    (State::Reprobing { settled: at }, self.level * 2)
                } else {
                    (
                        State::Settled {
                            at,
                            windows: windows + 1,
                        },
                        self.level,
                    )
                }
            }
            State::Reprobing { settled } => {
                if now.at_least(CLIMB_GAIN, &settled) {
                    (State::Climbing { below: Some(now) }, self.level * 2)
                } else {
                    (
                        State::Settled {
                            at: settled,
                            windows: 0,
                        },
                        settled.level,
                    )
                }
            }
        };
        // A descent stops at two parts: one alone idles for a round trip between parts.
        let (state, level) = match state {
            State::Descending { above } if level < MIN_DESCENT => (
                State::Settled {
                    at: above,
                    windows: 0,
                },
                above.level,
            ),
            state => (state, level),
        };
        self.state = state;
        self.level = level.clamp(1, self.max);
    }

    fn throttled(&mut self, now_unix_ms: u64, retry_after_ms: Option<u64>) {
        self.throttled_at_unix_ms = Some(now_unix_ms);
        let pause = retry_after_ms.unwrap_or(DEFAULT_THROTTLE_PAUSE_MS);
        let until = now_unix_ms.saturating_add(pause);
        self.paused_until_unix_ms =
            Some(self.paused_until_unix_ms.map_or(until, |at| at.max(until)));
        // Answers to requests sent before the cut say nothing about the level after it.
        if self
            .no_cut_before_unix_ms
            .is_some_and(|at| now_unix_ms < at)
        {
            return;
        }
        let resume_level = match self.state {
            State::Throttled { resume_level } => resume_level,
            State::Settled { at, .. } | State::Reprobing { settled: at } => at.level,
            State::Climbing { .. } | State::Descending { .. } => self.level,
        };
        self.state = State::Throttled { resume_level };
        // A quarter, not half: the answers say the service is busy, not by how much, and
        // on the simulated rate-limited path a half cost a tenth more time for no fewer 429s
        // than a quarter. Never under half the level before the throttling: the pauses for
        // `Retry-After` already thin the requests out, and a service that refuses a share
        // of requests whatever their number would otherwise take the level down to one
        // (the bench's rate-limited path went at 0.67x the best so).
        let floor = (resume_level / 2).max(1);
        self.level = (self.level * THROTTLE_KEEP_NUMERATOR / THROTTLE_KEEP_DENOMINATOR)
            .max(floor)
            .min(self.level)
            .max(1);
        // The next window starts once the pause is over: if it sees no throttling answer,
        // the throttling is over too.
        self.start_window(until);
        self.no_cut_before_unix_ms = self.window.map(|window| window.measure_from_unix_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    /// Drives `adaptive` through whole windows on a link that carries `rate(level)` bytes
    /// per second at each level; returns the levels it chose, one per window.
    fn run(adaptive: &mut Adaptive, windows: usize, rate: impl Fn(u32) -> u64) -> Vec<u32> {
        let mut now = NOW;
        let mut carried = 0;
        adaptive.tick(now, 0);
        let mut levels = Vec::new();
        for _ in 0..windows {
            let level = adaptive.level;
            // Wake when asked, the link carrying at the level's rate in between.
            while let Some(next) = adaptive.next_wakeup() {
                let step = next.saturating_sub(now).max(1);
                carried += rate(level) * step / 1000;
                now += step;
                let before = adaptive.window;
                adaptive.tick(now, carried);
                if adaptive.window.map(|w| w.ends_at_unix_ms) != before.map(|w| w.ends_at_unix_ms) {
                    break;
                }
            }
            levels.push(adaptive.level);
        }
        levels
    }

    #[test]
    fn per_connection_caps_climb_to_the_maximum() {
        let mut adaptive = Adaptive::new(32);
        let levels = run(&mut adaptive, 4, |level| u64::from(level) * 5_000_000);
        // x4 paid, then there is nothing above.
        assert_eq!(levels, [32, 32, 32, 32]);
    }

    #[test]
    fn a_shared_bottleneck_settles_on_fewer_parts_that_carry_as_much() {
        let mut adaptive = Adaptive::new(32);
        // 20 MB/s shared: one connection carries 0.9 of it (request gaps), two or more all.
        let rate = |level: u32| if level == 1 { 18_000_000 } else { 20_000_000 };
        let levels = run(&mut adaptive, 6, rate);
        // 8 -> 32 bought nothing: half of 8 (as good), then 2 (as good), and no lower.
        assert_eq!(levels, [32, 4, 2, 2, 2, 2]);
    }

    #[test]
    fn a_capped_cloud_path_settles_where_doubling_stops_paying() {
        let mut adaptive = Adaptive::new(64);
        // 10 MB/s per connection, 100 MB/s shared.
        let rate = |level: u32| (u64::from(level) * 10_000_000).min(100_000_000);
        let levels = run(&mut adaptive, 6, rate);
        // 8 -> 32 paid 1.25x, 32 -> 64 nothing: half of 32 (as good), then its half
        // carries 0.8x: back to 16.
        assert_eq!(levels, [32, 64, 16, 8, 16, 16]);
    }

    #[test]
    fn a_settled_level_tries_the_double_again_and_climbs_when_the_link_grew() {
        let mut adaptive = Adaptive::new(64);
        let grown = std::cell::Cell::new(false);
        let rate = |level: u32| {
            let cap = if grown.get() {
                200_000_000
            } else {
                100_000_000
            };
            (u64::from(level) * 10_000_000).min(cap)
        };
        let levels = run(&mut adaptive, 6, rate);
        assert_eq!(levels.last(), Some(&16));
        grown.set(true);
        let levels = run(&mut adaptive, REPROBE_WINDOWS as usize + 2, rate);
        // The double paid: climb on to 64 (nothing more there), back to half of 32 (16
        // carries less), and settle on 32.
        let from_reprobe: Vec<u32> = levels.iter().copied().skip_while(|l| *l == 16).collect();
        assert_eq!(from_reprobe[..4], [32, 64, 16, 32], "{levels:?}");
        assert_eq!(levels.last(), Some(&32));
    }

    #[test]
    fn a_throttling_answer_cuts_a_quarter_once_a_window_pauses_starts_and_a_clean_window_restores()
    {
        let mut adaptive = Adaptive::new(32);
        let parts = PartsInFlight::Adaptive(adaptive.clone());
        assert!(parts.may_start(NOW));
        let _ = run(&mut adaptive, 1, |level| u64::from(level) * 5_000_000);
        assert_eq!(adaptive.level, 32);
        adaptive.throttled(NOW + 10_000, Some(2_000));
        adaptive.throttled(NOW + 10_001, Some(500));
        assert_eq!(adaptive.level, 24, "cut once for answers of one window");
        let mut parts = PartsInFlight::Adaptive(adaptive.clone());
        assert!(!parts.may_start(NOW + 11_999));
        parts.tick(NOW + 12_000, 0);
        assert!(parts.may_start(NOW + 12_000));
        let PartsInFlight::Adaptive(mut adaptive) = parts else {
            unreachable!()
        };
        let levels = run(&mut adaptive, 2, |level| u64::from(level) * 5_000_000);
        assert_eq!(
            levels[0], 32,
            "a clean window goes back to the level before"
        );
    }

    #[test]
    fn the_level_stays_within_one_and_the_maximum_and_throttling_keeps_half() {
        let mut adaptive = Adaptive::new(4);
        assert_eq!(adaptive.level, 4);
        let levels = run(&mut adaptive, 3, |level| u64::from(level) * 5_000_000);
        assert!(
            levels.iter().all(|level| (1..=4).contains(level)),
            "{levels:?}"
        );
        // However often the service throttles, the level keeps half of what it was.
        for round in 0..10 {
            adaptive.throttled(NOW + round * 100_000, None);
        }
        assert_eq!(adaptive.level, 2);
        let mut single = Adaptive::new(1);
        single.throttled(NOW, None);
        assert_eq!(single.level, 1);
        assert_eq!(PartsInFlight::Fixed(3).limit(), 3);
    }

    #[test]
    fn windows_follow_the_round_trip_within_bounds() {
        assert_eq!(Adaptive::new(8).with_round_trip(1).window_ms, MIN_WINDOW_MS);
        assert_eq!(Adaptive::new(8).with_round_trip(100).window_ms, 800);
        assert_eq!(
            Adaptive::new(8).with_round_trip(10_000).window_ms,
            MAX_WINDOW_MS
        );
    }

    #[test]
    fn parts_are_cut_for_the_level_ahead_large_after_throttling_and_worth_their_round_trip() {
        let mut adaptive = Adaptive::new(32).with_round_trip(50);
        let parts = PartsInFlight::Adaptive(adaptive.clone());
        // Climbing from 8: the first step goes to 32, and parts are cut for it.
        assert_eq!(parts.cut_level(), 32);
        assert_eq!(parts.part_worth_a_request(), 0, "nothing measured yet");
        let _ = run(&mut adaptive, 1, |level| u64::from(level) * 5_000_000);
        let parts = PartsInFlight::Adaptive(adaptive.clone());
        // 5 MB/s a part, ten round trips of 50 ms: 2.5 MB.
        assert_eq!(parts.part_worth_a_request(), 2_500_000);
        assert!(!parts.throttled_lately(NOW));
        adaptive.throttled(NOW, Some(100));
        let parts = PartsInFlight::Adaptive(adaptive);
        assert!(parts.throttled_lately(NOW + THROTTLE_MEMORY_MS - 1));
        assert!(!parts.throttled_lately(NOW + THROTTLE_MEMORY_MS));
        let fixed = PartsInFlight::Fixed(4);
        assert_eq!((fixed.cut_level(), fixed.part_worth_a_request()), (4, 0));
    }

    #[test]
    fn a_level_settled_at_the_maximum_stays_there_when_the_link_grows() {
        let mut adaptive = Adaptive::new(32);
        let faster = std::cell::Cell::new(1);
        let rate = |level: u32| u64::from(level) * 5_000_000 * faster.get();
        let levels = run(&mut adaptive, 2, rate);
        assert_eq!(levels, [32, 32]);
        // Nothing above the maximum to try: a faster link changes nothing.
        faster.set(2);
        let levels = run(&mut adaptive, REPROBE_WINDOWS as usize + 4, rate);
        assert!(levels.iter().all(|level| *level == 32), "{levels:?}");
    }

    #[test]
    fn a_throttling_answer_once_the_next_window_measures_cuts_again() {
        let mut adaptive = Adaptive::new(32);
        let _ = run(&mut adaptive, 1, |level| u64::from(level) * 5_000_000);
        adaptive.throttled(NOW, Some(1_000));
        assert_eq!(adaptive.level, 24);
        // The next window starts after the pause; its measurement a third of it later.
        let measured_from = NOW + 1_000 + adaptive.window_ms / SETTLE_DIVISOR;
        adaptive.throttled(measured_from - 1, Some(1_000));
        assert_eq!(
            adaptive.level, 24,
            "an answer to a request sent before the cut"
        );
        adaptive.throttled(measured_from, Some(1_000));
        assert_eq!(adaptive.level, 18);
    }
}
