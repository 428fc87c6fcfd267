//! The per-key request rate ([`Limits::requests_per_minute`](crate::limits::Limits)): a token
//! bucket of capacity N refilled at N per minute, and OpenAI's answers about it.
//!
//! The bucket is kept as one number, its *theoretical arrival time* (GCRA, the generic cell
//! rate algorithm, equivalent to a token bucket): `tat` is when the bucket will be full
//! again. A request at `now` takes one token: `tat' = max(tat, now) + T`, with `T = 60 s / N`
//! the time one token takes to come back; it is allowed when `tat' - now <= N·T` (the bucket
//! had a token), and then `tat'` is stored; refused otherwise, with nothing stored. So a
//! client that was refused waits about `T` (never up to a minute, as with fixed windows),
//! and a burst after a quiet minute gets N requests through at once.
//!
//! ```text
//!  now ─────────────┬──────────────────────── tat' ──▶ time
//!                   │◀── the tokens in use ──▶│
//!                   │◀──────── N·T (one minute): the bucket ────────▶│
//! ```
//!
//! Time is a parameter, in microseconds, from whichever clock the store trusts (the
//! database's when several instances share the bucket). A store that keeps `tat` elsewhere
//! (one row per key in PostgreSQL, updated in one statement) applies the same formula and
//! reads the answer back with [`RateDecision::from_stored`].
//!
//! Every answer, allowed or not, carries OpenAI's headers ([`RateDecision::headers`]):
//! `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
//! `x-ratelimit-reset-requests` (the time until the bucket is full again, formatted as Go
//! formats a duration, as OpenAI does: `20ms`, `1.5s`, `6m0s`); a refusal
//! ([`RateDecision::rejection`]) is 429 with `type: "requests"`, `code: "rate_limit_exceeded"`
//! and `retry-after-ms` / `retry-after`, which OpenAI's SDKs and this workspace's clients
//! honour.
//!
//! ```
//! use uploads_core::rate::RateLimit;
//!
//! let limit = RateLimit::per_minute(2);
//! let now = 1_000_000_000;
//! let first = limit.take(None, now);
//! let second = limit.take(Some(first.tat), now);
//! let third = limit.take(Some(second.tat), now);
//! assert!(first.allowed && second.allowed && !third.allowed);
//! // One token comes back every 30 s: the refusal says so.
//! assert_eq!(third.retry_after_micros, Some(30_000_000));
//! assert!(third.headers().contains(&("retry-after-ms", "30000".to_owned())));
//! assert_eq!(third.rejection().unwrap().status.as_u16(), 429);
//! // 30 s later, one more goes through.
//! assert!(limit.take(Some(second.tat), now + 30_000_000).allowed);
//! ```

use http::StatusCode;

use crate::rejection::Rejection;

/// A minute, in microseconds.
pub const MINUTE_MICROS: u64 = 60_000_000;

/// OpenAI's `type` of a refusal over a request rate.
pub const REQUESTS: &str = "requests";
/// OpenAI's `code` of a refusal over a rate limit.
pub const RATE_LIMIT_EXCEEDED: &str = "rate_limit_exceeded";

/// N requests per minute, for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_minute: u32,
}

impl RateLimit {
    /// A limit of `requests` per minute (at least 1: a limit of 0 is read as 1).
    pub fn per_minute(requests: u32) -> Self {
        Self {
            per_minute: requests.max(1),
        }
    }

    /// N.
    pub fn requests(self) -> u32 {
        self.per_minute
    }

    /// `T`: how long one token takes to come back (microseconds, at least 1).
    pub fn interval_micros(self) -> u64 {
        (MINUTE_MICROS / u64::from(self.per_minute)).max(1)
    }

    /// `N·T`: how far ahead of `now` the bucket may be spent (about a minute).
    pub fn window_micros(self) -> u64 {
        self.interval_micros()
            .saturating_mul(u64::from(self.per_minute))
    }

    /// Takes a token at `now` (microseconds) from the bucket whose stored `tat` is given
    /// (`None`: a key not seen yet, or whose bucket was forgotten full).
    pub fn take(self, tat: Option<u64>, now: u64) -> RateDecision {
        let candidate = tat
            .unwrap_or(now)
            .max(now)
            .saturating_add(self.interval_micros());
        let allowed = candidate - now <= self.window_micros();
        let stored = if allowed {
            candidate
        } else {
            // `tat` is `Some` and past `now`: a fresh bucket always has room.
            tat.unwrap_or(now)
        };
        RateDecision::from_stored(self, stored, allowed, now)
    }

    /// Whether a bucket whose stored `tat` is this is full at `now`: it may be forgotten (a
    /// bounded map evicts these first) with no change to any answer.
    pub fn is_full(self, tat: u64, now: u64) -> bool {
        tat <= now
    }
}

