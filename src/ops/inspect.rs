//! `outbox inspect`: the summary, a filtered listing, and one whole record.
//!
//! JSON shapes are documented in the README ("Operations"); fields are only ever added.

use crate::delivery::DeliveryView;
use crate::store::record::{self, Record, Status};
use crate::store::{Counts, Store};
use crate::time::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub data_dir: String,
    pub counts: Counts,
    /// Whether `accepted` equals the sum of the other counts.
    pub balanced: bool,
    pub oldest_pending_at: Option<String>,
    pub oldest_pending_age_secs: Option<i64>,
    pub next_attempt_at: Option<String>,
    /// The server's delivery state (mode, circuit, last success and failure); `None`
    /// offline, where nothing is delivering.
    pub delivery: Option<Value>,
    pub disk_bytes: u64,
}

/// The summary; `held_until` is the next probe while the circuit is open or delivery paused
/// (nothing is sent before it, so the next attempt is no earlier).
pub fn summary(
    store: &Store,
    delivery: Option<DeliveryView>,
    held_until: Option<i64>,
) -> anyhow::Result<Summary> {
    let counts = store.counts()?;
    let oldest = store.oldest_queued_ms()?;
    let next = store
        .next_due_ms()?
        .map(|t| held_until.map_or(t, |h| t.max(h)));
    Ok(Summary {
        data_dir: store.path().display().to_string(),
        balanced: counts.balanced(),
        counts,
        oldest_pending_at: oldest.map(crate::time::rfc3339),
        oldest_pending_age_secs: oldest.map(|t| (now_ms() - t).max(0) / 1000),
        next_attempt_at: next.map(crate::time::rfc3339),
        delivery: delivery.map(|d| serde_json::to_value(d).expect("plain data")),
        disk_bytes: store.disk_bytes(),
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// `pending`, `in_flight`, `delivered`, `dead` or `quarantined`.
    pub status: Option<String>,
    pub form_type: Option<String>,
    /// Only records received at or after this time (ms).
    pub since_ms: Option<i64>,
    pub limit: usize,
}

/// One line of `inspect --list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub trace_id: String,
    pub status: String,
    pub form_type: String,
    /// When the submission was received (for an imported record: by the old proxy).
    pub received_at: String,
    /// The record's own receipt time in this store: the list's order and what `--since`
    /// compares (the import or the last replay for records that went through one).
    pub received_at_ms: i64,
    /// For a record imported from the old proxy: when it was imported.
    #[serde(default)]
    pub imported_at: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    /// The dashboard's last HTTP status for this record, if it answered.
    #[serde(default)]
    pub status_code: Option<u16>,
    pub last_error: Option<String>,
}

/// The rows shown, and how many matched before `limit` cut the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub rows: Vec<Row>,
    pub matched: usize,
}

/// Newest first. A full scan of `entries`: fine for an operator's query, never on a hot path.
pub fn list(store: &Store, q: &ListQuery) -> anyhow::Result<Listing> {
    if let Some(s) = &q.status {
        anyhow::ensure!(
            s == "quarantined" || Status::parse(s).is_some(),
            "unknown status {s:?}: use pending, in_flight, delivered, dead or quarantined"
        );
    }
    let wants = |status: &str, form_type: &str, at: i64| {
        q.status.as_deref().map_or(true, |s| s == status)
            && q.form_type.as_deref().map_or(true, |f| f == form_type)
            && q.since_ms.map_or(true, |t| at >= t)
    };
    let mut rows = Vec::new();
    // Claims are held in memory: a record being delivered is stored as pending.
    let claimed = store.claimed();
    for item in store.trees.entries.iter() {
        let (_, v) = item?;
        let Ok(mut r) = record::decode(&v) else {
            continue;
        };
        if r.status == Status::Pending && claimed.contains(&r.trace_id) {
            r.status = Status::InFlight;
        }
        if wants(r.status.as_str(), &r.enrichment.form_type, r.received_at_ms) {
            rows.push(row(&r));
        }
    }
    for item in store.trees.quarantine.iter() {
        let (k, v) = item?;
        let doc: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
        let at = doc["quarantined_at_ms"].as_i64().unwrap_or(0);
        if wants("quarantined", "", at) {
            rows.push(Row {
                trace_id: String::from_utf8_lossy(&k).into_owned(),
                status: "quarantined".into(),
                form_type: "?".into(),
                received_at: crate::time::rfc3339(at),
                received_at_ms: at,
                imported_at: None,
                attempts: 0,
                next_attempt_at: None,
                status_code: None,
                last_error: doc["reason"].as_str().map(str::to_owned),
            });
        }
    }
    rows.sort_by(|a, b| {
        b.received_at_ms
            .cmp(&a.received_at_ms)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    let matched = rows.len();
    rows.truncate(q.limit);
    Ok(Listing { rows, matched })
}

/// When `r` was imported from the old proxy, if it was.
fn imported_at(r: &Record) -> Option<String> {
    r.audit
        .iter()
        .find(|a| a.action == IMPORT_ACTION)
        .map(|a| crate::time::rfc3339(a.at_ms))
}

/// The audit action of a record imported from the old proxy.
pub const IMPORT_ACTION: &str = "import-legacy";

/// The trace ID that `id` names: itself when such a record exists, else the only record
/// whose ID starts with it; `None` when none does. An ambiguous prefix is an error naming
/// the candidates.
pub fn resolve(store: &Store, id: &str) -> anyhow::Result<Option<String>> {
    // The list marks a cut ID with `~` (never part of a trace ID): what precedes it is a prefix.
    let id = id.strip_suffix('~').unwrap_or(id);
    if store.trees.entries.contains_key(id)? {
        return Ok(Some(id.to_owned()));
    }
    if id.is_empty() {
        return Ok(None);
    }
    const SHOWN: usize = 10;
    let mut found = Vec::new();
    for item in store.trees.entries.scan_prefix(id).keys().take(SHOWN + 1) {
        found.push(String::from_utf8_lossy(&item?).into_owned());
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found.remove(0))),
        n => {
            let more = if n > SHOWN { ", ..." } else { "" };
            found.truncate(SHOWN);
            anyhow::bail!(
                "{id} is the start of more than one trace ID ({}{more}); give more of it",
                found.join(", ")
            )
        }
    }
}

