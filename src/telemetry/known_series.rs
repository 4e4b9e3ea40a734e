//! Series that exist from the start, at 0.
//!
//! Prometheus sees an event in a counter only as the difference between two samples of one
//! series. A labelled counter created by its first event appears already at 1, so
//! `increase(outbox_delivery_attempts_total{outcome="dead"}[30m])` stays 0 and the alert on it
//! never fires for the first dead letter after a start. So every label value the code can
//! produce for a series that an alert rule (`ops/prometheus-alerts.yml`) or the Grafana
//! dashboard reads is registered here when the recorder is installed, at 0. A test scrapes a
//! freshly started binary and checks every series the rules and the dashboard select.

/// `outcome` values of `outbox_delivery_attempts_total` (see `delivery::round`).
pub const DELIVERY_OUTCOMES: [&str; 5] = ["delivered", "retry", "dead", "paused", "quarantined"];

/// Every status `POST /api/collect` answers itself (the 431 for an oversized head comes from
/// the HTTP layer before any route, so it is not counted under a route).
pub const COLLECT_STATUSES: [u16; 11] = [200, 202, 400, 403, 408, 409, 413, 415, 429, 500, 503];

/// `scope` values of `outbox_rate_limited_total`.
pub const RATE_LIMIT_SCOPES: [&str; 2] = ["client", "global"];

/// `reason` values of `outbox_intake_refused_total`.
pub const REFUSAL_REASONS: [&str; 2] = ["outbox_full", "disk_low"];

/// Histograms the dashboard reads; registering one renders its buckets at 0.
const HISTOGRAMS: [&str; 5] = [
    "outbox_intake_seconds",
    "outbox_commit_batch_size",
    "outbox_commit_seconds",
    "outbox_sync_seconds",
    "outbox_delivery_seconds",
];

/// Registers every known series at 0. Called once, when the recorder is installed.
pub fn register() {
    for name in [
        "outbox_honeypot_total",
        "outbox_rate_limiter_resets_total",
        "outbox_purged_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for scope in RATE_LIMIT_SCOPES {
        metrics::counter!("outbox_rate_limited_total", "scope" => scope).increment(0);
    }
    for reason in REFUSAL_REASONS {
        metrics::counter!("outbox_intake_refused_total", "reason" => reason).increment(0);
    }
    for outcome in DELIVERY_OUTCOMES {
        metrics::counter!("outbox_delivery_attempts_total", "outcome" => outcome).increment(0);
    }
    for status in COLLECT_STATUSES {
        metrics::counter!(
            "outbox_http_requests_total",
            "route" => "/api/collect",
            "status" => status.to_string()
        )
        .increment(0);
    }
    // 0 is the truth before delivery starts (or when it is off): not paused, circuit closed.
    metrics::gauge!("outbox_delivery_paused").set(0.0);
    metrics::gauge!("outbox_circuit_state").set(0.0);
    for name in HISTOGRAMS {
        let _ = metrics::histogram!(name);
    }
}
