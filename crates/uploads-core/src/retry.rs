//! When to retry a failed request, and how long to wait first.
//!
//! ```text
//!   request attempt N fails ──▶ Failure ──▶ RetryPolicy::decide(failure, N, now, deadline, jitter)
//!                                                  │
//!                  ┌───────────────────────────────┴──────────────────────────────┐
//!                  ▼                                                              ▼
//!   RetryAt { at_unix_ms, delay_ms }                                GiveUp(GiveUpReason)
//!   (sleep, then send attempt N + 1)               (not retryable / attempts exhausted / deadline)
//! ```
//!
//! The rules are those of OpenAI's official SDKs: 408, 409, 429 and every 5xx are retried, as
//! are broken connections and timeouts; OpenAI's `x-should-retry` header overrides the status
//! rule both ways. The wait is the server's `retry-after-ms` or `Retry-After` when it gives a
//! positive one (capped), otherwise an exponential backoff with caller-supplied jitter: this
//! crate reads no clock and draws no random numbers.
//!
//! The policy is usable on its own. The [`Uploader`](crate::uploader::Uploader) retries
//! create, complete and cancel through a [`RetryLoop`] each, and each part with the policy.
//!
//! ```text
//!   RetryLoop::new(policy, deadline) ─▶ send attempt ─▶ ok ─▶ done
//!                   ▲                        │
//!                   │                        └─ fails ─▶ on_failure(failure, now, jitter)
//!                   └── RetryAt: sleep delay_ms ─────────────────┤
//!                                                                └─ GiveUp: return the error
//! ```
//!
//! ```
//! use uploads_core::http::{HeaderMap, HeaderValue, StatusCode};
//! use uploads_core::retry::{Failure, RetryDecision, RetryPolicy};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", HeaderValue::from_static("3"));
//! let now = 1_700_000_000_000;
//! let failure = Failure::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, now);
//! let decision = RetryPolicy::default().decide(&failure, 1, now, None, 0.0);
//! assert_eq!(decision, RetryDecision::RetryAt { at_unix_ms: now + 3_000, delay_ms: 3_000 });
//! ```

use http::{HeaderMap, StatusCode};

/// How often and how patiently to retry one request. [`RetryPolicy::default`] is the SDKs';
/// change it with the `with_*` methods (the struct may gain fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per request, the first one included (1 means never retry).
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles with every further attempt.
    pub initial_backoff_ms: u64,
    /// The backoff never grows beyond this.
    pub max_backoff_ms: u64,
    /// A server's `Retry-After` is obeyed up to this long, and cut to it when longer.
    pub max_retry_after_ms: u64,
}

impl RetryPolicy {
    /// This policy with `attempts` attempts per request, the first one included.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// This policy with a backoff from `initial_ms`, doubling up to `max_ms`.
    #[must_use]
    pub fn with_backoff_ms(mut self, initial_ms: u64, max_ms: u64) -> Self {
        self.initial_backoff_ms = initial_ms;
        self.max_backoff_ms = max_ms;
        self
    }

    /// This policy obeying a server's `Retry-After` up to `max_ms`.
    #[must_use]
    pub fn with_max_retry_after_ms(mut self, max_ms: u64) -> Self {
        self.max_retry_after_ms = max_ms;
        self
    }
}

impl Default for RetryPolicy {
    /// Five attempts, 0.5 s doubling up to 8 s (as the official SDKs do), `Retry-After` up
    /// to one minute.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 8_000,
            max_retry_after_ms: 60_000,
        }
    }
}

/// What went wrong with one request attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The service answered with an error status.
    #[error("the service answered {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The wait the service asked for (`retry-after-ms` or `Retry-After`), uncapped.
        retry_after_ms: Option<u64>,
        /// OpenAI's `x-should-retry` header, which overrides the status rule.
        should_retry: Option<bool>,
    },
    /// The connection was reset or broken, or the response was cut short.
    #[error("the connection failed")]
    Connection,
    /// Connecting was refused: nothing listens at the address.
    #[error("the connection was refused")]
    Refused {
        /// Whether the address is this machine's own (a loopback address or `localhost`).
        loopback: bool,
    },
    /// The request or its response took too long.
    #[error("the request timed out")]
    Timeout,
}