fn row(r: &Record) -> Row {
    Row {
        trace_id: r.trace_id.clone(),
        status: r.status.as_str().into(),
        form_type: r.enrichment.form_type.clone(),
        received_at: r.enrichment.received_at.clone(),
        received_at_ms: r.received_at_ms,
        imported_at: imported_at(r),
        attempts: r.attempts,
        next_attempt_at: r
            .status
            .is_queued()
            .then(|| crate::time::rfc3339(r.next_attempt_at_ms)),
        status_code: r.last_status_code,
        last_error: r.last_error.clone(),
    }
}

/// A whole record for `inspect TRACE_ID`, the payload as JSON (not as text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordView {
    pub trace_id: String,
    pub status: String,
    pub attempts: u32,
    /// When the submission was received (for an imported record: by the old proxy).
    pub received_at: String,
    /// For a record imported from the old proxy: when it was imported (the time its
    /// delivery age and queue order count from).
    #[serde(default)]
    pub imported_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub delivered_at: Option<String>,
    pub dead_at: Option<String>,
    pub payload_sha256: String,
    /// `null` once dropped after delivery.
    pub payload: Value,
    pub enrichment: crate::intake::enrich::Enrichment,
    pub audit: Vec<AuditView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditView {
    pub at: String,
    pub action: String,
    pub previous_payload_sha256: Option<String>,
    pub note: Option<String>,
}

pub fn view(r: &Record) -> RecordView {
    RecordView {
        trace_id: r.trace_id.clone(),
        status: r.status.as_str().into(),
        attempts: r.attempts,
        received_at: r.enrichment.received_at.clone(),
        imported_at: imported_at(r),
        next_attempt_at: r
            .status
            .is_queued()
            .then(|| crate::time::rfc3339(r.next_attempt_at_ms)),
        last_attempt_at: r.last_attempt_at_ms.map(crate::time::rfc3339),
        last_error: r.last_error.clone(),
        last_status_code: r.last_status_code,
        delivered_at: r.delivered_at_ms.map(crate::time::rfc3339),
        dead_at: r.dead_at_ms.map(crate::time::rfc3339),
        payload_sha256: hex::encode(r.payload_hash),
        payload: r
            .payload
            .as_deref()
            .map(|p| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.to_owned())))
            .unwrap_or(Value::Null),
        enrichment: r.enrichment.clone(),
        audit: r
            .audit
            .iter()
            .map(|a| AuditView {
                at: crate::time::rfc3339(a.at_ms),
                action: a.action.clone(),
                previous_payload_sha256: a.previous_payload_hash.map(hex::encode),
                note: a.note.clone(),
            })
            .collect(),
    }
}

pub fn get(store: &Store, trace_id: &str) -> anyhow::Result<Option<RecordView>> {
    Ok(store.get(trace_id)?.map(|r| view(&r)))
}
