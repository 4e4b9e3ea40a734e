//! The store work of one delivery step, written once against the store boundary: give back
//! claims that will not be sent, write the outcomes of finished attempts (one store call for
//! all of them: one sled transaction, or a place in the committer's next one while intake
//! runs, see `Store::settle`; one PostgreSQL transaction fenced by the claim tokens),
//! quarantine records that cannot be sent, claim due records, and find when the next one falls
//! due. Then [`Done::outcomes`] counts and logs what was written.
//!
//! With the embedded store the whole round runs in one blocking call (the sled calls do their
//! work inline, see [`crate::store::engine`]), so a busy worker pays one thread hand-off per
//! step, not one per record; with PostgreSQL each call is awaited on the runtime.
//!
//! Logs carry the trace ID, status code and outcome, never the payload or the reply body.

use super::classify::{Reply, Verdict};
use super::client::Attempt;
use super::outcome::{self, Limits};
use crate::store::{
    Change, Engine, EngineError, Record, RecordStore, Status, StoreFailure, Updated,
};
use std::time::Duration;

/// A finished attempt on its way to the store.
pub(super) struct Settle {
    pub claimed: Record,
    pub attempt: Attempt,
    pub verdict: Verdict,
    /// The backoff before a retry, drawn when the reply was handled.
    pub delay: Duration,
    pub now_ms: i64,
}

/// What one step asks of the store.
#[derive(Default)]
pub(super) struct Round {
    /// Claims given back unsent (no attempt spent, nothing written).
    pub release: Vec<String>,
    pub settle: Vec<Settle>,
    /// Claimed records no request can be built for, with the reason: quarantined.
    pub unsendable: Vec<(String, String)>,
    /// How many due records to claim.
    pub claim: usize,
}

/// What the store answered.
pub(super) struct Done {
    settled: Vec<(Settle, Result<Updated, String>)>,
    unsendable: Vec<(String, Result<(), EngineError>)>,
    /// Claimed records, earliest due first (empty when nothing was asked).
    pub claimed: Result<Vec<Record>, EngineError>,
    /// When the next unclaimed record falls due; read only when the claim came back short.
    pub next_due_ms: Option<Result<Option<i64>, EngineError>>,
    /// Claims this round could not give back or settle because the store failed: still held
    /// (a PostgreSQL lease stays ours, see `PgStore::settle`), so the next round gives them
    /// back, and once the store answers again the records are due at once instead of after
    /// the lease.
    pub unreleased: Vec<String>,
    /// Outcomes PostgreSQL did not take because it could not be reached (or did not answer in
    /// time): the claims are still held, so the worker writes them in a later round rather
    /// than sending the records again. A write that got no answer may have applied after all;
    /// fenced by the claim token, the later one then writes nothing (see
    /// `store::postgres::claims`): an outcome is written once.
    pub unsettled: Vec<Settle>,
    /// Why the outcomes were not written, for the worker's pause and its log.
    pub write_failed: Option<EngineError>,
}

/// What became of a record whose attempt was settled, as the `outcome` label of
/// `outbox_delivery_attempts_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Retry,
    Dead,
    /// Credentials rejected: due again, no attempt spent.
    Paused,
    Quarantined,
    /// Nothing written: the record changed meanwhile (an operator), or the write failed.
    NotWritten,
}

