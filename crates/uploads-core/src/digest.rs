//! The md5 an Upload's complete request carries: computed by clients over the file, and by
//! services over the listed Parts.

use md5::{Digest, Md5};

/// An md5 computed incrementally.
#[derive(Debug, Clone, Default)]
pub struct Md5Hasher(Md5);

impl Md5Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes, in file order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }

    /// The digest as the lower-case hex the complete request carries.
    pub fn finish_hex(self) -> String {
        to_hex(&self.finish())
    }
}

/// Lower-case hex of a digest.
pub fn to_hex(digest: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    digest
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A digest from 32 hex digits (either case); `None` for anything else.
pub fn parse_hex(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0; 16];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_in_hex_both_ways() {
        let mut hasher = Md5Hasher::new();
        hasher.update(b"hello ");
        hasher.update(b"world");
        let hex = hasher.finish_hex();
        assert_eq!(hex, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            parse_hex(&hex.to_uppercase()).map(|d| to_hex(&d)),
            Some(hex)
        );
        assert_eq!(
            Md5Hasher::new().finish_hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        for bad in [
            "",
            "5eb63bbbe01eeed093cb22bb8f5acdc",
            "5eb63bbbe01eeed093cb22bb8f5acdcz",
            "é".repeat(16).as_str(),
        ] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }
}