/// The outcome of one request against a key's bucket, with what its answer says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket's theoretical arrival time to keep (microseconds): unchanged when refused.
    pub tat: u64,
    /// N.
    pub limit: u32,
    /// Requests that would be allowed right now after this one.
    pub remaining: u32,
    /// Until the bucket is full again (microseconds).
    pub reset_micros: u64,
    /// For a refusal: until a token is back (microseconds).
    pub retry_after_micros: Option<u64>,
}

impl RateDecision {
    /// The decision a store made with [`RateLimit::take`]'s formula and kept `tat` after
    /// (the new one when `allowed`, the old one when not), at `now`.
    pub fn from_stored(limit: RateLimit, tat: u64, allowed: bool, now: u64) -> Self {
        let interval = limit.interval_micros();
        let window = limit.window_micros();
        let in_use = tat.saturating_sub(now);
        let free = window.saturating_sub(in_use) / interval;
        let retry_after_micros = (!allowed).then(|| {
            // The next token is back when `tat + T - now` fits the window again.
            in_use
                .saturating_add(interval)
                .saturating_sub(window)
                .max(1)
        });
        Self {
            allowed,
            tat,
            limit: limit.requests(),
            remaining: u32::try_from(free.min(u64::from(limit.requests()))).unwrap_or(u32::MAX),
            reset_micros: in_use,
            retry_after_micros,
        }
    }

    /// OpenAI's headers about the limit, on every answer: `x-ratelimit-limit-requests`,
    /// `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`; and for a refusal
    /// `retry-after-ms` (rounded up) and `retry-after` (whole seconds, rounded up).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("x-ratelimit-limit-requests", self.limit.to_string()),
            ("x-ratelimit-remaining-requests", self.remaining.to_string()),
            (
                "x-ratelimit-reset-requests",
                go_duration(self.reset_micros.div_ceil(1000)),
            ),
        ];
        if let Some(wait) = self.retry_after_micros {
            headers.push(("retry-after-ms", wait.div_ceil(1000).to_string()));
            headers.push(("retry-after", wait.div_ceil(1_000_000).to_string()));
        }
        headers
    }

    /// For a refusal: 429 with OpenAI's body (`type: "requests"`, `code:
    /// "rate_limit_exceeded"`, `param: null`). Its answer MUST carry
    /// [`RateDecision::headers`] (as every answer to a limited key does): the wait is there.
    pub fn rejection(&self) -> Option<Rejection> {
        let wait = self.retry_after_micros?;
        Some(Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            REQUESTS,
            format!(
                "Rate limit reached for this API key on requests per min (RPM): Limit {limit}, \
                 Used {limit}, Requested 1. Please try again in {}.",
                go_duration(wait.div_ceil(1000)),
                limit = self.limit
            ),
            None,
            Some(RATE_LIMIT_EXCEEDED),
        ))
    }
}

