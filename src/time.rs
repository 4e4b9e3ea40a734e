//! Time helpers, one place for the whole crate: the wall clock in epoch milliseconds (how
//! the store keeps every time), the one format times are shown in (RFC 3339, UTC,
//! milliseconds: receipts, health, `inspect`), and [`Now`] for code that takes its time as
//! an argument.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::{Duration, Instant};

/// The wall clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats a time as the service shows times: RFC 3339, UTC, milliseconds (a receipt's
/// `received_at`, say).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats epoch milliseconds as [`format_time`] does.
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(format_time)
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// One moment on both clocks: the wall clock orders records (due times, ages, the times
/// health shows), the monotonic clock times waits (the circuit's cooldown, probes). Code
/// that takes a `Now` instead of reading the clocks can be driven by its tests.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix epoch milliseconds.
    pub wall_ms: i64,
    pub at: Instant,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall_ms: now_ms(),
            at: Instant::now(),
        }
    }

    /// `d` later, on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now {
            wall_ms: self.wall_ms + d.as_millis() as i64,
            at: self.at + d,
        }
    }

    /// A monotonic instant on the wall clock (epoch ms).
    pub fn wall_of(self, at: Instant) -> i64 {
        match at.checked_duration_since(self.at) {
            Some(ahead) => self.wall_ms + ahead.as_millis() as i64,
            None => self.wall_ms - self.at.duration_since(at).as_millis() as i64,
        }
    }

    /// A wall-clock time (epoch ms) as a monotonic instant, never before this one.
    pub fn instant_of(self, wall_ms: i64) -> Instant {
        self.at + Duration::from_millis((wall_ms - self.wall_ms).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_is_utc_millis() {
        let t = DateTime::from_timestamp_millis(1_736_847_012_418).unwrap();
        assert_eq!(format_time(t), "2025-01-14T09:30:12.418Z");
        assert_eq!(rfc3339(1_736_847_012_418), "2025-01-14T09:30:12.418Z");
    }

    #[test]
    fn instants_and_wall_times_convert_both_ways_around_one_moment() {
        let now = Now {
            wall_ms: 1_700_000_000_000,
            at: Instant::now() + Duration::from_secs(60),
        };
        let later = now.after(Duration::from_millis(1500));
        assert_eq!(later.wall_ms, 1_700_000_001_500);
        assert_eq!(now.wall_of(later.at), later.wall_ms);
        assert_eq!(
            now.wall_of(now.at - Duration::from_secs(2)),
            1_699_999_998_000
        );
        assert_eq!(now.instant_of(later.wall_ms), later.at);
        assert_eq!(
            now.instant_of(now.wall_ms - 5_000),
            now.at,
            "never before now"
        );
    }
}