impl Failure {
    /// Whether the service throttled the request (429, or 503 with a `Retry-After`), and
    /// the wait it asked for: fewer requests at once may then be wiser, not only a retry.
    pub fn throttling(&self) -> Option<Option<u64>> {
        match self {
            Self::Status {
                status: 429,
                retry_after_ms,
                ..
            } => Some(*retry_after_ms),
            Self::Status {
                status: 503,
                retry_after_ms: Some(wait),
                ..
            } => Some(Some(*wait)),
            Self::Status { .. } | Self::Connection | Self::Refused { .. } | Self::Timeout => None,
        }
    }

    /// Reads an error response: its status, `retry-after-ms` (milliseconds, a fraction
    /// allowed), else `Retry-After` (delta seconds or an HTTP-date, measured against
    /// `now_unix_ms`), and `x-should-retry: true|false`. Header values it cannot read are
    /// ignored, as the official SDKs ignore them.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, now_unix_ms: u64) -> Self {
        let retry_after_ms = header_text(headers, "retry-after-ms")
            .and_then(parse_millis)
            .or_else(|| {
                header_text(headers, "retry-after")
                    .and_then(|value| parse_retry_after(value, now_unix_ms))
            });
        let should_retry = header_text(headers, "x-should-retry").and_then(|value| {
            if value.eq_ignore_ascii_case("true") {
                Some(true)
            } else if value.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        });
        Self::Status {
            status: status.as_u16(),
            retry_after_ms,
            should_retry,
        }
    }

    /// Whether another attempt may succeed: 408, 409, 429 and 5xx, broken connections and
    /// timeouts, unless `x-should-retry` says otherwise. A connection refused on this
    /// machine's own address is not retried: nothing listens there, and waiting seconds for a
    /// server that is not running only delays the error (a refusal over a real network may be
    /// a balancer between restarts, and is retried).
    pub fn is_retryable(&self) -> bool {
        match *self {
            Self::Status {
                should_retry: Some(should_retry),
                ..
            } => should_retry,
            Self::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..),
            Self::Refused { loopback } => !loopback,
            Self::Connection | Self::Timeout => true,
        }
    }

    /// The wait the service asked for, if any.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match *self {
            Self::Status { retry_after_ms, .. } => retry_after_ms,
            Self::Connection | Self::Refused { .. } | Self::Timeout => None,
        }
    }

    /// The reason not to retry this failure at all, if there is one.
    fn refusal(&self) -> Option<GiveUpReason> {
        if self.is_retryable() {
            return None;
        }
        match *self {
            Self::Status {
                status,
                should_retry: Some(false),
                ..
            } => Some(GiveUpReason::ServerSaidNoRetry { status }),
            Self::Status { status, .. } => Some(GiveUpReason::NotRetryable { status }),
            Self::Refused { loopback: true } => Some(GiveUpReason::NothingListening),
            Self::Connection | Self::Refused { .. } | Self::Timeout => None,
        }
    }
}

/// Whether and when to send the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RetryDecision {
    /// Send the next attempt at `at_unix_ms`, `delay_ms` from now.
    RetryAt {
        /// When to send the next attempt, in unix milliseconds.
        at_unix_ms: u64,
        /// How long that is from the `now` the decision was made at.
        delay_ms: u64,
    },
    /// Stop: the request failed for good.
    GiveUp(GiveUpReason),
}

