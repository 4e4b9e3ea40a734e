//! `/health` (liveness), `/health/ready` (readiness), `/health/detailed` (everything).
//!
//! Readiness reads nothing from the store per request: the embedded store's sync state is in
//! memory, and the PostgreSQL store's reachability and replication state come from the
//! sampler's last probe ([`crate::store::postgres::health`]). `/health/detailed` reads the
//! store's figures, bounded by [`STORE_READ_BOUND`] whatever the engine.

use super::AppState;
use crate::store::postgres::health::url_hosts;
use crate::store::{Engine, RecordStore, Store};
use crate::time::now_ms;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

/// How long `/health/detailed` waits for the store's figures. A probe must answer in time
/// whatever the store is doing (a settle waiting for an ops command's hold, a stalled disk);
/// past this the figures are null and `reasons` says so. Probes usually time out after 5 s
/// or more, so this leaves them room.
const STORE_READ_BOUND: Duration = Duration::from_secs(2);

/// Runs `read` on a blocking thread and waits for it up to `bound`: `None` if it took longer
/// (it then finishes on its own) or panicked.
pub(super) async fn off_runtime<T: Send + 'static>(
    bound: Duration,
    read: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let task = tokio::task::spawn_blocking(read);
    tokio::time::timeout(bound, task).await.ok()?.ok()
}

/// What `/health/detailed` reads from the store and the data directory.
#[derive(Default)]
struct StoreView {
    counts: Option<crate::store::Counts>,
    oldest: Option<i64>,
    next_due: Option<i64>,
    blobs: bool,
}

