//! Byte sizes as people write them: `64MiB`, `8GiB`, `500MB`, `1048576`.

/// Parses a size: a whole number with an optional unit. Binary units (`KiB`, `MiB`, `GiB`,
/// `TiB`) count in 1024s, decimal ones (`KB`, `MB`, `GB`, `TB`) in 1000s; `B` or no unit
/// means bytes. Units are case-insensitive; a space before the unit is allowed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!(
            "{text:?} is not a size: expected a whole number with an optional unit such as 64MiB"
        )
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("64MiB", 64 << 20),
            ("64 mib", 64 << 20),
            ("8GiB", 8 << 30),
            ("5MB", 5_000_000),
            ("12B", 12),
            ("1TiB", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for text in ["", "MiB", "-1", "1.5GiB", "64 parsecs", "99999999999TiB"] {
            let error = parse_size(text).unwrap_err();
            assert!(
                error.contains(text.trim()) || text.is_empty(),
                "{text}: {error}"
            );
        }
    }
}
