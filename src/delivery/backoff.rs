//! Retry timing, as pure functions: exponential backoff with full jitter, and `Retry-After`.
//!
//! Attempt n (1-based, counting the attempt that just failed) waits up to
//! `base * 3^(n-1)`, capped: 0.5 s, 1.5 s, 4.5 s, 13.5 s, ... 15 min with the defaults, the
//! old proxy's first steps continued. Full jitter (a uniform delay between zero and that
//! ceiling) spreads the retries of a backlog that failed together, so a dashboard that comes
//! back is not hit by all of them at once. A `Retry-After` from the dashboard replaces the
//! computed delay, but never beyond the cap: a misbehaving server cannot park records for days.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The ceiling of the delay after the `attempt`-th failed attempt: `base * 3^(attempt-1)`,
/// capped at `cap`.
pub fn ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(40);
    let factor = 3u128.saturating_pow(exp);
    let nanos = base.as_nanos().saturating_mul(factor);
    let capped = nanos.min(cap.as_nanos());
    Duration::from_nanos(capped.min(u64::MAX as u128) as u64)
}

/// The delay before the next attempt: `Retry-After` up to the cap when the dashboard sent
/// one, otherwise a uniform draw from zero to [`ceiling`].
pub fn next_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(cap);
    }
    let top = ceiling(attempt, base, cap);
    let nanos = rng.gen_range(0..=top.as_nanos().min(u64::MAX as u128) as u64);
    Duration::from_nanos(nanos)
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (all three RFC 9110 forms).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceilings_triple_from_the_base_and_stop_at_the_cap() {
        let (base, cap) = (MS(500), Duration::from_secs(15 * 60));
        let table = [
            (1, MS(500)),
            (2, MS(1_500)),
            (3, MS(4_500)),
            (4, MS(13_500)),
            (5, MS(40_500)),
            (6, MS(121_500)),
            (7, MS(364_500)),
            (8, cap),
            (25, cap),
            (u32::MAX, cap),
        ];
        for (attempt, want) in table {
            assert_eq!(ceiling(attempt, base, cap), want, "attempt {attempt}");
        }
        // Attempt 0 (never counted) behaves as the first.
        assert_eq!(ceiling(0, base, cap), MS(500));
    }

    #[test]
    fn jittered_delays_stay_between_zero_and_the_ceiling_and_spread_out() {
        let mut rng = StdRng::seed_from_u64(7);
        let (base, cap) = (MS(500), Duration::from_secs(900));
        for attempt in 1..=10 {
            let top = ceiling(attempt, base, cap);
            let draws: Vec<Duration> = (0..200)
                .map(|_| next_delay(attempt, base, cap, None, &mut rng))
                .collect();
            assert!(draws.iter().all(|d| *d <= top), "attempt {attempt}");
            // Full jitter: both halves of the range are used.
            assert!(draws.iter().any(|d| *d < top / 2));
            assert!(draws.iter().any(|d| *d > top / 2));
        }
    }

    #[test]
    fn retry_after_replaces_the_backoff_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let (base, cap) = (MS(500), Duration::from_secs(60));
        let table = [
            (Duration::from_secs(5), Duration::from_secs(5)),
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_secs(3600), cap),
        ];
        for (ra, want) in table {
            assert_eq!(next_delay(1, base, cap, Some(ra), &mut rng), want);
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_every_http_date_form() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        let table = [
            ("120", Some(Duration::from_secs(120))),
            (" 7 ", Some(Duration::from_secs(7))),
            ("0", Some(Duration::ZERO)),
            (
                "Sun, 06 Nov 1994 08:49:47 GMT",
                Some(Duration::from_secs(10)),
            ),
            (
                "Sunday, 06-Nov-94 08:50:37 GMT",
                Some(Duration::from_secs(60)),
            ),
            ("Sun Nov  6 08:49:38 1994", Some(Duration::from_secs(1))),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }
}