impl StoreView {
    /// The embedded store's figures (blocking reads).
    fn embedded(store: &Store) -> StoreView {
        StoreView {
            counts: store.counts().ok(),
            oldest: store.oldest_queued_ms().ok().flatten(),
            next_due: store.next_due_ms().ok().flatten(),
            blobs: std::fs::read_dir(store.path().join("blobs"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
        }
    }

    /// The figures of whichever engine runs, or `None` past [`STORE_READ_BOUND`].
    async fn read(state: &AppState) -> Option<StoreView> {
        match &state.store {
            Engine::Embedded(s) => {
                let s = s.clone();
                off_runtime(STORE_READ_BOUND, move || StoreView::embedded(&s)).await
            }
            Engine::Postgres(s) => {
                let read = async {
                    StoreView {
                        counts: RecordStore::counts(&**s).await.ok(),
                        // Sampled: the age of the oldest record waiting, from the last probe.
                        oldest: state
                            .store_watch
                            .get()
                            .last
                            .and_then(|p| p.oldest_queued_ms),
                        next_due: s.next_unclaimed_due_ms().await.ok().flatten(),
                        blobs: false,
                    }
                };
                tokio::time::timeout(STORE_READ_BOUND, read).await.ok()
            }
        }
    }
}

/// The warning `/health/detailed` and `/health/ready` carry while PostgreSQL has no
/// synchronous standby configured.
pub const ONE_SERVER: &str = "synchronous_standby_names is empty: acknowledged submissions live on one PostgreSQL server until they are delivered (lost if that server's storage is lost); configure a synchronous standby, see \"Outgrowing one machine\" in the README";

pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Reasons intake cannot take submissions now; empty when ready.
fn not_ready(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    match &state.store {
        Engine::Embedded(s) => {
            if let Some(e) = s.sync_health().error() {
                reasons.push(format!(
                    "store sync failed ({e}): restart outbox after fixing the disk"
                ));
            }
        }
        Engine::Postgres(_) => reasons.extend(postgres_not_ready(state)),
    }
    if let Some(r) = state.admission.refusal() {
        reasons.push(
            serde_json::to_value(r)
                .unwrap()
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    if state
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        reasons.push("shutting down".into());
    }
    reasons
}

/// The PostgreSQL store's reasons, from the sampler's last probe (never a query per request).
fn postgres_not_ready(state: &AppState) -> Vec<String> {
    let watched = state.store_watch.get();
    let mut reasons = Vec::new();
    if let Some(e) = &watched.error {
        reasons.push(format!(
            "the PostgreSQL store cannot be reached ({e}): posts are answered 503 until it answers again"
        ));
    }
    let require = state
        .settings
        .store
        .as_ref()
        .is_some_and(|pg| pg.require_sync_standby);
    match (&watched.last, require) {
        (_, false) => {}
        (None, true) => reasons.push("the replication state is not known yet".into()),
        (Some(p), true) if p.sync_standbys == 0 => {
            let mut why = "no synchronous standby is streaming (store-require-sync-standby is set): acknowledged submissions would live on one PostgreSQL server".to_string();
            if p.hidden_standbys > 0 {
                why.push_str(&format!(
                    "; {} standby connections are hidden from outbox's role: GRANT pg_monitor to the store-url user so it can read pg_stat_replication.sync_state",
                    p.hidden_standbys
                ));
            }
            reasons.push(why);
        }
        (Some(_), true) => {}
    }
    reasons
}

/// Problems worth a line that do not (by themselves) stop intake, or that explain a reason.
fn warnings(state: &AppState) -> Vec<String> {
    let mut w = state.delivery.warnings();
    w.extend(state.admission.disk_warning());
    if let Some(p) = state.store_watch.get().last {
        if matches!(state.store, Engine::Postgres(_)) && p.on_one_server() {
            w.push(ONE_SERVER.into());
        }
    }
    w
}

/// The `store` object of `/health/detailed`.
fn store_detail(state: &AppState, blobs: bool) -> serde_json::Value {
    match &state.store {
        Engine::Embedded(s) => json!({
            "engine": state.store.name(),
            "syncing": s.sync_health().is_ok(),
            "data_dir_bytes": state.admission.dir_bytes(),
            "free_disk_bytes": state.admission.free_bytes(),
            "blob_files_present": blobs,
        }),
        Engine::Postgres(s) => {
            let watched = state.store_watch.get();
            let pg = state.settings.store.as_ref();
            let p = watched.last.as_ref();
            json!({
                "engine": state.store.name(),
                "hosts": pg.map(|pg| url_hosts(&pg.options.url)),
                "reachable": watched.reachable(),
                "last_error": watched.error,
                "synchronous_commit": p.map_or(s.durability().synchronous_commit.as_str(), |p| p.synchronous_commit.as_str()),
                "synchronous_standby_names": p.map(|p| p.synchronous_standby_names.as_str()),
                "sync_standbys_streaming": p.map(|p| p.sync_standbys),
                "acknowledged_on_one_server": p.map(|p| p.on_one_server()),
                "require_sync_standby": pg.is_some_and(|pg| pg.require_sync_standby),
            })
        }
    }
}

/// 200 when intake can store and sync; 503 otherwise. Delivery problems (dashboard down,
/// credentials rejected) are reported in `warnings` but do not fail readiness: intake keeps
/// storing submissions while delivery is paused.
pub async fn ready(State(state): State<AppState>) -> Response {
    let reasons = not_ready(&state);
    let warnings = warnings(&state);
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "warnings": warnings,
    });
    (status, Json(body)).into_response()
}

pub async fn detailed(State(state): State<AppState>) -> Response {
    let view = StoreView::read(&state).await;
    let mut reasons = not_ready(&state);
    if view.is_none() {
        reasons.push(format!(
            "the store did not answer within {} s (an ops command may be holding writers off, or the disk is stalled); the store figures are left out",
            STORE_READ_BOUND.as_secs()
        ));
    }
    let view = view.unwrap_or_default();
    let (counts, oldest) = (view.counts, view.oldest);
    let now = now_ms();
    let delivery = state.delivery.snapshot();
    // While the circuit is open or delivery paused, nothing goes out before the next probe,
    // however long ago the records fell due.
    let held_until = state.delivery.next_probe_ms(&delivery);
    let next_attempt = view.next_due.map(|t| held_until.map_or(t, |h| t.max(h)));
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "warnings": warnings(&state),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "counts": counts,
        "accounting_balanced": counts.map(|c| c.balanced()),
        "oldest_pending_age_seconds": oldest.map(|t| ((now - t).max(0)) / 1000),
        "next_attempt_in_seconds": next_attempt.map(|t| ((t - now).max(0)) / 1000),
        "delivery": delivery,
        "store": store_detail(&state, view.blobs),
    });
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_read_that_does_not_answer_is_given_up_at_its_bound() {
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let ticks = tokio::spawn(async { tokio::task::yield_now().await });
        let got = off_runtime(Duration::from_millis(100), move || blocked.recv()).await;
        assert!(got.is_none(), "given up");
        assert!(ticks.await.is_ok(), "the runtime kept running meanwhile");
        release.send(()).unwrap();
        let quick = off_runtime(STORE_READ_BOUND, || 7).await;
        assert_eq!(quick, Some(7));
    }
}