/// Why a request is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The status means the request itself is wrong; sending it again cannot help.
    #[error("status {status} is not retryable")]
    NotRetryable {
        /// The HTTP status code.
        status: u16,
    },
    /// The service said not to retry, with `x-should-retry: false`.
    #[error("the service said not to retry status {status} (x-should-retry: false)")]
    ServerSaidNoRetry {
        /// The HTTP status code.
        status: u16,
    },
    /// Every attempt the policy allows has been made.
    #[error("attempts exhausted after {attempts}")]
    AttemptsExhausted {
        /// How many attempts were made.
        attempts: u32,
    },
    /// The request cannot be sent as it is, and sending it again cannot help: it could not
    /// be built (a bad base URL, a key with invalid characters...), its data could not be
    /// read, the TLS handshake failed (an untrusted certificate, https to a plain-http
    /// port), the peer does not answer in HTTP (http to an https port), or the driver's task
    /// ended without an answer.
    #[error("the request cannot be sent")]
    CannotSend,
    /// A connection to this machine's own address was refused: nothing listens there.
    #[error("nothing listens at the local address")]
    NothingListening,
    /// The next attempt would start after the deadline.
    #[error("a retry at {retry_at_unix_ms} ms would pass the deadline at {deadline_unix_ms} ms")]
    Deadline {
        /// When the next attempt would have been sent, in unix milliseconds.
        retry_at_unix_ms: u64,
        /// The deadline, in unix milliseconds.
        deadline_unix_ms: u64,
    },
}

impl RetryPolicy {
    /// The backoff after `attempt` failed attempts (1 for the first failure):
    /// `min(initial * 2^(attempt-1), max) * (1 - 0.25 * jitter)`, as the official SDKs
    /// compute it. `jitter` is the caller's random number in `[0, 1)`; values outside are
    /// clamped, NaN counts as 0.
    pub fn backoff_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        let full = self
            .initial_backoff_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_backoff_ms);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        scale_ms(full, 1.0 - 0.25 * jitter)
    }

    /// Decides what to do after attempt number `attempt` (counting from 1) failed with
    /// `failure` at `now_unix_ms`.
    ///
    /// Gives up at once on a failure that is not retryable, when `attempt` reaches
    /// [`max_attempts`](Self::max_attempts), or when the next attempt would start after
    /// `deadline_unix_ms`. Otherwise waits the server's delay when it gave a positive one
    /// (capped at [`max_retry_after_ms`](Self::max_retry_after_ms)), else
    /// [`backoff_ms`](Self::backoff_ms). An `attempt` of 0 counts as 1.
    pub fn decide(
        &self,
        failure: &Failure,
        attempt: u32,
        now_unix_ms: u64,
        deadline_unix_ms: Option<u64>,
        jitter: f64,
    ) -> RetryDecision {
        let attempt = attempt.max(1);
        if let Some(reason) = failure.refusal() {
            return RetryDecision::GiveUp(reason);
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: attempt });
        }
        let delay_ms = match failure.retry_after_ms() {
            Some(asked) if asked > 0 => asked.min(self.max_retry_after_ms),
            _ => self.backoff_ms(attempt, jitter),
        };
        let at_unix_ms = now_unix_ms.saturating_add(delay_ms);
        match deadline_unix_ms {
            Some(deadline_unix_ms) if at_unix_ms > deadline_unix_ms => {
                RetryDecision::GiveUp(GiveUpReason::Deadline {
                    retry_at_unix_ms: at_unix_ms,
                    deadline_unix_ms,
                })
            }
            _ => RetryDecision::RetryAt {
                at_unix_ms,
                delay_ms,
            },
        }
    }
}

/// The retries of one request (create, complete, cancel...): counts its attempts and asks
/// the policy after each failure. The adapter sends, sleeps and reads the clock; this decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLoop {
    policy: RetryPolicy,
    deadline_unix_ms: Option<u64>,
    attempts: u32,
}

