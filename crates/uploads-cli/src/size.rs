//! Sizes and durations as people write and read them: `64M`, `64MB`, `64MiB`, `1048576`;
//! `3600`, `90m`, `1h`, `30d`; and back again (`64 MiB`, `1.5 GiB`, `2m05s`).

/// Parses a size: a whole number with an optional unit. Binary units (`K`, `M`, `G`, `T`,
/// and `KiB`, `MiB`, `GiB`, `TiB`) count in 1024s, as rclone and aws count `64M`; decimal
/// ones (`KB`, `MB`, `GB`, `TB`) in 1000s; `B` or no unit means bytes. Units are
/// case-insensitive; a space before the unit is allowed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a size", "64MiB")?;
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {:?}: use B, K, M, G, T (also KiB, MiB, ...) or KB, MB, GB, TB",
                text.trim()
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{:?} is too large", text.trim()))
}

/// Parses a duration into seconds: a whole number with an optional unit, `s` (the default),
/// `m`, `h`, `d` or `w`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a duration", "1h or 30d")?;
    let multiplier: u64 = match unit.as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {:?}: use s, m, h, d or w",
                text.trim()
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{:?} is too long", text.trim()))
}

/// Splits `123 unit` into the number and the lower-case unit.
fn split_number(text: &str, what: &str, example: &str) -> Result<(u64, String), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not {what}: expected a whole number with an optional unit, such as {example}")
    })?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// A byte count in binary units, as a person reads it: `12 B`, `64 MiB`, `97.7 KiB`.
#[allow(clippy::cast_precision_loss)] // a display rounded to one decimal
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut whole = bytes / 1024;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        whole /= 1024;
        unit += 1;
    }
    let divisor = 1u64 << (10 * (unit + 1));
    if bytes.is_multiple_of(divisor) {
        return format!("{} {}", bytes / divisor, UNITS[unit]);
    }
    let value = bytes as f64 / divisor as f64;
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A rate in bytes per second, as a person reads it: `12.5 MiB/s`.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)]
pub fn format_rate(bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    format!("{}/s", format_size((bytes as f64 / seconds) as u64))
}

/// A duration as a person reads it: `120ms`, `4.2s`, `12s`, `2m05s`, `1h02m`, `3d04h`.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
pub fn format_duration(seconds: f64) -> String {
    // Under a second, tenths of a second would print a quick transfer as `0.0s`.
    if seconds < 0.9995 {
        return format!("{}ms", (seconds.max(0.0) * 1000.0).round() as u64);
    }
    if seconds < 10.0 {
        return format!("{:.1}s", seconds.max(0.0));
    }
    let total = seconds.round() as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("64M", 64 << 20),
            ("64MB", 64_000_000),
            ("64MiB", 64 << 20),
            ("64 mib", 64 << 20),
            ("8GiB", 8 << 30),
            ("8g", 8 << 30),
            ("16k", 16 << 10),
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

    #[test]
    fn durations_in_every_unit() {
        for (text, seconds) in [
            ("3600", 3600),
            ("3600s", 3600),
            ("90m", 5400),
            ("1h", 3600),
            ("30d", 2_592_000),
            ("2 weeks", 1_209_600),
        ] {
            assert_eq!(parse_duration(text), Ok(seconds), "{text}");
        }
        assert!(
            parse_duration("1 fortnight")
                .unwrap_err()
                .contains("fortnight")
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_read_back_as_people_write_them() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (100_000, "97.7 KiB"),
            (64 << 20, "64 MiB"),
            (67_108_865, "64.0 MiB"),
            (8 << 30, "8 GiB"),
            ((1 << 30) * 3 / 2, "1.5 GiB"),
            (500 << 20, "500 MiB"),
        ] {
            assert_eq!(format_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn durations_read_back_as_people_write_them() {
        assert_eq!(format_duration(0.42), "420ms");
        assert_eq!(format_duration(0.0), "0ms");
        assert_eq!(format_duration(0.0004), "0ms");
        assert_eq!(format_duration(0.12), "120ms");
        assert_eq!(format_duration(0.9994), "999ms");
        assert_eq!(format_duration(0.9996), "1.0s");
        assert_eq!(format_duration(4.24), "4.2s");
        assert_eq!(format_duration(12.4), "12s");
        assert_eq!(format_duration(125.0), "2m05s");
        assert_eq!(format_duration(3720.0), "1h02m");
        assert_eq!(format_duration(273_600.0), "3d04h");
    }
}
