//! `/health` (liveness), `/health/ready` (readiness), `/health/detailed` (everything).

use super::AppState;
use crate::time::now_ms;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
    let counts = state.store.counts().ok();
    let now = now_ms();
    let oldest = state.store.oldest_queued_ms().ok().flatten();
    let reasons = not_ready(&state);
    let delivery = state.delivery.snapshot();
    // While the circuit is open or delivery paused, nothing goes out before the next probe,
    // however long ago the records fell due.
    let held_until = state.delivery.next_probe_ms(&delivery);
    let next_attempt = state
        .store
        .next_due_ms()
        .ok()
        .flatten()
        .map(|t| held_until.map_or(t, |h| t.max(h)));
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
            "blob_files_present": std::fs::read_dir(state.store.path().join("blobs")).map(|mut d| d.next().is_some()).unwrap_or(false),
        },
    });
    Json(body).into_response()
}
