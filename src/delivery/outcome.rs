//! How a record changes when an attempt settles: pure functions that the worker runs inside
//! `Store::settle` (which may run them more than once, so they take the time and the random
//! delay as arguments). A claim changes nothing stored (see `crate::store::claims`).

use super::classify::{Reply, Verdict};
use super::client::{Attempt, KEPT_BODY};
use crate::store::{Record, Status};
use std::time::Duration;

/// The retry limits from the delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_attempts: u32,
    pub max_age: Duration,
    /// Whether the payload is dropped at delivery (a retention of zero).
    pub drop_payload_at_delivery: bool,
}

/// Whether `stored` is still the record that was claimed: claims keep operators' changes out
/// (see `crate::store::claims`), so this is a last check that no other writer moved it.
pub fn unchanged_since_claim(stored: &Record, claimed: &Record) -> bool {
    stored.status.is_queued()
        && stored.attempts == claimed.attempts
        && stored.next_attempt_at_ms == claimed.next_attempt_at_ms
        && stored.payload_hash == claimed.payload_hash
}

/// `detail` cut to at most [`KEPT_BODY`] bytes on a character boundary.
fn kept(detail: &str) -> String {
    let mut end = detail.len().min(KEPT_BODY);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail[..end].to_owned()
}

fn describe(attempt: &Attempt) -> String {
    match (attempt.reply, attempt.detail.is_empty()) {
        (Reply::Status(code), true) => format!("HTTP {code} with an empty body"),
        _ => kept(&attempt.detail),
    }
}

/// The record after an attempt with `verdict`. `delay` is the backoff for a retry (drawn
/// by the caller). Pause does not count as an attempt: the record is simply due again.
pub fn settle(
    r: &Record,
    attempt: &Attempt,
    verdict: Verdict,
    now_ms: i64,
    delay: Duration,
    limits: Limits,
) -> Record {
    let mut n = r.clone();
    n.last_attempt_at_ms = Some(now_ms);
    n.last_status_code = match attempt.reply {
        Reply::Status(code) => Some(code),
        Reply::Transport(_) => None,
    };
    if verdict == Verdict::Pause {
        n.status = Status::Pending;
        n.next_attempt_at_ms = now_ms;
        n.last_error = Some("the dashboard rejected the credentials".into());
        return n;
    }
    n.attempts = r.attempts.saturating_add(1);
    match verdict {
        Verdict::Delivered => {
            n.status = Status::Delivered;
            n.delivered_at_ms = Some(now_ms);
            n.last_error = None;
            if limits.drop_payload_at_delivery {
                n.payload = None;
            }
        }
        Verdict::Dead => dead(&mut n, describe(attempt), now_ms),
        Verdict::Retry => {
            let age = Duration::from_millis(now_ms.saturating_sub(r.received_at_ms).max(0) as u64);
            if n.attempts >= limits.max_attempts || age >= limits.max_age {
                dead(&mut n, describe(attempt), now_ms);
            } else {
                n.status = Status::Pending;
                n.next_attempt_at_ms = now_ms.saturating_add(delay.as_millis() as i64);
                n.last_error = Some(describe(attempt));
            }
        }
        Verdict::Pause => unreachable!("handled above"),
    }
    n
}

