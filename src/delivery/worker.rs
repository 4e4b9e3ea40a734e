//! The delivery worker: one loop that claims due records (oldest due first) and hands each
//! to a task that sends it, with at most `delivery-concurrency` in flight.
//!
//! The loop asks, in order: are we paused for credentials (then only a probe every
//! `auth-probe-interval`), does the circuit allow sending (else wait for its cooldown), how
//! many permits are free. It claims that many records plus up to `concurrency` more in one
//! store round (claims are held in memory and write nothing, see `crate::store::claims`;
//! only durable records are claimed), spawns deliveries for the free permits and keeps the
//! rest ready for the next ones. Claims that cannot be sent because the circuit opened,
//! delivery paused or shutdown began are released unsent: no attempt is spent. When there is
//! nothing to do it waits for the first of: a new submission (the intake's `Notify`), new
//! credentials, a delivery finishing, the next due time, or shutdown. The `Notify` futures are registered before the
//! store is read, so a submission stored meanwhile is never missed.

use super::circuit::{Circuit, Gate};
use super::client::Dashboard;
use super::outcome::Limits;
use super::{deliver, DeliveryState};
use crate::config::DeliverySettings;
use crate::store::{now_ms, Record, Store, StoreError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Pause after a store error before the loop tries again (a failing disk must not spin).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Longest idle sleep; the loop re-reads the store at least this often.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Which probe (if any) a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    None,
    /// The half-open circuit's single request.
    Circuit,
    /// The periodic check while paused for credentials.
    Credentials,
}

/// What the worker shares with its delivery tasks.
pub struct Core {
    pub(super) store: Arc<Store>,
    pub(super) dashboard: Dashboard,
    pub(super) settings: DeliverySettings,
    pub(super) state: Arc<DeliveryState>,
    pub(super) circuit: Mutex<Circuit>,
    /// While paused: when the next credentials probe may go.
    pub(super) next_auth_probe: Mutex<Instant>,
    pub(super) wake: Arc<Notify>,
}

impl Core {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_attempts: self.settings.max_attempts,
            max_age: self.settings.max_age,
            drop_payload_at_delivery: self.settings.payload_retention.is_zero(),
        }
    }

    /// How many records to claim now and as what, or until when to wait.
    fn plan(&self, now: Instant, free: usize) -> Result<(usize, Probe), Option<Instant>> {
        if self.state.is_paused() {
            let mut at = self.next_auth_probe.lock().unwrap();
            if free == 0 {
                return Ok((0, Probe::None));
            }
            if now < *at {
                return Err(Some(*at));
            }
            *at = now + self.settings.auth_probe_interval;
            self.state.set_auth_probe(at.into_std());
            return Ok((1, Probe::Credentials));
        }
        let mut circuit = self.circuit.lock().unwrap();
        match circuit.gate(now.into_std()) {
            Gate::Send => Ok((free, Probe::None)),
            Gate::Probe if free > 0 => {
                self.publish_circuit(&circuit);
                Ok((1, Probe::Circuit))
            }
            Gate::Probe => {
                circuit.probe_unused();
                Ok((0, Probe::None))
            }
            Gate::Wait(until) => Err(until.map(Instant::from_std)),
        }
    }

    pub(super) fn publish_circuit(&self, c: &Circuit) {
        metrics::gauge!("outbox_circuit_state").set(c.gauge());
        let name = c.name();
        self.state.set_circuit_probe(c.open_until());
        self.state.update(|v| {
            if v.circuit != name {
                tracing::info!(from = %v.circuit, to = name, "delivery circuit changed");
                v.circuit = name.into();
            }
        });
    }

    /// Claims up to `want` due records that no task of ours is sending (blocking).
    fn claim(&self, want: usize) -> Result<Vec<Record>, StoreError> {
        let claimed = self.store.claim_due(now_ms(), want)?;
        for (id, reason) in &claimed.undecodable {
            if let Err(e) = deliver::quarantine(&self.store, id, reason) {
                // Claims nobody will send must not outlive this call.
                self.store
                    .release(claimed.records.iter().map(|r| r.trace_id.as_str()));
                return Err(e);
            }
        }
        Ok(claimed.records)
    }

    /// The earliest due time among records no task of ours is sending.
    fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let busy = self.store.claimed();
        Ok(self
            .store
            .due_until(i64::MAX, busy.len() + 1)?
            .into_iter()
            .find(|(_, id)| !busy.contains(id))
            .map(|(t, _)| t))
    }
}

