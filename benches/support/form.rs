//! The form the store-level benches submit: the ~300-byte contact form of the intake
//! benchmark, as a pending record under a fresh UUIDv7 trace ID (arrival order, as intake
//! makes them).

use outbox::intake::enrich::Enrichment;
use outbox::store::Record;

pub const BODY: &str = r#"{"name":"Maria Lopez","email":"maria.lopez@example.com","company":"Northwind Health","phone":"+1 555 0100","message":"We would like a demo for our support team of about forty agents, ideally next week. Please send a few time slots.","consent":true,"page":"/pricing"}"#;

/// The `n`th submission of [`BODY`], received now.
pub fn record(n: u64) -> Record {
    let serde_json::Value::Object(fields) = serde_json::from_str(BODY).unwrap() else {
        unreachable!("BODY is a JSON object")
    };
    Record::pending(
        fields,
        Enrichment {
            received_at: format!("2026-12-06T00:00:00.{:03}Z", n % 1000),
            client_ip: "203.0.113.7".into(),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) bench".into()),
            trace_id: uuid::Uuid::now_v7().to_string(),
            src: "bench".into(),
            form_type: "contact".into(),
        },
        outbox::time::now_ms(),
    )
}
