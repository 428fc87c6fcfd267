//! The server's one place that draws random bytes: a seed from the operating system at
//! startup, stretched into ids, request ids and such. Ids need to be unique and hard to
//! guess, not secret: isolation rests on owner checks, never on an id staying unknown.

use std::sync::atomic::{AtomicU64, Ordering};

use md5::{Digest, Md5};

/// A stream of unpredictable bytes: md5(seed, counter) blocks.
#[derive(Debug)]
pub struct Entropy {
    seed: [u8; 32],
    counter: AtomicU64,
}

impl Entropy {
    /// Seeds from the operating system (startup only).
    pub fn from_os() -> std::io::Result<Self> {
        let mut seed = [0; 32];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        Ok(Self {
            seed,
            counter: AtomicU64::new(0),
        })
    }

    /// Fills `buffer` with fresh bytes.
    pub fn fill(&self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(16) {
            let counter = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut hasher = Md5::new();
            hasher.update(self.seed);
            hasher.update(counter.to_le_bytes());
            let block: [u8; 16] = hasher.finalize().into();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    /// A request id as OpenAI's look: `req_` and 32 hex digits.
    pub fn request_id(&self) -> String {
        let mut bytes = [0; 16];
        self.fill(&mut bytes);
        format!("req_{}", uploads_core::digest::to_hex(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_do_not_repeat() {
        let entropy = Entropy::from_os().unwrap();
        let mut a = [0; 40];
        let mut b = [0; 40];
        entropy.fill(&mut a);
        entropy.fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a[..16], a[16..32]);
        let id = entropy.request_id();
        assert_eq!(id.len(), 36);
        assert!(id.starts_with("req_"));
    }
}
