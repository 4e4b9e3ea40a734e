//! One delivery: send a claimed record, classify the reply, move the circuit breaker and the
//! credentials pause at once, then hand the record's next state to the settler, which writes
//! outcomes in batches (one store transaction per record, one blocking call per batch, so a
//! busy worker does not pay a thread hand-off per delivery).
//!
//! Logs carry the trace ID, status code and outcome, never the payload or the reply body
//! (a dashboard's error page may echo the form fields); the body is kept only with the
//! record, for a dead letter.

use super::backoff;
use super::classify::{classify, Reply, Transport, Verdict};
use super::client::{Attempt, SendError};
use super::outcome;
use super::worker::{Core, Probe};
use crate::intake::enrich::format_time;
use crate::store::{now_ms, Change, Record, Status, Store, StoreError, Updated};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// An attempt's result on its way to the store.
pub(super) struct Settle {
    claimed: Record,
    attempt: Attempt,
    verdict: Verdict,
    delay: Duration,
    now: i64,
}

/// Outcomes written per store round (one blocking call for many records: under load the
/// settler takes whatever has queued up while it wrote the last batch).
const SETTLE_BATCH: usize = 256;

/// Sends `claimed`, classifies the reply and moves the circuit and pause state at once; the
/// record's new state goes to the settler. A record that cannot be turned into a request is
/// quarantined instead (never a crash loop).
pub(super) async fn deliver(
    core: &Arc<Core>,
    claimed: Record,
    probe: Probe,
    settle: &mpsc::UnboundedSender<Settle>,
) {
    let id = claimed.trace_id.clone();
    let span = tracing::info_span!("delivery", trace_id = %id, attempt = claimed.attempts + 1);
    match attempt(core, claimed, probe).instrument(span).await {
        Some(s) => {
            // The settler runs until every sender is gone, so this cannot fail.
            let _ = settle.send(s);
        }
        None => core.store.release([id.as_str()]),
    }
}

async fn attempt(core: &Arc<Core>, claimed: Record, probe: Probe) -> Option<Settle> {
    let creds = core
        .state
        .credentials()
        .expect("credentials are set at start");
    let (attempt, verdict) = match core.dashboard.send(&claimed, &creds).await {
        Ok(a) => {
            let v = classify(a.reply);
            (a, v)
        }
        Err(SendError::Body(e)) => {
            if probe == Probe::Circuit {
                core.circuit.lock().unwrap().probe_unused();
            }
            let (store, id, reason) = (core.store.clone(), claimed.trace_id.clone(), e.to_string());
            let r = tokio::task::spawn_blocking(move || quarantine(&store, &id, &reason)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "quarantining an unsendable record failed");
            }
            return None;
        }
        // Credentials that cannot even be sent are as wrong as rejected ones.
        Err(e @ SendError::BadCredentials) => {
            let a = Attempt {
                reply: Reply::Transport(Transport::Other),
                retry_after: None,
                detail: e.to_string(),
                elapsed: Duration::ZERO,
            };
            (a, Verdict::Pause)
        }
    };
    metrics::histogram!("outbox_delivery_seconds").record(attempt.elapsed.as_secs_f64());
    steer(core, &attempt, verdict, probe);
    let delay = backoff::next_delay(
        claimed.attempts.saturating_add(1),
        core.settings.retry_base,
        core.settings.retry_cap,
        attempt.retry_after,
        &mut rand::thread_rng(),
    );
    Some(Settle {
        claimed,
        attempt,
        verdict,
        delay,
        now: now_ms(),
    })
}

/// Writes outcomes in batches until every sender is dropped (after the last delivery task).
pub(super) async fn settler(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while rx.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        let (c, todo) = (core.clone(), std::mem::take(&mut batch));
        let written = tokio::task::spawn_blocking(move || {
            let results = write(&c, &todo);
            todo.into_iter().zip(results).collect::<Vec<_>>()
        })
        .await
        .expect("settling does not panic");
        for (s, r) in &written {
            report(s, r);
        }
        // Retries now have their next due time: let the loop plan its next wake-up.
        core.wake.notify_one();
    }
}