impl Round {
    /// A round that only claims `n` due records.
    pub fn claiming(n: usize) -> Round {
        Round {
            claim: n,
            ..Round::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.release.is_empty()
            && self.settle.is_empty()
            && self.unsendable.is_empty()
            && self.claim == 0
    }

    /// Does the work at wall-clock time `now_ms`: releases, then quarantines, then the
    /// outcomes beside the claim. A claim that
    /// cannot be given back or settled (PostgreSQL is unreachable) is handed back to the
    /// worker in [`Done::unreleased`] for the next round; at shutdown it runs out on its own
    /// (a lease expires, an in-memory claim ends with the process).
    pub async fn run(self, store: &Engine, limits: Limits, now_ms: i64) -> Done {
        let mut unreleased = Vec::new();
        let done = self.run_on(store, limits, now_ms, &mut unreleased).await;
        // Only a lease outlives a failed call: the embedded store ends its in-memory claims
        // in a settle that fails, and may claim the record again in this very round.
        match store {
            Engine::Postgres(_) => Done { unreleased, ..done },
            Engine::Embedded(_) => done,
        }
    }

    async fn run_on(
        self,
        store: &Engine,
        limits: Limits,
        now_ms: i64,
        unreleased: &mut Vec<String>,
    ) -> Done {
        if !self.release.is_empty() && store.release(&ids(&self.release)).await.is_err() {
            unreleased.extend(self.release.iter().cloned());
        }
        let mut unsendable = Vec::with_capacity(self.unsendable.len());
        for (id, reason) in self.unsendable {
            // Released first: a quarantine while the claim is held would count the record twice.
            if store.release(&[id.as_str()]).await.is_err() {
                unreleased.push(id.clone());
            }
            let r = quarantine(store, &id, &reason).await;
            unsendable.push((id, r));
        }
        // The outcomes and the next claim touch different rows (a record being settled is
        // under this instance's live lease, which no claim takes), so with PostgreSQL they
        // run side by side on two connections, and one round waits for one commit, not two.
        let want = self.claim;
        let claiming = async {
            if want == 0 {
                return (Ok(vec![]), None);
            }
            let claimed = claim(store, now_ms, want).await;
            let next_due = match &claimed {
                Ok(r) if r.len() < want => Some(store.next_unclaimed_due_ms().await),
                _ => None,
            };
            (claimed, next_due)
        };
        let (written, (claimed, next_due_ms)) =
            tokio::join!(write(store, &self.settle, limits), claiming);
        let (mut settle, mut unsettled, mut write_failed) = (self.settle, vec![], None);
        let written = match written {
            Ok(written) => written,
            // Leases outlive the failure: write the outcomes again later.
            Err(e) if e.is_unavailable() && matches!(store, Engine::Postgres(_)) => {
                unsettled = std::mem::take(&mut settle);
                write_failed = Some(e);
                vec![]
            }
            Err(e) => {
                unreleased.extend(settle.iter().map(|s| s.claimed.trace_id.clone()));
                settle.iter().map(|_| Err(e.to_string())).collect()
            }
        };
        let settled = settle.into_iter().zip(written).collect();
        Done {
            settled,
            unsendable,
            claimed,
            next_due_ms,
            unreleased: vec![],
            unsettled,
            write_failed,
        }
    }
}

fn ids(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

impl Default for Done {
    fn default() -> Done {
        Done {
            settled: vec![],
            unsendable: vec![],
            claimed: Ok(vec![]),
            next_due_ms: None,
            unreleased: vec![],
            unsettled: vec![],
            write_failed: None,
        }
    }
}

impl Done {
    /// Counts and logs each outcome written; what became of each record, in order.
    pub fn outcomes(&self) -> Vec<(String, Settled)> {
        let mut out: Vec<(String, Settled)> = self
            .settled
            .iter()
            .map(|(s, r)| (s.claimed.trace_id.clone(), report(s, r)))
            .collect();
        for (trace_id, r) in &self.unsendable {
            let settled = match r {
                Ok(()) => Settled::Quarantined,
                Err(e) => {
                    tracing::error!(trace_id, error = %e, "quarantining an unsendable record failed");
                    Settled::NotWritten
                }
            };
            out.push((trace_id.clone(), settled));
        }
        out
    }
}

/// Claims up to `want` due records, quarantining due entries that no longer decode.
async fn claim(store: &Engine, now_ms: i64, want: usize) -> Result<Vec<Record>, EngineError> {
    let claimed = store.claim_due(now_ms, want).await?;
    for (id, reason) in &claimed.undecodable {
        if let Err(e) = quarantine(store, id, reason).await {
            // Claims nobody will send must not outlive this call.
            let held: Vec<&str> = claimed
                .records
                .iter()
                .map(|r| r.trace_id.as_str())
                .collect();
            let _ = store.release(&held).await;
            return Err(e);
        }
    }
    Ok(claimed.records)
}

/// Writes a batch of outcomes in one store call and releases their claims; a record that
/// changed since its claim is left alone, one that no longer decodes is quarantined.
/// `Err` when the store call itself failed: nothing was written.
async fn write(
    store: &Engine,
    batch: &[Settle],
    limits: Limits,
) -> Result<Vec<Result<Updated, String>>, EngineError> {
    if batch.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<&str> = batch.iter().map(|s| s.claimed.trace_id.as_str()).collect();
    // The committer thread may run `decide` (see `Store::settle`), so it holds its own copy
    // of what it needs.
    let owned: Vec<_> = batch
        .iter()
        .map(|s| {
            (
                s.claimed.clone(),
                s.attempt.clone(),
                s.verdict,
                s.now_ms,
                s.delay,
            )
        })
        .collect();
    let results = store
        .settle(&ids, move |i, stored| {
            let (claimed, attempt, verdict, now_ms, delay) = &owned[i];
            if !outcome::unchanged_since_claim(stored, claimed) {
                return Change::Keep;
            }
            Change::Put(outcome::settle(
                stored, attempt, *verdict, *now_ms, *delay, limits,
            ))
        })
        .await;
    let mut out = Vec::with_capacity(ids.len());
    for (id, r) in ids.iter().zip(results?) {
        out.push(match r {
            Ok(u) => Ok(u),
            Err(reason) => Err(match quarantine(store, id, &reason).await {
                Ok(()) => format!("quarantined: {reason}"),
                Err(e) => format!("{reason}; quarantining it failed: {e}"),
            }),
        });
    }
    Ok(out)
}

/// Moves a record that cannot be decoded or sent out of the lifecycle (never deleted).
async fn quarantine(store: &Engine, id: &str, reason: &str) -> Result<(), EngineError> {
    store.quarantine(id, reason).await?;
    metrics::counter!("outbox_delivery_attempts_total", "outcome" => "quarantined").increment(1);
    Ok(())
}

/// The status code of a reply, if the dashboard answered.
pub(super) fn attempt_status(a: &Attempt) -> Option<u16> {
    match a.reply {
        Reply::Status(code) => Some(code),
        Reply::Transport(_) => None,
    }
}

/// Metrics and one log line for a written outcome.
fn report(s: &Settle, written: &Result<Updated, String>) -> Settled {
    let (trace_id, status) = (s.claimed.trace_id.as_str(), attempt_status(&s.attempt));
    match written {
        Ok(Updated::Put(n)) => {
            let (settled, label) = match (n.status, s.verdict) {
                (Status::Delivered, _) => (Settled::Delivered, "delivered"),
                (Status::Dead, _) => (Settled::Dead, "dead"),
                (_, Verdict::Pause) => (Settled::Paused, "paused"),
                _ => (Settled::Retry, "retry"),
            };
            metrics::counter!("outbox_delivery_attempts_total", "outcome" => label).increment(1);
            match n.status {
                Status::Dead => tracing::warn!(
                    trace_id,
                    status,
                    attempts = n.attempts,
                    "dead letter: kept with its last status and reply for an operator"
                ),
                Status::Delivered => tracing::debug!(trace_id, status, "delivered"),
                _ => tracing::debug!(
                    trace_id,
                    status,
                    outcome = label,
                    next_attempt_in_ms = (n.next_attempt_at_ms - s.now_ms).max(0),
                    "not delivered"
                ),
            }
            settled
        }
        Ok(other) => {
            tracing::warn!(trace_id, "{}", not_written(other));
            Settled::NotWritten
        }
        Err(e) => {
            tracing::error!(
                trace_id,
                error = %e,
                "writing a delivery outcome failed; the record is due again"
            );
            Settled::NotWritten
        }
    }
}

/// Why an outcome was not written, for the log line: the shared store refuses a settle whose
/// lease was taken over by another instance ([`Updated::Busy`]); otherwise an operator
/// changed or removed the record while it was being sent.
fn not_written(written: &Updated) -> &'static str {
    match written {
        Updated::Busy(_) => {
            "the lease on this record ran out while it was being sent and another instance took \
             it over, or an earlier write of this outcome that got no answer from the store \
             applied after all; not written again (what the store holds stands)"
        }
        _ => "record changed or removed while in flight (operator action); its outcome was not written",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let fields = serde_json::from_str(r#"{"x":1}"#).unwrap();
        Record::pending(
            fields,
            crate::intake::enrich::Enrichment {
                received_at: "now".into(),
                client_ip: "203.0.113.9".into(),
                user_agent: None,
                trace_id: "trace-1".into(),
                src: "test".into(),
                form_type: "contact".into(),
            },
            0,
        )
    }

    #[test]
    fn a_lease_taken_over_is_not_blamed_on_an_operator() {
        let busy = not_written(&Updated::Busy(record()));
        assert!(busy.contains("another instance took it over"), "{busy}");
        assert!(!busy.contains("operator"), "{busy}");
        for other in [Updated::NotFound, Updated::Purged, Updated::Kept(record())] {
            assert!(not_written(&other).contains("operator action"));
        }
    }
}
