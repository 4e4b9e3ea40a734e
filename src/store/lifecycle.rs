//! The record lifecycle every engine behind the store boundary shares: what a submission
//! found, what a change to a record decides and did, what a claim took, and which records an
//! erasure removes. The engines keep records their own way; these meanings are the same in
//! all of them, so the intake path, the delivery worker and the ops commands read one set.

use super::record::{Receipt, Record};
use serde_json::Value;

/// What `submit` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Newly stored (and, once returned from `Store::submit`, fsynced).
    Stored(Receipt),
    /// The same trace ID with the same payload hash: the original receipt.
    Duplicate(Receipt),
    /// The same trace ID with a different payload.
    Conflict(Receipt),
}

/// What an update closure decides for a record. Returned once per update and never stored,
/// so the record is not boxed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    Keep,
    Put(Record),
    /// Remove the record; it counts as purged.
    Purge,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    NotFound,
    /// The delivery worker is sending this record right now: left as it is.
    Busy(Record),
    Kept(Record),
    Put(Record),
    Purged,
}

/// What a claim of due records found ([`super::RecordStore::claim_due`]).
#[derive(Debug, Default)]
pub struct Claimed {
    /// Now claimed, earliest due first.
    pub records: Vec<Record>,
    /// Due entries whose record does not decode, with the reason: the caller quarantines them.
    pub undecodable: Vec<(String, String)>,
}

/// How long an erasure waits for the delivery of a record it must erase to end: one
/// attempt is bounded by the request timeout, far below this.
pub const ERASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `haystack` contains `needle_lower` in any letter case.
pub fn mentions(haystack: &str, needle_lower: &str) -> bool {
    haystack.to_lowercase().contains(needle_lower)
}

fn value_mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => mentions(s, needle),
        Value::Array(a) => a.iter().any(|x| value_mentions(x, needle)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| mentions(k, needle) || value_mentions(x, needle)),
        _ => false,
    }
}

/// Whether a record holds the address in its payload or enrichment.
pub fn record_mentions(r: &Record, needle_lower: &str) -> bool {
    let payload = r.payload.as_deref().unwrap_or("");
    let parsed = serde_json::from_str::<Value>(payload).unwrap_or(Value::Null);
    let e = &r.enrichment;
    mentions(payload, needle_lower)
        || value_mentions(&parsed, needle_lower)
        || [
            &e.client_ip,
            &e.trace_id,
            &e.src,
            &e.form_type,
            &e.received_at,
        ]
        .iter()
        .any(|s| mentions(s, needle_lower))
        || e.user_agent
            .as_deref()
            .is_some_and(|ua| mentions(ua, needle_lower))
}
