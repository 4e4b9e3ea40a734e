//! Retention, enforced by the periodic purge: delivered records keep a tombstone (trace ID, payload hash, receipt)
//! for the idempotency window, so a late duplicate still gets its original receipt; after
//! that they are removed. Payloads kept by a `payload-retention` are dropped when it ends.
//!
//! Both read the store's `done` index (delivery time order), so a pass touches only what has
//! expired, and works in steps of [`STEP`] records, each in its own short transactions, so
//! intake never waits long behind it. With PostgreSQL the same two jobs run as statements over
//! its delivery-time index ([`pg_step`]): every instance runs them, and rows another
//! instance is changing at that moment are skipped, not waited for.

use crate::store::done::HOLDS_PAYLOAD;
use crate::store::postgres::{PgStore, PgStoreError};
use crate::store::record::AuditEntry;
use crate::store::{Change, Engine, EngineError, RecordStore, Status, Store, StoreError, Updated};
use crate::time::now_ms;
use std::time::Duration;
use tokio::sync::watch;

/// Records handled per step.
pub const STEP: usize = 500;

/// The audit action that says when a payload kept by `payload-retention` was dropped (a
/// payload dropped at delivery needs none: that is `delivered_at`).
pub const PAYLOAD_DROPPED_ACTION: &str = "payload dropped (payload-retention)";

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub window: Duration,
    pub retention: Duration,
    pub interval: Duration,
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub payloads_dropped: usize,
    pub purged: usize,
    /// Whether a limit was reached (more may be waiting).
    pub more: bool,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// One bounded step at time `now`: drops payloads past the retention, then purges
/// tombstones past the window, up to `limit` of each.
pub fn step(store: &Store, policy: Policy, now: i64, limit: usize) -> Result<Report, StoreError> {
    let mut report = Report::default();
    if policy.retention < policy.window {
        let due = store.delivered_before(HOLDS_PAYLOAD, now - ms(policy.retention), limit)?;
        report.more |= due.len() == limit;
        for (at, id) in due {
            let r = store.update(&id, |r| {
                if r.status != Status::Delivered || r.payload.is_none() {
                    return Change::Keep;
                }
                let mut n = r.clone();
                n.payload = None;
                n.audit.push(dropped_entry(now));
                Change::Put(n)
            });
            if let Some(Updated::Put(_)) = settle(store, r, HOLDS_PAYLOAD, at, &id)? {
                report.payloads_dropped += 1;
            }
        }
    }
    let (purged, read) = store.purge_expired(now - ms(policy.window), limit)?;
    report.purged = purged;
    report.more |= read == limit;
    Ok(report)
}

