//! The adaptive parts in flight against every fixed setting, on the bench's links.

use std::time::Duration;

use uploads_core::limits::MIB;
use uploads_core::types::Purpose;
use uploads_core::upload::UploadOptions;

use super::*;

const FIXED: [usize; 6] = [1, 2, 4, 8, 16, 32];
const FILE: u64 = 1024 * MIB;

fn wan_slow() -> LinkProfile {
    LinkProfile {
        name: "5 MB/s per connection, 50 ms RTT",
        per_connection: Some(5_000_000),
        shared: None,
        rtt: Duration::from_millis(50),
        router_buffer: 256 * 1024,
    }
}

fn uplink() -> LinkProfile {
    LinkProfile {
        name: "20 MB/s shared, 100 ms RTT",
        per_connection: None,
        shared: Some(20_000_000),
        rtt: Duration::from_millis(100),
        router_buffer: 256 * 1024,
    }
}

fn cloud() -> LinkProfile {
    LinkProfile {
        name: "100 MB/s shared, 10 MB/s per connection, 30 ms RTT",
        per_connection: Some(10_000_000),
        shared: Some(100_000_000),
        rtt: Duration::from_millis(30),
        router_buffer: 256 * 1024,
    }
}

const THROTTLE: Throttle = Throttle {
    every: 4,
    for_ms: 10_000,
    retry_after_ms: 1_000,
};

fn options() -> UploadOptions {
    UploadOptions::new(Purpose::Batch)
}

/// Every fixed setting and the default on `profile`: (best fixed setting, its outcome,
/// fixed 8's outcome, the default's outcome).
fn sweep(profile: LinkProfile, throttle: Option<Throttle>) -> (usize, Outcome, Outcome, Outcome) {
    let fixed: Vec<(usize, Outcome)> = FIXED
        .iter()
        .map(|&n| {
            (
                n,
                simulate(&options().concurrency(n), FILE, profile, throttle),
            )
        })
        .collect();
    let (best, best_outcome) = fixed
        .iter()
        .min_by_key(|(_, outcome)| outcome.elapsed)
        .cloned()
        .expect("settings");
    let eight = fixed[3].1.clone();
    let default = simulate(&options(), FILE, profile, throttle);
    for (n, outcome) in &fixed {
        eprintln!(
            "{}: fixed {n}: {:?}, {} 429s",
            profile.name, outcome.elapsed, outcome.throttled
        );
    }
    eprintln!("{}: default: {default:?}", profile.name);
    (best, best_outcome, eight, default)
}

fn assert_near_best(profile: LinkProfile, throttle: Option<Throttle>) -> (Outcome, Outcome) {
    let (best, best_outcome, eight, default) = sweep(profile, throttle);
    assert!(default.completed, "{default:?}");
    let share = best_outcome.elapsed.as_secs_f64() / default.elapsed.as_secs_f64();
    assert!(
        share >= 0.9,
        "{}: the default took {:?}, {share:.2}x the best fixed setting ({best}: {:?})",
        profile.name,
        default.elapsed,
        best_outcome.elapsed
    );
    (eight, default)
}

#[test]
fn per_connection_caps_the_default_reaches_the_best_fixed_setting() {
    let (_, default) = assert_near_best(wan_slow(), None);
    assert_eq!(default.peak_in_flight, 32);
}

#[test]
fn a_shared_uplink_the_default_reaches_the_best_with_fewer_parts() {
    let (_, default) = assert_near_best(uplink(), None);
    // More parts were tried, and left: the default ends on a few.
    let (_, settled) = default.limits.last().copied().expect("a limit");
    assert!(settled <= 4, "{default:?}");
}

#[test]
fn a_capped_cloud_path_the_default_reaches_the_best_fixed_setting() {
    assert_near_best(cloud(), None);
}

#[test]
fn a_throttling_service_the_default_finishes_near_the_best_with_fewer_429s_at_its_part_size() {
    let (best, best_outcome, eight, default) = sweep(cloud(), Some(THROTTLE));
    assert!(default.completed, "{default:?}");
    let share = best_outcome.elapsed.as_secs_f64() / default.elapsed.as_secs_f64();
    assert!(share >= 0.9, "{share:.2}x the best ({best}): {default:?}");
    // Fixed 32 sends parts of the default's size (the size follows the most parts in
    // flight): backing off makes fewer requests, so fewer are refused.
    let same_parts = simulate(&options().concurrency(32), FILE, cloud(), Some(THROTTLE));
    assert!(
        default.throttled < same_parts.throttled,
        "{default:?} vs {same_parts:?}"
    );
    // Fixed 8 sends parts four times larger, so four times fewer requests: the default does
    // not get under its 429s (parts are cut once, before the first is sent).
    assert!(
        eight.throttled < default.throttled,
        "{eight:?} vs {default:?}"
    );
}

#[test]
fn progress_follows_what_the_link_delivered_within_one_window_of_chunks() {
    let outcome = simulate(&options().concurrency(8), 64 * MIB, wan_slow(), None);
    // Without the sockets' report progress would lead by what the link holds; with it the
    // gap is the chunks handed over since the last report, at most one per part in flight.
    assert!(outcome.largest_progress_gap <= 8 * CHUNK, "{outcome:?}");
}
