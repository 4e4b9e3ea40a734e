//! Plain-text rendering for people: times, ages, sizes and the summary (the record table is
//! in [`super::table`]). `--json` bypasses all of it.

use crate::ops::inspect::Summary;
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
        s.next_attempt_at
            .as_deref()
            .map(|t| format!("{t}{}", relative(t)))
            .unwrap_or_else(|| "-".into())
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
            if let Some(t) = d["next_probe_at"].as_str() {
                let why = match f("mode").as_str() {
                    "paused_credentials" => "credentials probe",
                    _ => "circuit probe",
                };
                out.push_str(&format!(
                    "next probe      {t}{} ({why}; nothing is sent before it)\n",
                    relative(t)
                ));
            }
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

/// ` (in 3m 20s)` for a future RFC 3339 time, else nothing.
fn relative(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) if t.timestamp_millis() > now_ms() + 999 => {
            format!(" (in {})", age((t.timestamp_millis() - now_ms()) / 1000))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
