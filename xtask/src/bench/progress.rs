//! The progress gap: how far `uploads put --progress json` reported delivered bytes from what
//! the link emulator truly delivered to the server at the same moment.
//!
//! The client writes one JSON object per line on stderr,
//! `{"event":"progress","time_ms":<unix ms>,"bytes_delivered":N,...}`; other lines (and other
//! events) are ignored. The emulator's timeline ([`super::link::Deliveries`]) counts every
//! byte written to the server, request heads and retried bodies included, so on a path with
//! retries the gap also holds the bytes sent again.

/// One progress report: when, and how many bytes the client said were delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// `bytes_delivered`.
    pub bytes_delivered: u64,
}

/// Reads a progress line; `None` for anything else.
pub fn parse_line(line: &str) -> Option<Reported> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("event")?.as_str()? != "progress" {
        return None;
    }
    Some(Reported {
        time_ms: value.get("time_ms")?.as_u64()?,
        bytes_delivered: value.get("bytes_delivered")?.as_u64()?,
    })
}

/// Every progress report in a client's stderr, in order.
pub fn parse_log(stderr: &str) -> Vec<Reported> {
    stderr.lines().filter_map(parse_line).collect()
}

/// The largest difference, either way, between a report and what `delivered` (unix ms, bytes
/// so far, in time order) says had crossed by that millisecond; `None` without reports.
pub fn largest_gap(reports: &[Reported], delivered: &[(u64, u64)]) -> Option<u64> {
    reports
        .iter()
        .map(|report| {
            let crossed = delivered.partition_point(|(at, _)| *at <= report.time_ms);
            let truly = crossed.checked_sub(1).map_or(0, |last| delivered[last].1);
            report.bytes_delivered.abs_diff(truly)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_read_and_everything_else_is_ignored() {
        let stderr = "\
uploading bench.bin
{\"event\":\"progress\",\"time_ms\":1700000000100,\"file\":\"bench.bin\",\"bytes_delivered\":0,\"bytes_sent\":65536,\"bytes_total\":1048576,\"parts_done\":0,\"parts_total\":2}
{\"event\":\"part_done\",\"time_ms\":1700000000150}
{\"event\":\"progress\",\"time_ms\":1700000000200,\"file\":\"bench.bin\",\"bytes_delivered\":524288,\"bytes_sent\":1048576,\"bytes_total\":1048576,\"parts_done\":1,\"parts_total\":2}
{\"event\":\"progress\",\"time_ms\":\"soon\"}
not json {
";
        assert_eq!(
            parse_log(stderr),
            [
                Reported {
                    time_ms: 1_700_000_000_100,
                    bytes_delivered: 0
                },
                Reported {
                    time_ms: 1_700_000_000_200,
                    bytes_delivered: 524_288
                },
            ]
        );
    }

    #[test]
    fn the_gap_compares_each_report_with_what_had_crossed_by_then() {
        let delivered = [(1000, 100), (1100, 400), (1300, 1000)];
        let reports = |pairs: &[(u64, u64)]| -> Vec<Reported> {
            pairs
                .iter()
                .map(|&(time_ms, bytes_delivered)| Reported {
                    time_ms,
                    bytes_delivered,
                })
                .collect()
        };
        // Before anything crossed, 50 reported is 50 ahead; at 1200, 900 is 500 ahead of 400.
        assert_eq!(
            largest_gap(&reports(&[(900, 50), (1200, 900)]), &delivered),
            Some(500)
        );
        // Behind counts too: 200 at 1300 is 800 short of 1000.
        assert_eq!(largest_gap(&reports(&[(1300, 200)]), &delivered), Some(800));
        assert_eq!(largest_gap(&[], &delivered), None);
    }
}