pub(super) async fn run(core: Arc<Core>, mut stop: watch::Receiver<Option<Duration>>) {
    let concurrency = core.settings.concurrency;
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let settler = tokio::spawn(deliver::settler(core.clone(), settle_rx));
    // Claimed but not yet sent: claims are made in batches of up to `concurrency` beyond what
    // the free permits take, so a busy worker claims in one store round per batch.
    let mut ready: VecDeque<Record> = VecDeque::new();
    loop {
        if stop.borrow_and_update().is_some() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let wake = core.wake.notified();
        let kick = core.state.kicked();
        tokio::pin!(wake, kick);
        wake.as_mut().enable();
        kick.as_mut().enable();

        let until = match core.plan(Instant::now(), permits.available_permits()) {
            Err(until) => {
                // Paused or circuit open: what was claimed for sending goes back unsent.
                give_back(&core, &mut ready).await;
                until
            }
            Ok((0, _)) => None, // every permit busy: wait for a delivery to finish
            Ok((want, probe)) => {
                if probe != Probe::None {
                    // Exactly one request: keep the oldest claim, if any, as the probe.
                    let keep = ready.pop_front();
                    give_back(&core, &mut ready).await;
                    ready.extend(keep);
                }
                let mut exhausted = false;
                if ready.len() < want {
                    let ask = match probe {
                        Probe::None => want + concurrency - ready.len(),
                        _ => 1,
                    };
                    let c = core.clone();
                    let claimed = tokio::task::spawn_blocking(move || c.claim(ask))
                        .await
                        .expect("claim does not panic");
                    match claimed {
                        Ok(records) => {
                            exhausted = records.len() < ask;
                            ready.extend(records);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "delivery cannot read the store; retrying");
                            exhausted = true;
                        }
                    }
                }
                if ready.is_empty() {
                    match probe {
                        Probe::Circuit => core.circuit.lock().unwrap().probe_unused(),
                        // Nothing to probe with: try again as soon as a record is due.
                        Probe::Credentials => {
                            *core.next_auth_probe.lock().unwrap() = Instant::now()
                        }
                        Probe::None => {}
                    }
                }
                for r in ready.drain(..want.min(ready.len())) {
                    let permit = permits.clone().try_acquire_owned().expect("counted");
                    let (c, tx) = (core.clone(), settle_tx.clone());
                    tasks.spawn(async move {
                        deliver::deliver(&c, r, probe, &tx).await;
                        drop(permit);
                    });
                }
                if !exhausted || !ready.is_empty() {
                    continue; // more is due, or claimed records wait for a permit
                }
                idle_until(&core).await
            }
        };
        let sleep_until = until
            .unwrap_or_else(|| Instant::now() + MAX_IDLE)
            .min(Instant::now() + MAX_IDLE);
        tokio::select! {
            _ = &mut wake => {}
            _ = &mut kick => {}
            _ = stop.changed() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
    }
    give_back(&core, &mut ready).await;
    let bound = stop.borrow().unwrap_or_default();
    if !tasks.is_empty() {
        tracing::info!(
            in_flight = tasks.len(),
            "shutdown: delivery stopped claiming; waiting for in-flight deliveries"
        );
    }
    let finished =
        tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            cut_off = tasks.len(),
            "shutdown: deliveries still running at the bound were cut off; they are due again at the next start"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // Every sender is gone now: the settler writes what is left and ends.
    drop(settle_tx);
    let _ = settler.await;
    core.state.update(|v| v.mode = "stopped".into());
    tracing::info!("shutdown: delivery worker stopped");
}

/// Releases every claim in `ready` (never sent) back to the queue.
async fn give_back(core: &Arc<Core>, ready: &mut VecDeque<Record>) {
    if ready.is_empty() {
        return;
    }
    let (c, records) = (core.clone(), ready.drain(..).collect::<Vec<_>>());
    let _ = tokio::task::spawn_blocking(move || deliver::release(&c, records)).await;
}

/// When the next record falls due, as a tokio instant (`None`: nothing queued).
async fn idle_until(core: &Arc<Core>) -> Option<Instant> {
    let c = core.clone();
    let next = tokio::task::spawn_blocking(move || c.next_due_ms())
        .await
        .expect("next_due does not panic");
    match next {
        Ok(Some(t)) => {
            let wait = (t - now_ms()).max(0) as u64;
            Some(Instant::now() + Duration::from_millis(wait))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "delivery cannot read the store; retrying");
            Some(Instant::now() + STORE_ERROR_PAUSE)
        }
    }
}