impl RetryLoop {
    /// The loop of a request retried per `policy`, none of whose retries may start after
    /// `deadline_unix_ms`.
    pub fn new(policy: RetryPolicy, deadline_unix_ms: Option<u64>) -> Self {
        Self {
            policy,
            deadline_unix_ms,
            attempts: 0,
        }
    }

    /// How many attempts have failed so far.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// Reports that the latest attempt failed at `now_unix_ms`, as the policy sees it
    /// (`None` for an error no attempt can fix: the request cannot be sent). Returns when to
    /// send the next attempt, or why to stop; `jitter` is the caller's random number in
    /// `[0, 1)`.
    pub fn on_failure(
        &mut self,
        failure: Option<&Failure>,
        now_unix_ms: u64,
        jitter: f64,
    ) -> RetryDecision {
        self.attempts = self.attempts.saturating_add(1);
        match failure {
            Some(failure) => self.policy.decide(
                failure,
                self.attempts,
                now_unix_ms,
                self.deadline_unix_ms,
                jitter,
            ),
            None => RetryDecision::GiveUp(GiveUpReason::CannotSend),
        }
    }
}

/// A jitter in `[0, 1)` from 8 random bytes (the caller draws them): the top 53 bits, each
/// value an exact f64, evenly spread.
#[allow(clippy::cast_precision_loss)]
pub fn jitter_from_bytes(bytes: [u8; 8]) -> f64 {
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1_u64 << 53) as f64
}

/// `ms * factor`, rounded down; `factor` is in `[0.75, 1]`.
#[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
fn scale_ms(ms: u64, factor: f64) -> u64 {
    // Backoffs are far below 2^53 ms, where f64 is exact; the product is non-negative, and
    // `as` saturates rather than wraps.
    (ms as f64 * factor) as u64
}

/// A header's value as text, trimmed; `None` when absent or not visible ASCII.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// A non-negative, finite number of milliseconds (a fraction allowed), rounded up so a
/// retry never comes before the server asked.
fn parse_millis(value: &str) -> Option<u64> {
    let millis: f64 = value.parse().ok()?;
    millis_from_f64(millis)
}

/// `Retry-After`: delta seconds (a fraction allowed, as the official SDKs allow it), or an
/// HTTP-date turned into the wait from `now_unix_ms` (0 when it has passed).
fn parse_retry_after(value: &str, now_unix_ms: u64) -> Option<u64> {
    if let Ok(seconds) = value.parse::<f64>() {
        return millis_from_f64(seconds * 1000.0);
    }
    let at_unix_ms = parse_http_date(value)?.checked_mul(1000)?;
    Some(at_unix_ms.saturating_sub(now_unix_ms))
}

#[allow(clippy::cast_sign_loss)]
fn millis_from_f64(millis: f64) -> Option<u64> {
    // Checked finite and non-negative first; `as` saturates at u64::MAX.
    (millis.is_finite() && millis >= 0.0).then(|| millis.ceil() as u64)
}

