//! Reads that scan the table, paced by their own cost.
//!
//! Some figures can only be read by scanning rows: the backlog for `max-pending` scans every
//! pending row ([`super::health`]), the accounting counts for `/metrics` every row
//! ([`super::maintenance`]). Read at a fixed cadence, their cost grows with the table and
//! takes more and more of a core from intake; read on demand (a scrape), any number of
//! scrapers multiply it. So each is read again only once [`PAUSE`] times as long as its last
//! read took has passed (and not before [`FLOOR`]); in between the last figures serve. The
//! reads then take at most a twentieth of one core however large the table grows, and a
//! figure is at most `max(FLOOR, PAUSE × last read time)` old when it is served.

use std::time::{Duration, Instant};

/// After a read that took `t`, the next waits `t` times this: the reads take at most a
/// twentieth of one core.
pub const PAUSE: u32 = 20;

/// The shortest time between two reads: the service's sampler runs once a second, and no
/// figure is wanted fresher than that.
pub const FLOOR: Duration = Duration::from_secs(1);

/// When a paced read may run again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pace {
    next: Option<Instant>,
}

impl Pace {
    /// Whether a read is due at `now` (always before the first).
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// Notes a read that started at `started` and took `took`.
    pub fn took(&mut self, started: Instant, took: Duration) {
        self.next = Some(started + interval(took));
    }

    /// When the next read is due (`None` before the first).
    pub fn next(&self) -> Option<Instant> {
        self.next
    }
}

/// The wait between the starts of two reads after one that took `took`.
pub fn interval(took: Duration) -> Duration {
    (took * PAUSE).max(FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_is_due_and_the_next_waits_twenty_times_its_cost_or_a_second() {
        let t0 = Instant::now();
        let mut p = Pace::default();
        assert!(p.due(t0), "nothing read yet");

        // A cheap read: again after the floor, not before.
        p.took(t0, Duration::from_millis(10));
        assert!(!p.due(t0 + Duration::from_millis(999)));
        assert!(p.due(t0 + Duration::from_secs(1)));

        // An expensive read (a large table): again after twenty times as long.
        p.took(t0, Duration::from_millis(400));
        assert_eq!(p.next(), Some(t0 + Duration::from_secs(8)));
        assert!(!p.due(t0 + Duration::from_millis(7_999)));
        assert!(p.due(t0 + Duration::from_secs(8)));

        // The table shrank: the pace follows the last read, not the slowest.
        p.took(t0 + Duration::from_secs(8), Duration::from_millis(20));
        assert!(p.due(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn the_interval_is_the_floor_up_to_fifty_ms_then_twenty_times_the_read() {
        assert_eq!(interval(Duration::ZERO), FLOOR);
        assert_eq!(interval(Duration::from_millis(50)), FLOOR);
        assert_eq!(
            interval(Duration::from_millis(60)),
            Duration::from_millis(1200)
        );
        assert_eq!(
            interval(Duration::from_millis(500)),
            Duration::from_secs(10)
        );
    }
}
