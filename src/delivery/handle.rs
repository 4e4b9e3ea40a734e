//! Starting and stopping delivery: [`start`] builds the worker's shared state from the
//! settings and spawns the worker loop and the tombstone purge; [`WorkerHandle::stop`] is the
//! shutdown step "the delivery worker stops".

use super::circuit::Circuit;
use super::client::Dashboard;
use super::worker::{run, Core};
use super::{purge, Credentials, DeliveryState};
use crate::config::Settings;
use crate::store::Store;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The running worker and purge tasks.
pub struct WorkerHandle {
    stop: watch::Sender<Option<Duration>>,
    worker: tokio::task::JoinHandle<()>,
    purge: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming, lets in-flight deliveries finish up to `bound` (their outcomes are
    /// written), and cuts off the rest (their leases make them due again at the next start).
    pub async fn stop(self, bound: Duration) {
        let _ = self.stop.send(Some(bound));
        let _ = self.worker.await;
        let _ = self.purge.await;
    }
}

/// Starts delivery (and the tombstone purge) for `settings.delivery`, which must be set.
pub fn start(
    store: Arc<Store>,
    settings: &Settings,
    state: Arc<DeliveryState>,
    wake: Arc<Notify>,
) -> anyhow::Result<WorkerHandle> {
    let d = settings
        .delivery
        .clone()
        .ok_or_else(|| anyhow::anyhow!("delivery needs a dashboard-url"))?;
    state.set_credentials(Credentials {
        ingest_key: d.ingest_key.clone(),
        signing_secret: d.signing_secret.clone(),
    });
    metrics::gauge!("outbox_delivery_paused").set(0.0);
    metrics::gauge!("outbox_circuit_state").set(0.0);
    let (stop, stop_rx) = watch::channel(None);
    let policy = purge::Policy {
        window: settings.idempotency_window,
        retention: d.payload_retention,
        interval: d.purge_interval,
    };
    let purge = tokio::spawn(purge::run(store.clone(), policy, stop_rx.clone()));
    let core = Arc::new(Core {
        dashboard: Dashboard::new(&d)?,
        circuit: Mutex::new(Circuit::new(
            d.circuit_threshold,
            d.circuit_cooldown,
            d.circuit_cooldown_max,
        )),
        settings: d,
        store,
        state,
        next_auth_probe: Mutex::new(Instant::now()),
        wake,
    });
    tracing::info!(
        dashboard = %core.settings.dashboard_url,
        concurrency = core.settings.concurrency,
        "delivery worker started"
    );
    let worker = tokio::spawn(run(core, stop_rx));
    Ok(WorkerHandle {
        stop,
        worker,
        purge,
    })
}
