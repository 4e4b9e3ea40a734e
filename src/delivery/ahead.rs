//! How many records a step claims beyond what it sends at once, and when claimed records
//! have waited too long to be sent.
//!
//! The embedded store's claims are in memory and cost nothing to hold, so a step claims one
//! `delivery-concurrency` ahead, only when the records at hand do not fill the free slots.
//!
//! A PostgreSQL claim is a statement and a commit whatever its size, and it runs beside the
//! sends (see `step`), so one worker drains thousands of records a second only when each
//! claim brings enough to keep the sends going until the next one lands. So the batch
//! follows two measures: the pace (sends started per second) and how long a claim takes.
//! It covers [`COVER`] claims at the pace (at least [`MIN_HORIZON`] of sending), at
//! least one `delivery-concurrency` and at most [`MAX_AHEAD`]; the next batch is asked while
//! half the last one is still at hand. Sized by the pace alone, a slow start fed itself: too
//! few claimed, so few sent, so a low pace (pg_drain: 2,612 to 8,251 deliveries/s for one
//! setting, run to run).
//!
//! A claim is also a lease: a record claimed long before it is sent could outlive its lease
//! and be claimed and sent by another instance too. A claimed record not started within half
//! the lease is given back ([`Ahead::stale`]), which leaves the other half for its one
//! attempt (the lease is twice `delivery-timeout` plus 5 s).

use std::time::{Duration, Instant};

/// Claim durations a batch covers at the pace: half the batch is at hand when the next claim
/// is asked, and that claim lands one claim's time later, so two is the least that keeps the
/// sends going; four leave room for a claim slower than the average.
pub const COVER: u32 = 4;

/// Claims cover at least this much sending at the pace, however fast the rounds.
pub const MIN_HORIZON: Duration = Duration::from_millis(20);

/// Most records claimed ahead of their sends, whatever the pace: a bound on the leases one
/// worker holds unsent, and on the memory they take (a copy of each record, about 2 MB).
pub const MAX_AHEAD: usize = 1024;

/// The pace is measured over windows at least this long: short enough that a worker
/// reaches its pace within a second of a backlog appearing.
const WINDOW: Duration = Duration::from_millis(250);

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
    /// How long a claim takes: a moving average of the last ones.
    round: Duration,
}

impl Ahead {
    pub fn new(lease: Option<Duration>, now: Instant) -> Ahead {
        Ahead {
            lease,
            since: now,
            started: 0,
            per_sec: 0.0,
            round: Duration::ZERO,
        }
    }

    /// Notes how long a claim took, from its start to its records taken in.
    pub fn round_took(&mut self, took: Duration) {
        self.round = match self.round.is_zero() {
            true => took,
            false => (self.round * 3 + took) / 4,
        };
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
                let horizon = (self.round * COVER).max(MIN_HORIZON);
                let paced = (self.per_sec * horizon.as_secs_f64()) as usize;
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
    fn leased_claims_cover_rounds_at_the_pace_within_their_bounds() {
        let t0 = Instant::now();
        let mut a = Ahead::new(Some(Duration::from_secs(25)), t0);
        assert_eq!(a.claim(0, 8, 8), 16, "no pace yet: one concurrency ahead");
        a.started(500, t0 + MS(100));
        assert_eq!(a.claim(0, 8, 8), 16, "the window is not whole yet");
        a.started(500, t0 + MS(250));
        assert_eq!(
            a.claim(0, 8, 8),
            8 + 80,
            "4,000/s for the least horizon, 20 ms"
        );
        a.round_took(MS(10));
        assert_eq!(
            a.claim(0, 8, 8),
            8 + 160,
            "4,000/s for four rounds of 10 ms"
        );
        assert_eq!(a.claim(79, 0, 8), 81, "below half of 160 at hand: refill");
        assert_eq!(a.claim(80, 0, 8), 0, "half at hand: no claim yet");
        a.round_took(MS(30));
        assert_eq!(a.claim(0, 0, 8), 240, "rounds of 15 ms on average now");
        a.started(100_000, t0 + MS(500));
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
