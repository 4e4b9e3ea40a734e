//! How many records a step claims beyond what it sends at once, and when claimed records
//! have waited too long to be sent.
//!
//! The embedded store's claims are in memory and cost nothing to hold, so a step claims one
//! `delivery-concurrency` ahead, only when the records at hand do not fill the free slots.
//!
//! A PostgreSQL claim is a statement and a commit whatever its size, so claiming in larger
//! batches is what lets one worker drain thousands of records a second (benches/README.md,
//! "drain"). But a claim is also a lease: a record claimed long before it is sent could
//! outlive its lease and be claimed and sent by another instance too. So the batch follows
//! the measured pace: what this worker starts in [`HORIZON`], at least one
//! `delivery-concurrency` and at most [`MAX_AHEAD`]; the next batch is asked while half the
//! last one is still at hand, so sends do not wait for the claim; and a claimed record not
//! started within half the lease is given back ([`Ahead::stale`]), which leaves the other
//! half for its one attempt (the lease is twice `delivery-timeout` plus 5 s).

use std::time::{Duration, Instant};

/// Claims cover this much sending at the measured pace: 50 ms at 5,000 records/s is 250
/// records, one claim statement for them instead of 30 at the default concurrency.
pub const HORIZON: Duration = Duration::from_millis(50);

/// Most records claimed ahead of their sends, whatever the pace: a bound on the leases one
/// worker holds unsent, and on the memory they take (a copy of each record).
pub const MAX_AHEAD: usize = 512;

/// The pace is measured over windows at least this long.
const WINDOW: Duration = Duration::from_secs(1);

/// The claim policy of one worker.
#[derive(Debug)]
pub struct Ahead {
    /// The lease of a claim, `None` when claims are in memory (the embedded store).
    lease: Option<Duration>,
    /// The current window: when it began and the sends started in it.
    since: Instant,
    started: usize,
    /// Sends started per second in the last whole window.
    per_sec: f64,
}

impl Ahead {
    pub fn new(lease: Option<Duration>, now: Instant) -> Ahead {
        Ahead {
            lease,
            since: now,
            started: 0,
            per_sec: 0.0,
        }
    }

    /// Notes `n` sends started at `now`.
    pub fn started(&mut self, n: usize, now: Instant) {
        self.started += n;
        let took = now.saturating_duration_since(self.since);
        if took >= WINDOW {
            self.per_sec = self.started as f64 / took.as_secs_f64();
            (self.since, self.started) = (now, 0);
        }
    }

    /// How many to claim when `ready` records are at hand and `unfilled` free send slots
    /// are not yet covered by them (`0`: no claim now).
    pub fn claim(&self, ready: usize, unfilled: usize, concurrency: usize) -> usize {
        let (ahead, refill_below) = match self.lease {
            None => (concurrency, 0),
            Some(_) => {
                let paced = (self.per_sec * HORIZON.as_secs_f64()) as usize;
                let ahead = paced.clamp(concurrency, MAX_AHEAD.max(concurrency));
                (ahead, ahead / 2)
            }
        };
        match ready < unfilled + refill_below {
            true => unfilled + ahead - ready.min(ahead),
            false => 0,
        }
    }

    /// Whether a record claimed at `claimed_at` has waited too long at `now` to be sent:
    /// half its lease is gone.
    pub fn stale(&self, claimed_at: Instant, now: Instant) -> bool {
        self.lease
            .is_some_and(|lease| now.saturating_duration_since(claimed_at) > lease / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn in_memory_claims_keep_one_concurrency_ahead_only_when_the_slots_are_not_covered() {
        let t0 = Instant::now();
        let mut a = Ahead::new(None, t0);
        a.started(50_000, t0 + MS(1000));
        assert_eq!(a.claim(0, 8, 8), 16);
        assert_eq!(a.claim(3, 5, 8), 10, "5 unfilled and 8 ahead, 3 at hand");
        assert_eq!(a.claim(8, 8, 8), 0, "the records at hand fill the slots");
        assert!(!a.stale(t0, t0 + Duration::from_secs(3600)), "no lease");
    }

    #[test]
    fn leased_claims_follow_the_pace_within_their_bounds() {
        let t0 = Instant::now();
        let mut a = Ahead::new(Some(Duration::from_secs(25)), t0);
        assert_eq!(a.claim(0, 8, 8), 16, "no pace yet: one concurrency ahead");
        a.started(2_000, t0 + MS(500));
        assert_eq!(a.claim(0, 8, 8), 16, "the window is not whole yet");
        a.started(2_000, t0 + MS(1000));
        assert_eq!(a.claim(0, 8, 8), 8 + 200, "4,000/s for 50 ms");
        assert_eq!(a.claim(99, 0, 8), 101, "below half of 200 at hand: refill");
        assert_eq!(a.claim(100, 0, 8), 0, "half at hand: no claim yet");
        a.started(100_000, t0 + MS(2000));
        assert_eq!(a.claim(0, 8, 8), 8 + MAX_AHEAD);
        a.started(1, t0 + MS(3000));
        assert_eq!(
            a.claim(0, 8, 8),
            16,
            "a slow pace claims one concurrency ahead"
        );
        assert_eq!(a.claim(0, 64, 64), 128, "never less than the concurrency");
    }

    #[test]
    fn a_claim_waiting_past_half_its_lease_is_stale() {
        let t0 = Instant::now();
        let a = Ahead::new(Some(Duration::from_secs(25)), t0);
        assert!(!a.stale(t0, t0 + MS(12_500)));
        assert!(a.stale(t0, t0 + MS(12_501)));
    }
}