fn dead(n: &mut Record, error: String, now_ms: i64) {
    n.status = Status::Dead;
    n.dead_at_ms = Some(now_ms);
    n.last_error = Some(error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::classify::Transport;
    use crate::store::record::sample;

    const LIMITS: Limits = Limits {
        max_attempts: 3,
        max_age: Duration::from_secs(3600),
        drop_payload_at_delivery: true,
    };
    const T0: i64 = 1_700_000_000_000;

    fn attempt(reply: Reply, detail: &str) -> Attempt {
        Attempt {
            reply,
            retry_after: None,
            detail: detail.into(),
            elapsed: Duration::ZERO,
        }
    }

    fn claimed(attempts: u32) -> Record {
        let mut r = sample("trace-outcome");
        r.attempts = attempts;
        r
    }

    #[test]
    fn a_settle_checks_the_record_is_the_one_claimed_and_stamps_the_attempt() {
        let c = claimed(0);
        assert!(unchanged_since_claim(&c, &c));
        let mut replayed = c.clone();
        replayed.next_attempt_at_ms += 1;
        assert!(!unchanged_since_claim(&replayed, &c));
        let mut dead = c.clone();
        dead.status = Status::Dead;
        assert!(!unchanged_since_claim(&dead, &c));
        let n = settle(
            &c,
            &attempt(Reply::Status(503), ""),
            Verdict::Retry,
            T0 + 5,
            Duration::ZERO,
            LIMITS,
        );
        assert_eq!(n.last_attempt_at_ms, Some(T0 + 5));
    }

    #[test]
    fn each_verdict_moves_the_record_as_documented() {
        let now = T0 + 100;
        let delay = Duration::from_millis(1500);
        let ok = settle(
            &claimed(0),
            &attempt(Reply::Status(200), ""),
            Verdict::Delivered,
            now,
            delay,
            LIMITS,
        );
        assert_eq!(
            (
                ok.status,
                ok.attempts,
                ok.delivered_at_ms,
                ok.payload.as_deref()
            ),
            (Status::Delivered, 1, Some(now), None)
        );
        let retry = settle(
            &claimed(0),
            &attempt(Reply::Status(503), "busy"),
            Verdict::Retry,
            now,
            delay,
            LIMITS,
        );
        assert_eq!(
            (
                retry.status,
                retry.attempts,
                retry.next_attempt_at_ms,
                retry.last_status_code
            ),
            (Status::Pending, 1, now + 1500, Some(503))
        );
        assert_eq!(retry.last_error.as_deref(), Some("busy"));
        let conn = settle(
            &claimed(0),
            &attempt(Reply::Transport(Transport::Connect), "refused"),
            Verdict::Retry,
            now,
            delay,
            LIMITS,
        );
        assert_eq!(
            (conn.last_status_code, conn.last_error.as_deref()),
            (None, Some("refused"))
        );
        let dead = settle(
            &claimed(0),
            &attempt(Reply::Status(422), ""),
            Verdict::Dead,
            now,
            delay,
            LIMITS,
        );
        assert_eq!(
            (
                dead.status,
                dead.attempts,
                dead.dead_at_ms,
                dead.last_status_code
            ),
            (Status::Dead, 1, Some(now), Some(422))
        );
        assert_eq!(
            dead.last_error.as_deref(),
            Some("HTTP 422 with an empty body")
        );
        let paused = settle(
            &claimed(4),
            &attempt(Reply::Status(401), "no"),
            Verdict::Pause,
            now,
            delay,
            LIMITS,
        );
        assert_eq!(
            (paused.status, paused.attempts, paused.next_attempt_at_ms),
            (Status::Pending, 4, now),
            "a pause spends no attempt and leaves the record due"
        );
    }

    #[test]
    fn retries_end_in_a_dead_letter_after_max_attempts_or_max_age() {
        let now = T0 + 100;
        let d = Duration::from_secs(1);
        let a = attempt(Reply::Status(503), "down");
        assert_eq!(
            settle(&claimed(1), &a, Verdict::Retry, now, d, LIMITS).status,
            Status::Pending
        );
        let last = settle(&claimed(2), &a, Verdict::Retry, now, d, LIMITS);
        assert_eq!((last.status, last.attempts), (Status::Dead, 3));
        assert_eq!(last.last_error.as_deref(), Some("down"));
        let old = now + 3_600_000;
        assert_eq!(
            settle(&claimed(0), &a, Verdict::Retry, old, d, LIMITS).status,
            Status::Dead
        );
    }

    #[test]
    fn a_dead_letter_keeps_at_most_one_kib_of_the_reply_cut_on_a_character() {
        let body = "é".repeat(700); // 1400 bytes
        let dead = settle(
            &claimed(0),
            &attempt(Reply::Status(400), &body),
            Verdict::Dead,
            T0,
            Duration::ZERO,
            LIMITS,
        );
        let kept = dead.last_error.unwrap();
        assert_eq!(kept.len(), 1024);
        assert!(body.starts_with(&kept));
    }

    #[test]
    fn a_retention_keeps_the_payload_after_delivery() {
        let keep = Limits {
            drop_payload_at_delivery: false,
            ..LIMITS
        };
        let ok = settle(
            &claimed(0),
            &attempt(Reply::Status(204), ""),
            Verdict::Delivered,
            T0,
            Duration::ZERO,
            keep,
        );
        assert!(ok.payload.is_some());
    }
}
