//! The crate's metrics: every exported name in one table ([`METRICS`]), and the one
//! process-wide Prometheus recorder.
//!
//! Code anywhere in the crate (intake, store, delivery) records through the `metrics`
//! macros; [`install`] installs the recorder (once, because tests start many apps in one
//! process) and describes every name in [`METRICS`], so dashboards and alert rules can be
//! checked against a single list. `GET /metrics` ([`crate::http::metrics`]) renders it.
//!
//! Latency and size histograms are rendered as Prometheus histograms (`_bucket`, `_sum`,
//! `_count`) with the buckets below, so percentiles can be aggregated across scrapes with
//! `histogram_quantile`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// What kind of series a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric outbox exports: name, kind, help text. Grafana dashboards and alert rules
/// refer only to these names, and a test checks that nothing else is emitted.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "outbox_http_requests_total",
        Kind::Counter,
        "HTTP requests by route and status",
    ),
    (
        "outbox_intake_seconds",
        Kind::Histogram,
        "time to answer a submission that reached the store (body read, parse, durable commit); refusals before the store are not counted",
    ),
    (
        "outbox_commit_batch_size",
        Kind::Histogram,
        "submissions made durable by one group commit",
    ),
    (
        "outbox_commit_seconds",
        Kind::Histogram,
        "time of one group commit (transaction, flush and fdatasync)",
    ),
    (
        "outbox_sync_seconds",
        Kind::Histogram,
        "time of the fdatasync that makes flushed group commits durable",
    ),
    (
        "outbox_honeypot_total",
        Kind::Counter,
        "posts with the honeypot field filled, answered and not stored",
    ),
    (
        "outbox_rate_limited_total",
        Kind::Counter,
        "requests refused with 429, by scope (client or global)",
    ),
    (
        "outbox_rate_limiter_resets_total",
        Kind::Counter,
        "times the per-client limiter was cleared because it tracked too many addresses",
    ),
    (
        "outbox_intake_refused_total",
        Kind::Counter,
        "submissions refused with 503 by admission control, by reason",
    ),
    (
        "outbox_outbox_records",
        Kind::Gauge,
        "records in the store by status",
    ),
    (
        "outbox_oldest_pending_age_seconds",
        Kind::Gauge,
        "age of the oldest record waiting for delivery (0 when none)",
    ),
    (
        "outbox_store_syncing",
        Kind::Gauge,
        "1 while the store can fsync, 0 after a failed sync",
    ),
    (
        "outbox_data_dir_bytes",
        Kind::Gauge,
        "size of the data directory",
    ),
    (
        "outbox_free_disk_bytes",
        Kind::Gauge,
        "free space on the data directory's filesystem",
    ),
    (
        "outbox_delivery_attempts_total",
        Kind::Counter,
        "delivery attempts by outcome",
    ),
    (
        "outbox_delivery_seconds",
        Kind::Histogram,
        "time of one delivery attempt",
    ),
    (
        "outbox_circuit_state",
        Kind::Gauge,
        "delivery circuit breaker state: 0 closed, 1 half_open, 2 open",
    ),
    (
        "outbox_delivery_paused",
        Kind::Gauge,
        "1 while delivery is paused (credentials rejected)",
    ),
    (
        "outbox_purged_total",
        Kind::Counter,
        "delivered tombstones removed by the periodic purge once the idempotency window has passed",
    ),
];

/// Buckets for latencies, in seconds: 0.5 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for commit batch sizes: one submission to a few thousand at once.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call; later calls return the same handle.
/// If another recorder was installed first, ours still renders but stays empty.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("outbox_commit_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    super::known_series::register();
}

/// Drains histogram samples into their buckets; called periodically so memory stays flat
/// when nobody scrapes.
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

/// The metric names (without `_bucket`/`_sum`/`_count`/`{labels}`) present in a rendering.
pub fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|base| METRICS.iter().any(|m| m.0 == *base))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, help) in METRICS {
            assert!(seen.insert(*name), "{name} listed twice");
            assert!(
                name.starts_with("outbox_"),
                "{name} lacks the outbox_ prefix"
            );
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!help.is_empty());
            if *kind == Kind::Counter {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
        }
    }

    #[test]
    fn rendering_names_strip_histogram_suffixes() {
        let text = "# HELP outbox_commit_seconds x\n\
                    outbox_commit_seconds_bucket{le=\"0.1\"} 1\n\
                    outbox_commit_seconds_sum 0.01\n\
                    outbox_http_requests_total{route=\"/health\",status=\"200\"} 3\n";
        let names: Vec<String> = names_in(text).into_iter().collect();
        assert_eq!(
            names,
            ["outbox_commit_seconds", "outbox_http_requests_total"]
        );
    }
}
