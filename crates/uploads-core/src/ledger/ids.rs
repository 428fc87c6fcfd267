//! Where new ids come from. The ledger never draws randomness itself: it asks an
//! [`IdSource`]. [`SequentialIds`] is deterministic (tests, doctests); [`RandomIds`] turns
//! random bytes the caller supplies into ids shaped like OpenAI's (`upload_` + 24
//! alphanumerics, `part_` + 24, `file-` + 24).
//!
//! The ledger checks every id it mints against the ids in use and draws again on a
//! collision, so a source only has to be unlikely to repeat itself. Upload and File ids are
//! unique in the ledger; Part ids within their Upload (the store keeps Parts there).

use crate::types::{FileId, PartId, UploadId};

/// Mints ids for new Uploads, Parts and Files.
pub trait IdSource {
    /// A new Upload id.
    fn upload_id(&mut self) -> UploadId;
    /// A new Part id.
    fn part_id(&mut self) -> PartId;
    /// A new File id.
    fn file_id(&mut self) -> FileId;
}

/// Deterministic ids: `upload_1`, `upload_2`, …, `part_1`, …, `file-1`, … (one counter per
/// kind). For tests and examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequentialIds {
    uploads: u64,
    parts: u64,
    files: u64,
}

impl SequentialIds {
    /// Starts every counter at 1.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Advances a counter and returns its new value.
fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

impl IdSource for SequentialIds {
    fn upload_id(&mut self) -> UploadId {
        UploadId::new(format!("upload_{}", next(&mut self.uploads)))
    }

    fn part_id(&mut self) -> PartId {
        PartId::new(format!("part_{}", next(&mut self.parts)))
    }

    fn file_id(&mut self) -> FileId {
        FileId::new(format!("file-{}", next(&mut self.files)))
    }
}

/// The number of random alphanumerics after an id's prefix, as in OpenAI's ids.
pub const RANDOM_ID_LEN: usize = 24;

/// The characters of a random id.
const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Bytes at or above this (4 × 62) are skipped: mapping them would favour the first eight
/// characters.
const UNBIASED_BELOW: u8 = 248;

/// Ids made of random bytes the caller supplies, e.g. from the operating system's generator.
///
/// `fill` MUST write uniformly random bytes into the whole slice it is given: the ids'
/// unguessability (~142 bits each) is exactly the fill's. A fill that only ever writes bytes
/// of 248 or more never completes an id.
pub struct RandomIds<F> {
    fill: F,
}

impl<F: FnMut(&mut [u8])> RandomIds<F> {
    /// Ids drawn from `fill`.
    pub fn new(fill: F) -> Self {
        Self { fill }
    }

    /// `prefix` followed by [`RANDOM_ID_LEN`] alphanumerics.
    fn id(&mut self, prefix: &str) -> String {
        let mut id = String::with_capacity(prefix.len() + RANDOM_ID_LEN);
        id.push_str(prefix);
        // Twice what an id needs: one fill almost always suffices despite skipped bytes.
        let mut entropy = [0_u8; 2 * RANDOM_ID_LEN];
        while id.len() < prefix.len() + RANDOM_ID_LEN {
            (self.fill)(&mut entropy);
            let usable = entropy.iter().filter(|&&byte| byte < UNBIASED_BELOW);
            for &byte in usable.take(prefix.len() + RANDOM_ID_LEN - id.len()) {
                id.push(char::from(
                    ALPHANUMERIC[usize::from(byte) % ALPHANUMERIC.len()],
                ));
            }
        }
        id
    }
}

impl<F: FnMut(&mut [u8])> IdSource for RandomIds<F> {
    fn upload_id(&mut self) -> UploadId {
        UploadId::new(self.id("upload_"))
    }

    fn part_id(&mut self) -> PartId {
        PartId::new(self.id("part_"))
    }

    fn file_id(&mut self) -> FileId {
        FileId::new(self.id("file-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_count_per_kind() {
        let mut ids = SequentialIds::new();
        assert_eq!(ids.upload_id().as_str(), "upload_1");
        assert_eq!(ids.upload_id().as_str(), "upload_2");
        assert_eq!(ids.part_id().as_str(), "part_1");
        assert_eq!(ids.file_id().as_str(), "file-1");
        assert_eq!(ids.part_id().as_str(), "part_2");
    }

    #[test]
    fn random_ids_map_bytes_to_alphanumerics() {
        let mut counter = 0_u8;
        let mut ids = RandomIds::new(|buf: &mut [u8]| {
            for byte in buf {
                *byte = counter;
                counter = counter.wrapping_add(1);
            }
        });
        assert_eq!(ids.upload_id().as_str(), "upload_ABCDEFGHIJKLMNOPQRSTUVWX");
        // The counter went on from 48 (the fill is 48 bytes): 48 % 62 is 'w'.
        assert_eq!(ids.part_id().as_str(), "part_wxyz0123456789ABCDEFGHIJ");
        let file = ids.file_id();
        assert!(file.as_str().starts_with("file-"));
        assert_eq!(file.as_str().len(), "file-".len() + RANDOM_ID_LEN);
    }

    #[test]
    fn biased_bytes_are_skipped_and_more_are_drawn() {
        let mut fills = 0;
        let mut ids = RandomIds::new(|buf: &mut [u8]| {
            fills += 1;
            // The first fill is all unusable (248 is the first byte that is); the second all
            // '9' (247, the last usable byte, is 61 modulo 62).
            buf.fill(if fills == 1 { 248 } else { 247 });
        });
        assert_eq!(
            ids.file_id().as_str(),
            format!("file-{}", "9".repeat(RANDOM_ID_LEN))
        );
        assert_eq!(fills, 2);
    }

    proptest::proptest! {
        #[test]
        fn random_ids_are_always_well_formed(seed in proptest::collection::vec(proptest::num::u8::ANY, 1..64)) {
            proptest::prop_assume!(seed.iter().any(|&byte| byte < UNBIASED_BELOW));
            let mut position = 0;
            let mut ids = RandomIds::new(|buf: &mut [u8]| {
                for byte in buf {
                    *byte = seed[position % seed.len()];
                    position += 1;
                }
            });
            let id = ids.part_id();
            let token = id.as_str().strip_prefix("part_").unwrap();
            proptest::prop_assert_eq!(token.len(), RANDOM_ID_LEN);
            proptest::prop_assert!(token.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        }
    }
}
