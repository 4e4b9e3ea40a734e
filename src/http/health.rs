//! `/health` (liveness), `/health/ready` (readiness), `/health/detailed` (everything).

use super::AppState;
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
struct StoreView {
    counts: Option<crate::store::Counts>,
    oldest: Option<i64>,
    next_due: Option<i64>,
    blobs: bool,
}

impl StoreView {
    fn read(state: &AppState) -> StoreView {
        let store = &state.store;
        StoreView {
            counts: store.counts().ok(),
            oldest: store.oldest_queued_ms().ok().flatten(),
            next_due: store.next_due_ms().ok().flatten(),
            blobs: std::fs::read_dir(store.path().join("blobs"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
        }
    }
}

pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Reasons intake cannot take submissions now; empty when ready.
fn not_ready(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(e) = state.store.sync_health().error() {
        reasons.push(format!(
            "store sync failed ({e}): restart outbox after fixing the disk"
        ));
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

/// Problems worth a line that do not (by themselves) stop intake, or that explain a reason.
fn warnings(state: &AppState) -> Vec<String> {
    let mut w = state.delivery.warnings();
    w.extend(state.admission.disk_warning());
    w
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
    let read = state.clone();
    let view = off_runtime(STORE_READ_BOUND, move || StoreView::read(&read)).await;
    let mut reasons = not_ready(&state);
    if view.is_none() {
        reasons.push(format!(
            "the store did not answer within {} s (an ops command may be holding writers off, or the disk is stalled); the store figures are left out",
            STORE_READ_BOUND.as_secs()
        ));
    }
    let view = view.unwrap_or(StoreView {
        counts: None,
        oldest: None,
        next_due: None,
        blobs: false,
    });
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
        "store": {
            "syncing": state.store.sync_health().is_ok(),
            "data_dir_bytes": state.admission.dir_bytes(),
            "free_disk_bytes": state.admission.free_bytes(),
            "blob_files_present": view.blobs,
        },
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
