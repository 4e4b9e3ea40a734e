//! `GET /metrics`: the Prometheus text format of the crate's metrics (the table and the
//! recorder are in [`crate::telemetry::metrics`]), with the store's gauges sampled at scrape
//! time so a scrape always shows the state of the store it is served next to: read at once
//! from the embedded store, from a sample paced by its own cost on PostgreSQL, whose counts
//! scan the shared table.

use super::AppState;
use crate::store::postgres::PgStore;
use crate::store::Engine;
use crate::telemetry::metrics::install;
use crate::time::now_ms;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Sets the gauges of the embedded store from `state` (blocking reads).
pub fn sample(state: &AppState) {
    let Engine::Embedded(store) = &state.store else {
        return;
    };
    if let Ok(c) = store.counts() {
        set_counts(&c);
    }
    let age_s = match store.oldest_queued_ms() {
        Ok(Some(t)) => ((now_ms() - t).max(0) as f64) / 1000.0,
        _ => 0.0,
    };
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age_s);
    let syncing = store.sync_health().is_ok();
    metrics::gauge!("outbox_store_syncing").set(if syncing { 1.0 } else { 0.0 });
    metrics::gauge!("outbox_data_dir_bytes").set(state.admission.dir_bytes() as f64);
    let free = state.admission.free_bytes();
    if free != u64::MAX {
        metrics::gauge!("outbox_free_disk_bytes").set(free as f64);
    }
}

fn set_counts(c: &crate::store::Counts) {
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

/// Sets the gauges of the PostgreSQL store: the counts from the store's paced sample (read
/// again when due, bounded; see [`PgStore::sampled_counts`]: counting scans the whole
/// table), the rest from the sampler's last probe. `outbox_store_syncing` is 1 while the
/// server answers.
async fn sample_postgres(state: &AppState, store: &PgStore) {
    let counts = tokio::time::timeout(READ_BOUND, store.sampled_counts()).await;
    if let Ok(Ok((c, _))) = counts {
        set_counts(&c);
    }
    let watched = state.store_watch.get();
    let age_s = match watched.last.as_ref().and_then(|p| p.oldest_queued_ms) {
        Some(t) => ((now_ms() - t).max(0) as f64) / 1000.0,
        None => 0.0,
    };
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age_s);
    let up = watched.reachable();
    metrics::gauge!("outbox_store_syncing").set(if up { 1.0 } else { 0.0 });
}

/// How long a scrape waits for the PostgreSQL store's counts.
const READ_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let handle = install();
    match &state.store {
        Engine::Embedded(_) => {
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || sample(&s)).await;
        }
        Engine::Postgres(pg) => sample_postgres(&state, pg).await,
    }
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
