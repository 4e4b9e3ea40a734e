//! Starting, stopping and reloading delivery: [`start`] builds the worker's [`Delivery`]
//! from the settings and spawns the worker loop and the tombstone purge;
//! [`WorkerHandle::stop`] is the shutdown step "the delivery worker stops"; [`reload_on`]
//! hands the credentials of each reload (SIGHUP, [`crate::config::reload`]) to the worker.

use super::client::Dashboard;
use super::state::Mode;
use super::step::Delivery;
use super::{retention, worker, Credentials, DeliveryState};
use crate::config::{reload, RawSettings, Settings};
use crate::store::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

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
    store: impl Into<Engine>,
    settings: &Settings,
    state: Arc<DeliveryState>,
    wake: Arc<Notify>,
) -> anyhow::Result<WorkerHandle> {
    let store = store.into();
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
    let policy = retention::Policy {
        window: settings.idempotency_window,
        retention: d.payload_retention,
        interval: d.purge_interval,
    };
    let (url, concurrency) = (d.dashboard_url.clone(), d.concurrency);
    let delivery = Delivery::new(store.clone(), Dashboard::new(&d)?, d, state)?;
    tracing::info!(dashboard = %url, concurrency, "delivery worker started");
    let (stop, stop_rx) = watch::channel(None);
    let purge = tokio::spawn(retention::run(store, policy, stop_rx.clone()));
    let worker = tokio::spawn(worker::run(delivery, wake, stop_rx));
    Ok(WorkerHandle {
        stop,
        worker,
        purge,
    })
}

/// Applies one reload: the credentials a start with `raw` would use now replace the
/// worker's, from its next attempt on, and a pause for rejected credentials ends at once. An
/// invalid configuration is logged and the old credentials stay: a typo in the file must not
/// stop delivery. A reload that finds the same credentials says so at WARN, naming where the
/// key comes from. Returns whether new credentials were taken.
pub fn reload(state: &DeliveryState, raw: &RawSettings) -> bool {
    if state.mode() == Mode::Off {
        tracing::info!("reload: delivery is off (no dashboard-url at start); nothing to reload");
        return false;
    }
    match reload::reread(raw) {
        Ok(reloaded) => {
            let creds = Credentials {
                ingest_key: reloaded.delivery.ingest_key,
                signing_secret: reloaded.delivery.signing_secret,
            };
            let changed = state.credentials().as_deref() != Some(&creds);
            let resumed = state.reload_credentials(creds);
            if changed {
                tracing::info!(resumed, "reload: delivery credentials reloaded");
            } else {
                tracing::warn!(
                    resumed,
                    key_source = %reloaded.key_source,
                    "reload: the delivery credentials did not change"
                );
            }
            changed
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload: the configuration is invalid; keeping the current credentials"
            );
            false
        }
    }
}

/// Reloads on every event from `events` (the SIGHUP channel) until it closes; `raw` holds
/// the flags and environment read at start.
pub fn reload_on(
    mut events: mpsc::UnboundedReceiver<()>,
    state: Arc<DeliveryState>,
    raw: RawSettings,
) -> tokio::task::JoinHandle<()> {
    let raw = Arc::new(raw);
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            let (state, raw) = (state.clone(), raw.clone());
            let _ = tokio::task::spawn_blocking(move || reload(&state, &raw)).await;
        }
    })
}
