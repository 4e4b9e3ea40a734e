//! `GET /metrics`: the Prometheus text format of the crate's metrics (the table and the
//! recorder are in [`crate::telemetry::metrics`]), with the store's gauges sampled at scrape
//! time so a scrape always shows the state of the store it is served next to.

use super::AppState;
use crate::telemetry::metrics::install;
use crate::time::now_ms;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Sets the store gauges from `state`.
pub fn sample(state: &AppState) {
    if let Ok(c) = state.store.counts() {
        for (status, n) in [
            ("pending", c.pending),
            ("in_flight", c.in_flight),
            ("delivered", c.delivered),
            ("dead", c.dead),
            ("quarantined", c.quarantined),
            ("purged", c.purged),
        ] {
            metrics::gauge!("outbox_outbox_records", "status" => status).set(n as f64);
        }
    }
    let age_s = match state.store.oldest_queued_ms() {
        Ok(Some(t)) => ((now_ms() - t).max(0) as f64) / 1000.0,
        _ => 0.0,
    };
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age_s);
    let syncing = state.store.sync_health().is_ok();
    metrics::gauge!("outbox_store_syncing").set(if syncing { 1.0 } else { 0.0 });
    metrics::gauge!("outbox_data_dir_bytes").set(state.admission.dir_bytes() as f64);
    let free = state.admission.free_bytes();
    if free != u64::MAX {
        metrics::gauge!("outbox_free_disk_bytes").set(free as f64);
    }
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let handle = install();
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || sample(&s)).await;
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
