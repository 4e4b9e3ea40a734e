//! Plain-text rendering for people: times, ages, sizes, the 80-column record table and the
//! summary. `--json` bypasses all of it.

use crate::ops::inspect::{Row, Summary};
use crate::store::now_ms;
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

/// Cuts `s` to `width` characters, marking the cut with `~`.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('~');
    out
}

/// `MM-DD HH:MM` (UTC) from an RFC 3339 time, for the table.
fn short_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%m-%d %H:%M")
            .to_string(),
        Err(_) => fit(rfc3339, 11),
    }
}

/// Relative next attempt: `now`, `in 5m`, `-` when not queued.
fn next(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "-".into();
    };
    let secs = (t.timestamp_millis() - now_ms()) / 1000;
    if secs <= 0 {
        "now".into()
    } else {
        format!("in {}", age(secs).split(' ').next().unwrap_or(""))
    }
}

/// Column widths; they add up to 79 with the separating spaces. Long trace IDs are cut
/// (marked `~`); `--json` has them whole.
const W: [usize; 7] = [24, 9, 12, 11, 3, 6, 8];

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:<9} {:<12} {:<11} {:>3} {:<6} {}\n",
        "TRACE ID", "STATUS", "FORM TYPE", "RECEIVED", "ATT", "NEXT", "ERROR"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<9} {:<12} {:<11} {:>3} {:<6} {}\n",
            fit(&r.trace_id, W[0]),
            fit(&r.status, W[1]),
            fit(&r.form_type, W[2]),
            short_time(&r.received_at),
            fit(&r.attempts.to_string(), W[4]),
            fit(&next(r.next_attempt_at.as_deref()), W[5]),
            fit(r.last_error.as_deref().unwrap_or("-"), W[6]),
        ));
    }
    out
}

pub fn summary(s: &Summary) -> String {
    let c = &s.counts;
    let mut out = format!("data directory  {}\n", s.data_dir);
    let oldest = match (&s.oldest_pending_at, s.oldest_pending_age_secs) {
        (Some(t), Some(a)) => format!("   oldest {} ago ({t})", age(a)),
        _ => String::new(),
    };
    out.push_str(&format!("pending         {:>10}{oldest}\n", c.pending));
    out.push_str(&format!("in flight       {:>10}\n", c.in_flight));
    out.push_str(&format!("delivered       {:>10}\n", c.delivered));
    out.push_str(&format!("dead            {:>10}\n", c.dead));
    out.push_str(&format!("quarantined     {:>10}\n", c.quarantined));
    out.push_str(&format!(
        "accepted        {:>10}   purged {}; accounting {}\n",
        c.accepted,
        c.purged,
        if s.balanced {
            "balanced"
        } else {
            "NOT balanced (run outbox verify)"
        }
    ));
    out.push_str(&format!(
        "next attempt    {}\n",
        s.next_attempt_at.as_deref().unwrap_or("-")
    ));
    match &s.delivery {
        None => out.push_str("delivery        not running (offline)\n"),
        Some(d) => {
            let f = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            out.push_str(&format!(
                "delivery        {}, circuit {}\n",
                f("mode"),
                f("circuit")
            ));
            out.push_str(&format!("last success    {}\n", f("last_success_at")));
            let err = d["last_error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            out.push_str(&format!("last failure    {}{err}\n", f("last_failure_at")));
        }
    }
    out.push_str(&format!("disk use        {}\n", size(s.disk_bytes)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_fit_80_columns_whatever_the_data() {
        let row = Row {
            trace_id: "0190a5d2-7c3e-7b1a-9f00-1234567890ab".into(),
            status: "in_flight".into(),
            form_type: "a_very_long_form_type_name".into(),
            received_at: "2025-01-14T09:30:12.418Z".into(),
            received_at_ms: 0,
            attempts: 12345,
            next_attempt_at: Some("2999-01-01T00:00:00.000Z".into()),
            last_error: Some("dashboard answered 503 Service Unavailable".into()),
        };
        for line in table(&[row]).lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
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