/// Writes a batch of outcomes in one store transaction and releases their claims; a record
/// that changed since its claim is left alone, one that no longer decodes is quarantined.
fn write(core: &Core, batch: &[Settle]) -> Vec<Result<Updated, String>> {
    let limits = core.limits();
    let ids: Vec<&str> = batch.iter().map(|s| s.claimed.trace_id.as_str()).collect();
    let results = core.store.settle(&ids, |i, stored| {
        let s = &batch[i];
        if !outcome::unchanged_since_claim(stored, &s.claimed) {
            return Change::Keep;
        }
        Change::Put(outcome::settle(
            stored, &s.attempt, s.verdict, s.now, s.delay, limits,
        ))
    });
    match results {
        Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
        Ok(results) => ids
            .iter()
            .zip(results)
            .map(|(id, r)| {
                r.map_err(|reason| match quarantine(&core.store, id, &reason) {
                    Ok(()) => format!("quarantined: {reason}"),
                    Err(e) => format!("{reason}; quarantining it failed: {e}"),
                })
            })
            .collect(),
    }
}

/// Gives claims that were never sent back to the queue, no attempt spent (nothing was
/// written for them).
pub(super) fn release(core: &Core, records: Vec<Record>) {
    core.store
        .release(records.iter().map(|r| r.trace_id.as_str()));
}

/// Metrics and one log line for a written outcome.
fn report(s: &Settle, written: &Result<Updated, String>) {
    let (trace_id, status) = (s.claimed.trace_id.as_str(), attempt_status(&s.attempt));
    match written {
        Ok(Updated::Put(n)) => {
            let label = match (n.status, s.verdict) {
                (Status::Delivered, _) => "delivered",
                (Status::Dead, _) => "dead",
                (_, Verdict::Pause) => "paused",
                _ => "retry",
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
                    next_attempt_in_ms = (n.next_attempt_at_ms - s.now).max(0),
                    "not delivered"
                ),
            }
        }
        Ok(_) => tracing::warn!(
            trace_id,
            "record changed or removed while in flight (operator action); its outcome was not written"
        ),
        Err(e) => tracing::error!(
            trace_id,
            error = %e,
            "writing a delivery outcome failed; the record is due again"
        ),
    }
}

/// Moves the circuit breaker, the credentials pause and the health view for one reply.
fn steer(core: &Core, attempt: &Attempt, verdict: Verdict, probe: Probe) {
    {
        let mut c = core.circuit.lock().unwrap();
        match verdict {
            Verdict::Retry => c.on_failure(probe == Probe::Circuit, std::time::Instant::now()),
            _ => c.on_answer(probe == Probe::Circuit),
        }
        core.publish_circuit(&c);
    }
    let now = format_time(chrono::Utc::now());
    match verdict {
        Verdict::Pause => {
            let next = tokio::time::Instant::now() + core.settings.auth_probe_interval;
            *core.next_auth_probe.lock().unwrap() = next;
            core.state.set_auth_probe(next.into_std());
            if core.state.pause() {
                tracing::error!(
                    status = attempt_status(attempt),
                    probe_every_s = core.settings.auth_probe_interval.as_secs_f64(),
                    "delivery paused: the dashboard rejected the credentials; fix ingest-key and send SIGHUP (delivery also resumes by itself when a probe succeeds)"
                );
            }
        }
        _ if (probe == Probe::Credentials || verdict == Verdict::Delivered)
            && core.state.resume() =>
        {
            tracing::info!("delivery resumed: the dashboard accepted the credentials");
        }
        _ => {}
    }
    core.state.update(|v| match verdict {
        Verdict::Delivered => v.last_success_at = Some(now),
        _ => {
            v.last_failure_at = Some(now);
            v.last_error = Some(short_error(attempt));
        }
    });
    if verdict != Verdict::Delivered {
        core.state.failures.record(&short_error(attempt));
    }
}

fn attempt_status(a: &Attempt) -> Option<u16> {
    match a.reply {
        Reply::Status(code) => Some(code),
        Reply::Transport(_) => None,
    }
}

/// A failure in a few words for health: the status code, or the transport error kind.
fn short_error(a: &Attempt) -> String {
    match a.reply {
        Reply::Status(code) => format!("HTTP {code}"),
        Reply::Transport(Transport::Connect) => "cannot connect to the dashboard".into(),
        Reply::Transport(Transport::Timeout) => "the dashboard did not answer in time".into(),
        Reply::Transport(Transport::Other) => a.detail.clone(),
    }
}

/// Moves a record that cannot be decoded or sent to the quarantine tree (never deleted).
pub(super) fn quarantine(store: &Store, id: &str, reason: &str) -> Result<(), StoreError> {
    store.quarantine(id, reason)?;
    metrics::counter!("outbox_delivery_attempts_total", "outcome" => "quarantined").increment(1);
    Ok(())
}