/// A duration as Go's `time.Duration` prints it, at millisecond precision (as OpenAI's
/// `x-ratelimit-reset-*` headers): `0s`, `20ms`, `1s`, `1.574s`, `6m0s`, `1h0m0s`.
pub fn go_duration(millis: u64) -> String {
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, fraction) = (rest / 1000, rest % 1000);
    let seconds = if fraction == 0 {
        format!("{seconds}s")
    } else {
        let fraction = format!("{fraction:03}");
        format!("{seconds}.{}s", fraction.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A bucket said to be full may be forgotten: taking from it answers exactly as
        /// taking from no bucket at all; one not full may not (it would answer otherwise).
        #[test]
        fn a_full_bucket_answers_as_a_forgotten_one(
            requests in 1_u32..1000,
            now in 0_u64..10_000_000_000,
            ahead in -120_000_000_i64..120_000_000,
        ) {
            let limit = RateLimit::per_minute(requests);
            let tat = now.saturating_add_signed(ahead);
            let forgotten = limit.take(None, now);
            if limit.is_full(tat, now) {
                prop_assert_eq!(limit.take(Some(tat), now), forgotten);
            } else {
                prop_assert_ne!(limit.take(Some(tat), now), forgotten);
            }
        }
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        for (millis, text) in [
            (0, "0s"),
            (1, "1ms"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1574, "1.574s"),
            (1500, "1.5s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (61_010, "1m1.01s"),
            (3_600_000, "1h0m0s"),
        ] {
            assert_eq!(go_duration(millis), text, "{millis}");
        }
    }

    #[test]
    fn a_refusal_is_openais_429_with_every_header() {
        let limit = RateLimit::per_minute(3);
        let now = 5_000_000;
        let mut tat = None;
        for _ in 0..3 {
            let decision = limit.take(tat, now);
            assert!(decision.allowed);
            assert!(decision.rejection().is_none());
            tat = Some(decision.tat);
        }
        let refused = limit.take(tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.tat, tat.unwrap(), "a refusal stores nothing");
        let rejection = refused.rejection().unwrap();
        assert_eq!(rejection.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            String::from_utf8(rejection.body_json()).unwrap(),
            r#"{"error":{"message":"Rate limit reached for this API key on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
        );
        assert_eq!(
            refused.headers(),
            vec![
                ("x-ratelimit-limit-requests", "3".to_owned()),
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                ("x-ratelimit-reset-requests", "1m0s".to_owned()),
                ("retry-after-ms", "20000".to_owned()),
                ("retry-after", "20".to_owned()),
            ]
        );
        // What the clients' retry policy reads back.
        let mut headers = http::HeaderMap::new();
        for (name, value) in refused.headers() {
            headers.insert(name, value.parse().unwrap());
        }
        let failure = crate::retry::Failure::from_response(rejection.status, &headers, 0);
        assert_eq!(failure.retry_after_ms(), Some(20_000));
        assert!(failure.is_retryable());
    }

    #[test]
    fn an_allowed_answer_says_what_is_left_and_when_the_bucket_is_full() {
        let limit = RateLimit::per_minute(60);
        let first = limit.take(None, 0);
        assert_eq!(
            first.headers(),
            vec![
                ("x-ratelimit-limit-requests", "60".to_owned()),
                ("x-ratelimit-remaining-requests", "59".to_owned()),
                ("x-ratelimit-reset-requests", "1s".to_owned()),
            ]
        );
        // Half a token later the bucket is half a second from full.
        let later = limit.take(Some(first.tat), 500_000);
        assert_eq!(later.reset_micros, 1_500_000);
        assert_eq!(later.remaining, 58);
    }

    /// A plain token bucket, counted in whole tokens scaled by N (exact integers): the
    /// reference the GCRA form must agree with.
    struct Bucket {
        /// Tokens × `MINUTE_MICROS` (a token refills in `MINUTE_MICROS / N` µs, so one
        /// microsecond adds N of these units).
        scaled: u128,
        at: u64,
    }

    impl Bucket {
        fn take(&mut self, n: u32, now: u64) -> bool {
            let full = u128::from(n) * u128::from(MINUTE_MICROS);
            let elapsed = u128::from(now.saturating_sub(self.at));
            self.scaled = (self.scaled + elapsed * u128::from(n)).min(full);
            self.at = self.at.max(now);
            let token = u128::from(MINUTE_MICROS);
            if self.scaled >= token {
                self.scaled -= token;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        /// Over any sequence of requests at non-decreasing times, the decision is a token
        /// bucket's (capacity N, N per minute), for an N dividing a minute exactly; a
        /// refusal's wait is exactly what makes the next request pass; `remaining` is what
        /// a burst right now would get through.
        #[test]
        fn it_is_a_token_bucket(
            n in prop::sample::select(vec![1u32, 2, 3, 5, 6, 10, 60, 100, 1000]),
            gaps in prop::collection::vec(0u64..3_000_000, 1..120),
        ) {
            let limit = RateLimit::per_minute(n);
            let mut reference = Bucket { scaled: u128::from(n) * u128::from(MINUTE_MICROS), at: 0 };
            let (mut tat, mut now) = (None, 0u64);
            for gap in gaps {
                now += gap;
                let decision = limit.take(tat, now);
                prop_assert_eq!(decision.allowed, reference.take(n, now));
                if let Some(wait) = decision.retry_after_micros {
                    prop_assert!(!limit.take(tat, now + wait - 1).allowed);
                    prop_assert!(limit.take(tat, now + wait).allowed);
                } else {
                    tat = Some(decision.tat);
                }
                // A burst now gets exactly `remaining` through.
                let mut burst = tat;
                for _ in 0..decision.remaining {
                    let next = limit.take(burst, now);
                    prop_assert!(next.allowed);
                    burst = Some(next.tat);
                }
                prop_assert!(!limit.take(burst, now).allowed);
                prop_assert!(decision.reset_micros <= limit.window_micros());
            }
        }

        /// Whatever the state and the time (a clock that steps back included), the decision
        /// never panics, a refusal always names a wait of at most one interval past the
        /// window, and the headers are well formed.
        #[test]
        fn any_state_gets_a_well_formed_answer(
            n in any::<u32>(),
            tat in prop::option::of(any::<u64>()),
            now in any::<u64>(),
        ) {
            let limit = RateLimit::per_minute(n);
            let decision = limit.take(tat, now);
            prop_assert!(decision.remaining <= limit.requests());
            if let Some(wait) = decision.retry_after_micros {
                prop_assert!(!decision.allowed);
                prop_assert!(wait >= 1);
            }
            for (name, value) in decision.headers() {
                prop_assert!(http::HeaderValue::from_str(&value).is_ok(), "{name}: {value}");
            }
        }
    }
}