/// Handles the odd cases of one update: an index entry pointing at nothing is removed, and
/// a record that does not decode is quarantined.
fn settle(
    store: &Store,
    r: Result<Updated, StoreError>,
    family: u8,
    at: i64,
    id: &str,
) -> Result<Option<Updated>, StoreError> {
    match r {
        Ok(Updated::NotFound) => {
            store.forget_delivered(family, at, id)?;
            Ok(None)
        }
        Ok(u) => Ok(Some(u)),
        Err(StoreError::Undecodable { reason, .. }) => {
            store.quarantine(id, &reason)?;
            store.forget_delivered(family, at, id)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The audit trail entry of a payload dropped at `now`.
fn dropped_entry(now: i64) -> AuditEntry {
    AuditEntry {
        at_ms: now,
        action: PAYLOAD_DROPPED_ACTION.into(),
        previous_payload_hash: None,
        note: None,
    }
}

/// [`step`] for PostgreSQL: the same retention and window, through the same boundary call for
/// the purge.
pub async fn pg_step(
    store: &PgStore,
    policy: Policy,
    now: i64,
    limit: usize,
) -> Result<Report, PgStoreError> {
    let mut report = Report::default();
    if policy.retention < policy.window {
        let audit = serde_json::to_value([dropped_entry(now)]).expect("an audit entry serializes");
        let dropped = store
            .drop_payloads_delivered_before(now - ms(policy.retention), limit, &audit)
            .await?;
        report.payloads_dropped = dropped as usize;
        report.more |= dropped as usize == limit;
    }
    let purged = RecordStore::purge_delivered_before(store, now - ms(policy.window), limit).await?;
    report.purged = purged as usize;
    Ok(report)
}

/// One step on whichever engine runs: on a blocking thread for the embedded store.
async fn engine_step(store: &Engine, policy: Policy) -> Result<Report, EngineError> {
    match store {
        Engine::Embedded(s) => {
            let s = s.clone();
            tokio::task::spawn_blocking(move || step(&s, policy, now_ms(), STEP))
                .await
                .expect("purge step does not panic")
                .map_err(EngineError::from)
        }
        Engine::Postgres(s) => Ok(pg_step(s, policy, now_ms(), STEP).await?),
    }
}

/// Runs a purge pass every `policy.interval` until `stop` says so.
pub async fn run(
    store: impl Into<Engine>,
    policy: Policy,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let store = store.into();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(policy.interval) => {}
            _ = stop.changed() => return,
        }
        loop {
            if stop.borrow().is_some() {
                return;
            }
            match engine_step(&store, policy).await {
                Ok(report) => {
                    if report.purged > 0 {
                        metrics::counter!("outbox_purged_total").increment(report.purged as u64);
                    }
                    if report.purged + report.payloads_dropped > 0 {
                        tracing::info!(
                            purged = report.purged,
                            payloads_dropped = report.payloads_dropped,
                            "purge: expired tombstones removed"
                        );
                    }
                    if !report.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "purge step failed; trying again next interval");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;

    const H: i64 = 3_600_000;

    fn delivered(store: &Store, id: &str, at: i64, payload: bool) {
        let mut r = sample(id);
        r.received_at_ms = at;
        r.next_attempt_at_ms = at;
        futures_executor::block_on(store.submit(r)).unwrap();
        store
            .update(id, |r| {
                let mut n = r.clone();
                n.status = Status::Delivered;
                n.delivered_at_ms = Some(at);
                if !payload {
                    n.payload = None;
                }
                Change::Put(n)
            })
            .unwrap();
    }

    #[test]
    fn tombstones_go_after_the_window_and_payloads_after_the_retention_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        let now = 100 * H;
        for i in 0..5 {
            delivered(&s, &format!("trace-old-{i}"), now - 30 * H, false);
        }
        delivered(&s, "trace-recent", now - 2 * H, true);
        delivered(&s, "trace-fresh", now - 1000, true);
        let policy = Policy {
            window: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(3600),
            interval: Duration::from_secs(60),
        };
        let first = step(&s, policy, now, 3).unwrap();
        assert_eq!(
            (first.purged, first.payloads_dropped, first.more),
            (3, 1, true)
        );
        let second = step(&s, policy, now, 3).unwrap();
        assert_eq!(
            (second.purged, second.payloads_dropped, second.more),
            (2, 0, false)
        );
        assert_eq!(step(&s, policy, now, 3).unwrap(), Report::default());

        assert!(s.get("trace-old-0").unwrap().is_none());
        let recent = s.get("trace-recent").unwrap().unwrap();
        assert_eq!((recent.status, recent.payload), (Status::Delivered, None));
        let said = recent.audit.last().expect("the drop is noted");
        assert_eq!(
            (said.action.as_str(), said.at_ms),
            (PAYLOAD_DROPPED_ACTION, now)
        );
        assert!(s.get("trace-fresh").unwrap().unwrap().payload.is_some());
        let c = s.counts().unwrap();
        assert_eq!((c.purged, c.delivered, c.accepted), (5, 2, 7));
        assert!(c.balanced());
    }

    #[test]
    fn dead_letters_are_never_purged() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        let mut r = sample("trace-dead");
        r.status = Status::Dead;
        futures_executor::block_on(s.submit(r)).unwrap();
        let policy = Policy {
            window: Duration::ZERO,
            retention: Duration::ZERO,
            interval: Duration::from_secs(1),
        };
        assert_eq!(
            step(&s, policy, i64::MAX / 2, 10).unwrap(),
            Report::default()
        );
        assert!(s.get("trace-dead").unwrap().is_some());
    }
}
