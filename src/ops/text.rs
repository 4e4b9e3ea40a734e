//! Words for people, shared by the commands: times read from flags, and times, ages, sizes
//! and counts written. `--json` bypasses the writing.

use crate::time::now_ms;
use anyhow::bail;

/// Parses a time for `--since`/`--until`/`--before`: RFC 3339, a date (midnight UTC), or an
/// age such as `2h` or `7d` meaning that long before now. Returns epoch ms.
pub fn parse_when(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis());
    }
    if let Ok(age) = humantime::parse_duration(s) {
        return Ok(now_ms() - age.as_millis() as i64);
    }
    bail!("cannot read {s:?} as a time: use RFC 3339 (2025-01-14T09:30:00Z), a date (2025-01-14) or an age (2h, 7d)")
}

/// `1 record`, `3 records`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3m 20s`, `2h 5m`, `4d 1h`: the two largest units.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m {}s", s % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// A duration as the settings write it (`24h`, `30m`, `90s`, `500ms`): its largest whole unit.
pub fn span(d: std::time::Duration) -> String {
    let (ms, s) = (d.as_millis(), d.as_secs());
    match () {
        _ if d.subsec_millis() != 0 || s == 0 => format!("{ms}ms"),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_written_as_the_settings_are() {
        use std::time::Duration;
        let cases = [
            (86_400_000, "24h"),
            (1_800_000, "30m"),
            (90_000, "90s"),
            (500, "500ms"),
            (0, "0ms"),
        ];
        for (ms, want) in cases {
            assert_eq!(span(Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn times_parse_as_dates_instants_or_ages() {
        assert_eq!(parse_when("2025-01-14").unwrap(), 1_736_812_800_000);
        assert_eq!(
            parse_when("2025-01-14T00:00:01Z").unwrap(),
            1_736_812_801_000
        );
        let two_hours_ago = parse_when("2h").unwrap();
        assert!((now_ms() - two_hours_ago - 7_200_000).abs() < 60_000);
        assert!(parse_when("last tuesday").is_err());
        assert_eq!(age(200), "3m 20s");
        assert_eq!(size(1536), "1.5 KiB");
    }
}
