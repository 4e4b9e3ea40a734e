//! A backlog for the benchmarks: `n` pending ~300-byte JSON forms stored through the same
//! group committer intake uses.

use outbox::intake::enrich::Enrichment;
use outbox::store::{Record, Store};
use outbox::time::format_time;
use std::path::Path;
use std::sync::Arc;

pub fn record(i: usize) -> Record {
    let now = chrono::Utc::now();
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "name": format!("Visitor {i}"), "email": format!("visitor{i}@example.com"),
        "company": "Northwind Health", "message": "We would like a demo for our support team of about forty agents, ideally next week.",
        "page": "/pricing", "consent": true
    }))
    .unwrap();
    let trace_id = uuid::Uuid::now_v7().to_string();
    Record::pending(
        fields,
        Enrichment {
            received_at: format_time(now),
            client_ip: "203.0.113.7".into(),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
                    .into(),
            ),
            trace_id,
            src: "site-proxy".into(),
            form_type: "demo_request".into(),
        },
        now.timestamp_millis(),
    )
}

/// Submissions in flight while filling: as many as the intake bench's connections, so the
/// committer's groups are the size a backlog posted over HTTP gets (the RSS while draining
/// depends on it: see benches/README.md).
const FILL_IN_FLIGHT: usize = 64;

/// Stores `n` records through the group committer, [`FILL_IN_FLIGHT`] at a time.
pub async fn fill_store(dir: &Path, n: usize) {
    let store = Arc::new(Store::open(dir).unwrap());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= FILL_IN_FLIGHT {
            set.join_next().await.unwrap().unwrap();
        }
        let s = store.clone();
        set.spawn(async move { s.submit(record(i)).await.unwrap() });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    store.sync().unwrap();
}
