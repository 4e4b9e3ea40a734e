//! Starting and stopping delivery: [`start`] builds the worker's [`Delivery`] from the
//! settings and spawns the worker loop and the tombstone purge; [`WorkerHandle::stop`] is the
//! shutdown step "the delivery worker stops".

use super::client::Dashboard;
use super::step::Delivery;
use super::{purge, worker, Credentials, DeliveryState};
use crate::config::Settings;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The running worker and purge tasks.
pub struct WorkerHandle {
    stop: watch::Sender<Option<Duration>>,
    worker: tokio::task::JoinHandle<()>,
    purge: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming, lets in-flight deliveries finish up to `bound` (their outcomes are
    /// written), and cuts off the rest (they are due again at the next start).
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
    let policy = purge::Policy {
        window: settings.idempotency_window,
        retention: d.payload_retention,
        interval: d.purge_interval,
    };
    let (url, concurrency) = (d.dashboard_url.clone(), d.concurrency);
    let delivery = Delivery::new(store.clone(), Dashboard::new(&d)?, d, state)?;
    tracing::info!(dashboard = %url, concurrency, "delivery worker started");
    let (stop, stop_rx) = watch::channel(None);
    let purge = tokio::spawn(purge::run(store, policy, stop_rx.clone()));
    let worker = tokio::spawn(worker::run(delivery, wake, stop_rx));
    Ok(WorkerHandle {
        stop,
        worker,
        purge,
    })
}
