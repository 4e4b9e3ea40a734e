//! Parsers for setting values: sizes, durations, rates, lists, booleans.

use std::time::Duration;

/// `64KiB`, `1MiB`, `4GiB`, `512kb`, `100` (bytes). Binary and decimal units alike.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64KiB or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `500ms`, `30s`, `15m`, `24h`, `1h 30m`; a bare `0` is zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 30s or 15m ({e})"))
}

/// A rate `N/s`, `N/m` or `N/h`, or `off`. Returns (count, per).
pub fn rate(s: &str) -> Result<Option<(u32, Duration)>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let err = || format!("{s:?} is not a rate like 10/s, 600/m or off");
    let (n, per) = t.split_once('/').ok_or_else(err)?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(format!("{s:?}: a rate must be at least 1 (or off)"));
    }
    Ok(Some((n, per)))
}

pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// Comma-separated, trimmed, empty items dropped.
pub fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("2 GB"), Ok(2_000_000_000));
        assert!(size("lots").is_err());
        assert!(size("5 parsecs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(rate("10/s"), Ok(Some((10, Duration::from_secs(1)))));
        assert_eq!(rate("600/m"), Ok(Some((600, Duration::from_secs(60)))));
        assert_eq!(rate("off"), Ok(None));
        assert!(rate("0/s").is_err());
        assert!(rate("10").is_err());
    }
}