/// Parses an HTTP-date (RFC 9110 section 5.6.7) to unix seconds: the IMF-fixdate
/// `Sun, 06 Nov 1994 08:49:37 GMT`, and the obsolete RFC 850
/// `Sunday, 06-Nov-94 08:49:37 GMT` and asctime `Sun Nov  6 08:49:37 1994` forms.
/// The weekday is not checked: it adds nothing the date does not say.
fn parse_http_date(value: &str) -> Option<u64> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let (day, month, year, time) = match fields.as_slice() {
        [_weekday, day, month, year, time, "GMT"] => {
            (parse_number(day)?, *month, parse_number(year)?, *time)
        }
        [_weekday, date, time, "GMT"] => {
            let mut parts = date.split('-');
            let (day, month, short_year) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || short_year.len() != 2 {
                return None;
            }
            // RFC 850's two-digit year: 70..=99 is the 1900s, the rest the 2000s (unix time
            // starts in 1970, so nothing earlier can be meant).
            let short_year = parse_number(short_year)?;
            let year = if short_year >= 70 {
                1900 + short_year
            } else {
                2000 + short_year
            };
            (parse_number(day)?, month, year, *time)
        }
        [_weekday, month, day, time, year] => {
            (parse_number(day)?, *month, parse_number(year)?, *time)
        }
        _ => return None,
    };
    let month = MONTHS.iter().position(|name| *name == month)? as u64 + 1;
    if !(1970..=9999).contains(&year) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut clock = time.split(':');
    let (hour, minute, second) = (
        parse_number(clock.next()?)?,
        parse_number(clock.next()?)?,
        parse_number(clock.next()?)?,
    );
    // 60 is a leap second, which the grammar allows.
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A short run of ASCII digits (no sign, no spaces) as a number.
fn parse_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar, for years from 1970
/// (Howard Hinnant's `days_from_civil`, unsigned because earlier years are refused).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    // Counting years from March puts the leap day last, so day-of-year is a closed formula.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_on_this_machine_is_final_and_elsewhere_retried() {
        let policy = RetryPolicy::default();
        let local = Failure::Refused { loopback: true };
        assert!(!local.is_retryable());
        assert_eq!(
            policy.decide(&local, 1, 0, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::NothingListening)
        );
        let remote = Failure::Refused { loopback: false };
        assert_eq!(
            policy.decide(&remote, 1, 0, None, 0.0),
            RetryDecision::RetryAt {
                at_unix_ms: 500,
                delay_ms: 500
            }
        );
    }
    use http::HeaderValue;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn failure_with(status: u16, headers: &[(&'static str, &'static str)]) -> Failure {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        Failure::from_response(StatusCode::from_u16(status).unwrap(), &map, NOW)
    }

    fn status(status: u16) -> Failure {
        Failure::Status {
            status,
            retry_after_ms: None,
            should_retry: None,
        }
    }

    fn retry_in(delay_ms: u64) -> RetryDecision {
        RetryDecision::RetryAt {
            at_unix_ms: NOW + delay_ms,
            delay_ms,
        }
    }

    #[test]
    fn each_with_method_changes_its_own_fields_and_keeps_the_others() {
        let policy = RetryPolicy::default()
            .with_max_attempts(2)
            .with_backoff_ms(10, 20)
            .with_max_retry_after_ms(30);
        assert_eq!(
            policy,
            RetryPolicy {
                max_attempts: 2,
                initial_backoff_ms: 10,
                max_backoff_ms: 20,
                max_retry_after_ms: 30,
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=7)
            .map(|attempt| policy.backoff_ms(attempt, 0.0))
            .collect();
        assert_eq!(delays, [500, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        assert_eq!(policy.backoff_ms(u32::MAX, 0.0), 8_000);
        assert_eq!(policy.backoff_ms(0, 0.0), 500);
    }

    #[test]
    fn jitter_shortens_the_backoff_by_up_to_a_quarter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_ms(1, 0.5), 437);
        assert_eq!(policy.backoff_ms(3, 0.5), 1_750);
        assert_eq!(policy.backoff_ms(1, 0.999_999), 375);
        // Out-of-range jitter is clamped, never lengthening the wait or going below 75 %.
        assert_eq!(policy.backoff_ms(1, -3.0), 500);
        assert_eq!(policy.backoff_ms(1, 7.0), 375);
        assert_eq!(policy.backoff_ms(1, f64::NAN), 500);
    }

    #[test]
    fn huge_backoff_settings_saturate() {
        let policy = RetryPolicy {
            initial_backoff_ms: u64::MAX,
            max_backoff_ms: u64::MAX,
            ..RetryPolicy::default()
        };
        assert!(policy.backoff_ms(40, 0.0) > 0);
        let decision = policy.decide(&Failure::Timeout, 2, NOW, None, 0.0);
        assert!(matches!(
            decision,
            RetryDecision::RetryAt {
                at_unix_ms: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_ms_is_read_first_and_rounded_up() {
        let failure = failure_with(429, &[("retry-after-ms", "1500.2"), ("retry-after", "9")]);
        assert_eq!(
            failure,
            Failure::Status {
                status: 429,
                retry_after_ms: Some(1_501),
                should_retry: None
            }
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_fractions() {
        assert_eq!(
            failure_with(503, &[("retry-after", "2")]).retry_after_ms(),
            Some(2_000)
        );
        assert_eq!(
            failure_with(503, &[("retry-after", " 1.5 ")]).retry_after_ms(),
            Some(1_500)
        );
    }

    #[test]
    fn retry_after_takes_http_dates_in_all_three_forms() {
        // NOW is Tue, 14 Nov 2023 22:13:20 GMT.
        let in_ten_seconds = [
            "Tue, 14 Nov 2023 22:13:30 GMT",
            "Tuesday, 14-Nov-23 22:13:30 GMT",
            "Tue Nov 14 22:13:30 2023",
        ];
        for date in in_ten_seconds {
            let mut map = HeaderMap::new();
            map.insert("retry-after", HeaderValue::from_str(date).unwrap());
            let failure = Failure::from_response(StatusCode::SERVICE_UNAVAILABLE, &map, NOW);
            assert_eq!(failure.retry_after_ms(), Some(10_000), "{date}");
        }
        let passed = failure_with(503, &[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(passed.retry_after_ms(), Some(0));
    }

    #[test]
    fn unreadable_headers_are_ignored() {
        for garbage in [
            "soon",
            "-1",
            "NaN",
            "inf",
            "Tue, 31 Nov 2023 22:13:30 GMT",
            "Tue, 14 Nov 2023 24:00:00 GMT",
            "Tue, 14 Nov 1969 22:13:30 GMT",
            "Tue, 14 Nov 2023 22:13:30 CET",
            "Tue, 14 Noc 2023 22:13:30 GMT",
            "Tue, 14 Nov 2023 22:13 GMT",
            "Tue, +4 Nov 2023 22:13:30 GMT",
            // RFC 850 dates have a two-digit year, and three fields to their date.
            "Tuesday, 14-Nov-2023 22:13:30 GMT",
            "Tuesday, 14-Nov-23-01 22:13:30 GMT",
            "Tue, 14 Nov 2023 22:60:00 GMT",
            "Tue, 14 Nov 2023 22:13:61 GMT",
            "Tue, 14 Nov 02023 22:13:30 GMT",
            "Sat, 01 Jan 0000 00:00:00 GMT",
        ] {
            let mut map = HeaderMap::new();
            map.insert("retry-after", HeaderValue::from_str(garbage).unwrap());
            map.insert("retry-after-ms", HeaderValue::from_str(garbage).unwrap());
            map.insert("x-should-retry", HeaderValue::from_str(garbage).unwrap());
            let failure = Failure::from_response(StatusCode::BAD_GATEWAY, &map, NOW);
            assert_eq!(
                failure,
                Failure::Status {
                    status: 502,
                    retry_after_ms: None,
                    should_retry: None
                },
                "{garbage}"
            );
        }
        // A bad `retry-after-ms` falls back to a good `Retry-After`.
        let failure = failure_with(429, &[("retry-after-ms", "later"), ("retry-after", "4")]);
        assert_eq!(failure.retry_after_ms(), Some(4_000));
    }

    #[test]
    fn http_dates_count_from_the_unix_epoch() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        assert_eq!(parse_http_date("Fri, 29 Feb 2023 00:00:00 GMT"), None);
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777),
            "a two-digit year from 70 is of the 1900s"
        );
        assert_eq!(
            parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
            Some(1_483_228_800),
            "a leap second"
        );
    }

    #[test]
    fn retryable_statuses_follow_the_official_sdks() {
        for code in [408, 409, 429, 500, 502, 503, 504, 599] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 405, 413, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        assert!(Failure::Connection.is_retryable());
        assert!(Failure::Timeout.is_retryable());
    }

    #[test]
    fn a_bad_request_gives_up_at_once() {
        let decision = RetryPolicy::default().decide(&status(400), 1, NOW, None, 0.0);
        assert_eq!(
            decision,
            RetryDecision::GiveUp(GiveUpReason::NotRetryable { status: 400 })
        );
        let RetryDecision::GiveUp(reason) = decision else {
            unreachable!()
        };
        assert_eq!(reason.to_string(), "status 400 is not retryable");
    }

    #[test]
    fn x_should_retry_overrides_the_status_both_ways() {
        let policy = RetryPolicy::default();
        let forced = failure_with(400, &[("x-should-retry", "true")]);
        assert_eq!(policy.decide(&forced, 1, NOW, None, 0.0), retry_in(500));
        let refused = failure_with(503, &[("x-should-retry", "false")]);
        assert_eq!(
            policy.decide(&refused, 1, NOW, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::ServerSaidNoRetry { status: 503 })
        );
    }

    #[test]
    fn attempts_run_out() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(&Failure::Connection, 4, NOW, None, 0.0),
            retry_in(4_000)
        );
        let decision = policy.decide(&Failure::Connection, 5, NOW, None, 0.0);
        assert_eq!(
            decision,
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 5 })
        );
        let never = RetryPolicy {
            max_attempts: 0,
            ..policy
        };
        assert!(matches!(
            never.decide(&Failure::Timeout, 1, NOW, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 1 })
        ));
    }

    #[test]
    fn the_server_delay_wins_and_is_capped() {
        let policy = RetryPolicy::default();
        let asked = failure_with(429, &[("retry-after-ms", "20")]);
        assert_eq!(policy.decide(&asked, 3, NOW, None, 0.9), retry_in(20));
        let too_long = failure_with(429, &[("retry-after", "120")]);
        assert_eq!(
            policy.decide(&too_long, 1, NOW, None, 0.0),
            retry_in(60_000)
        );
        // Zero (or a date already passed) means "no opinion": back off as usual.
        let zero = failure_with(429, &[("retry-after", "0")]);
        assert_eq!(policy.decide(&zero, 2, NOW, None, 0.0), retry_in(1_000));
    }

    #[test]
    fn a_retry_past_the_deadline_gives_up() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.decide(&Failure::Timeout, 1, NOW, Some(NOW + 500), 0.0),
            retry_in(500)
        );
        let decision = policy.decide(&Failure::Timeout, 1, NOW, Some(NOW + 499), 0.0);
        assert_eq!(
            decision,
            RetryDecision::GiveUp(GiveUpReason::Deadline {
                retry_at_unix_ms: NOW + 500,
                deadline_unix_ms: NOW + 499
            })
        );
    }

    /// Formats unix seconds as an IMF-fixdate (the inverse of the parser, for the property).
    fn imf_fixdate(unix_seconds: u64) -> String {
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        let days = unix_seconds / 86_400;
        let (mut year, mut day_of_year) = (1970, days);
        while day_of_year
            >= if days_in_month(year, 2) == 29 {
                366
            } else {
                365
            }
        {
            day_of_year -= if days_in_month(year, 2) == 29 {
                366
            } else {
                365
            };
            year += 1;
        }
        let mut month = 1;
        while day_of_year >= days_in_month(year, month) {
            day_of_year -= days_in_month(year, month);
            month += 1;
        }
        let seconds = unix_seconds % 86_400;
        format!(
            "{}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
            WEEKDAYS[(days % 7) as usize],
            day_of_year + 1,
            MONTHS[month as usize - 1],
            seconds / 3_600,
            seconds / 60 % 60,
            seconds % 60
        )
    }

    #[test]
    fn a_retry_loop_counts_attempts_until_the_policy_gives_up() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            max_retry_after_ms: 5_000,
        };
        let mut retries = RetryLoop::new(policy, None);
        let overloaded = failure_with(429, &[("retry-after", "2")]);
        assert_eq!(
            retries.on_failure(Some(&overloaded), NOW, 0.0),
            retry_in(2_000)
        );
        assert_eq!(
            retries.on_failure(Some(&Failure::Connection), NOW, 0.0),
            retry_in(200)
        );
        assert_eq!(
            retries.on_failure(Some(&Failure::Timeout), NOW, 0.0),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 3 })
        );
        assert_eq!(retries.failed_attempts(), 3);
    }

    #[test]
    fn a_retry_loop_stops_at_once_on_what_no_retry_fixes() {
        let mut retries = RetryLoop::new(RetryPolicy::default(), Some(NOW + 100));
        assert_eq!(
            retries.on_failure(None, NOW, 0.0),
            RetryDecision::GiveUp(GiveUpReason::CannotSend)
        );
        assert_eq!(
            retries.on_failure(Some(&status(400)), NOW, 0.0),
            RetryDecision::GiveUp(GiveUpReason::NotRetryable { status: 400 })
        );
        assert_eq!(
            retries.on_failure(Some(&status(503)), NOW, 0.0),
            RetryDecision::GiveUp(GiveUpReason::Deadline {
                retry_at_unix_ms: NOW + 2_000,
                deadline_unix_ms: NOW + 100,
            })
        );
    }

    #[test]
    // Both values are exact in an f64: equality is the point.
    #[allow(clippy::float_cmp)]
    fn jitter_from_bytes_spans_zero_to_just_below_one() {
        assert_eq!(jitter_from_bytes([0; 8]), 0.0);
        assert_eq!(jitter_from_bytes([0, 0, 0, 0, 0, 0, 0, 0x80]), 0.5);
        let top = jitter_from_bytes([0xff; 8]);
        assert!(top < 1.0 && top > 0.999_999, "{top}");
    }

    proptest! {
        #[test]
        fn http_dates_round_trip(unix_seconds in 0_u64..253_402_300_800) {
            let text = imf_fixdate(unix_seconds);
            prop_assert_eq!(parse_http_date(&text), Some(unix_seconds), "{}", text);
        }

        #[test]
        fn any_header_text_is_read_without_panicking(text in "[ -~]{0,40}", now in any::<u64>()) {
            let _ = parse_http_date(&text);
            let _ = parse_retry_after(&text, now);
            let _ = parse_millis(&text);
        }

        #[test]
        fn decisions_respect_attempts_caps_and_deadline(
            attempt in 1_u32..10,
            retry_after in proptest::option::of(0_u64..200_000),
            jitter in 0.0_f64..1.0,
            deadline_in in proptest::option::of(0_u64..100_000),
        ) {
            let policy = RetryPolicy::default();
            let failure = Failure::Status { status: 503, retry_after_ms: retry_after, should_retry: None };
            let deadline = deadline_in.map(|ms| NOW + ms);
            match policy.decide(&failure, attempt, NOW, deadline, jitter) {
                RetryDecision::RetryAt { at_unix_ms, delay_ms } => {
                    prop_assert!(attempt < policy.max_attempts);
                    prop_assert_eq!(at_unix_ms, NOW + delay_ms);
                    prop_assert!(delay_ms <= policy.max_retry_after_ms.max(policy.max_backoff_ms));
                    prop_assert!(deadline.is_none_or(|deadline| at_unix_ms <= deadline));
                }
                RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts }) => {
                    prop_assert_eq!(attempts, attempt);
                    prop_assert!(attempt >= policy.max_attempts);
                }
                RetryDecision::GiveUp(GiveUpReason::Deadline { retry_at_unix_ms, deadline_unix_ms }) => {
                    prop_assert!(retry_at_unix_ms > deadline_unix_ms);
                }
                RetryDecision::GiveUp(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
