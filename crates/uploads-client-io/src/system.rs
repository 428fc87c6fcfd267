//! The one place the clients read the clock and the one place it draws random bytes: the
//! core takes both as parameters.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use uploads_core::multipart::Boundary;
use uploads_core::retry::jitter_from_bytes;

/// Now, in unix milliseconds (0 before 1970, which no real clock reports).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// 16 random bytes from the operating system. Should it fail (it does not on supported
/// platforms), std's randomly keyed hasher stands in: boundaries and jitter need to be
/// unpredictable to file contents and to other clients, not secret.
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0; 16];
    if getrandom::fill(&mut bytes).is_err() {
        for half in bytes.chunks_mut(8) {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(now_unix_ms());
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes
}

/// A fresh multipart boundary.
pub fn boundary() -> Boundary {
    Boundary::from_entropy(random_bytes())
}

/// A random number in `[0, 1)` for the retry backoff.
pub fn jitter() -> f64 {
    let mut word = [0; 8];
    word.copy_from_slice(&random_bytes()[..8]);
    jitter_from_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_boundaries_differ() {
        for _ in 0..100 {
            let jitter = jitter();
            assert!((0.0..1.0).contains(&jitter), "{jitter}");
        }
        assert_ne!(boundary(), boundary());
        assert!(now_unix_ms() > 1_600_000_000_000);
    }
}
