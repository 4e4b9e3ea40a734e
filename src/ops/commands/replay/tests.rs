//! The replay's rules as pure functions: what a replayed record looks like, what is refused,
//! which dead letters the filters select.

use super::*;
use crate::store::record::sample;

#[test]
fn a_replayed_dead_letter_starts_over_and_keeps_its_trace_id() {
    let mut r = sample("trace-dead-01");
    r.status = Status::Dead;
    r.attempts = 9;
    r.dead_at_ms = Some(5);
    let n = replayed(&r, 1_000);
    assert_eq!(
        (n.status, n.attempts, n.next_attempt_at_ms, n.received_at_ms),
        (Status::Pending, 0, 1_000, 1_000)
    );
    assert_eq!(n.enrichment.received_at, r.enrichment.received_at);
    assert_eq!(n.trace_id, r.trace_id);
    assert_eq!(n.dead_at_ms, None);
    assert_eq!(n.audit.len(), 1);
}

#[test]
fn delivered_needs_force_and_in_flight_is_never_touched() {
    let mut r = sample("trace-deliv-1");
    r.status = Status::Delivered;
    assert!(refusal(&r, false).is_some());
    assert!(refusal(&r, true).is_none());
    r.payload = None;
    assert!(refusal(&r, true).is_some());
    r.status = Status::InFlight;
    assert!(refusal(&r, true).is_some());
    r.status = Status::Dead;
    assert!(refusal(&r, false).is_none());
}

#[test]
fn dead_letter_filters_narrow_the_selection() {
    let mut r = sample("trace-dead-02");
    r.status = Status::Dead;
    r.dead_at_ms = Some(2_000);
    r.last_status_code = Some(422);
    let q = |f: fn(&mut ReplayQuery)| {
        let mut q = ReplayQuery {
            dead: true,
            ..Default::default()
        };
        f(&mut q);
        matches_dead(&r, &q)
    };
    assert!(q(|_| {}));
    assert!(q(|q| q.status_code = Some(422)));
    assert!(!q(|q| q.status_code = Some(500)));
    assert!(q(|q| q.since_ms = Some(2_000)));
    assert!(!q(|q| q.until_ms = Some(2_000)));
    assert!(!q(|q| q.form_type = Some("contact".into())));
}
