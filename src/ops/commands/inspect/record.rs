//! `outbox inspect TRACE_ID`: one whole record, and the trace ID look-up (a unique prefix is
//! enough) that every command taking a trace ID uses.

use crate::delivery::retention::PAYLOAD_DROPPED_ACTION;
use crate::ops::commands::import_legacy::records::IMPORT_ACTION;
use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::shared::Shared;
use crate::store::record::{Record, Status};
use crate::store::RecordStore;
use crate::store::Store;
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Asks for one record as a [`RecordView`] (socket `op`: `get`). `trace_id` may be a unique
/// prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRecord {
    pub trace_id: String,
}

impl Operation for GetRecord {
    const NAME: &'static str = "get";
    const READ_ONLY: bool = true;
    type Output = RecordView;

    fn run(self, ctx: &OpsContext, _: Progress) -> anyhow::Result<RecordView> {
        let store = &*ctx.store;
        let trace_id = resolve(store, &self.trace_id)?.unwrap_or(self.trace_id);
        found(&trace_id, get(store, &trace_id)?)
    }

    fn run_shared(self, store: &Shared, _: Progress) -> anyhow::Result<RecordView> {
        let trace_id = resolve_shared(store, &self.trace_id)?.unwrap_or(self.trace_id);
        let record = store.block(store.engine().get(&trace_id))?;
        found(&trace_id, record.as_ref().map(view))
    }
}

fn found(trace_id: &str, view: Option<RecordView>) -> anyhow::Result<RecordView> {
    view.ok_or_else(|| {
        anyhow::anyhow!("no record with trace ID {trace_id} (see `outbox inspect --list`)")
    })
}

/// How many candidates an ambiguous prefix names in its error.
const SHOWN: usize = 10;

/// The trace ID that `id` names: itself when such a record exists, else the only record
/// whose ID starts with it; `None` when none does. An ambiguous prefix is an error naming
/// the candidates.
pub fn resolve(store: &Store, id: &str) -> anyhow::Result<Option<String>> {
    // The list marks a cut ID with `~` (never part of a trace ID): what precedes it is a prefix.
    let id = id.strip_suffix('~').unwrap_or(id);
    if store.contains(id)? {
        return Ok(Some(id.to_owned()));
    }
    if id.is_empty() {
        return Ok(None);
    }
    one_of(id, store.trace_ids_starting_with(id, SHOWN + 1)?)
}

/// [`resolve`] on the PostgreSQL store: the record itself, else the records after the prefix
/// in trace ID order that start with it.
pub fn resolve_shared(store: &Shared, id: &str) -> anyhow::Result<Option<String>> {
    let id = id.strip_suffix('~').unwrap_or(id);
    if store.block(store.engine().get(id))?.is_some() {
        return Ok(Some(id.to_owned()));
    }
    if id.is_empty() {
        return Ok(None);
    }
    let page = store.block(store.engine().page(Some(id), SHOWN + 1))?;
    let found = page
        .into_iter()
        .map(|r| r.trace_id)
        .take_while(|t| t.starts_with(id))
        .collect();
    one_of(id, found)
}

/// The one trace ID in `found` (those starting with `id`), `None` for none, else an error
/// naming the candidates.
fn one_of(id: &str, mut found: Vec<String>) -> anyhow::Result<Option<String>> {
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

/// When `r` was imported from the old proxy, if it was.
pub fn imported_at(r: &Record) -> Option<String> {
    r.audit
        .iter()
        .find(|a| a.action == IMPORT_ACTION)
        .map(|a| rfc3339(a.at_ms))
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
    /// Set once a delivered record no longer keeps its payload and client details, so an
    /// empty `client_ip` and a `null` payload read as dropped, not lost. `null` while kept.
    #[serde(default)]
    pub dropped: Option<Dropped>,
}

/// What a delivered record no longer keeps, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub at: String,
    pub fields: Vec<String>,
    pub reason: String,
}

/// The body a delivered record keeps only for `payload-retention` (0s by default).
const DROPPED_FIELDS: [&str; 3] = ["payload", "client_ip", "user_agent"];

fn dropped(r: &Record) -> Option<Dropped> {
    if r.status != Status::Delivered || r.payload.is_some() {
        return None;
    }
    let by_retention = r
        .audit
        .iter()
        .rev()
        .find(|a| a.action == PAYLOAD_DROPPED_ACTION);
    let (at_ms, reason) = match by_retention {
        Some(a) => (
            a.at_ms,
            "dropped when payload-retention ended after delivery",
        ),
        None => (
            r.delivered_at_ms.unwrap_or(r.received_at_ms),
            "dropped at delivery (payload-retention 0s)",
        ),
    };
    Some(Dropped {
        at: rfc3339(at_ms),
        fields: DROPPED_FIELDS.map(String::from).to_vec(),
        reason: reason.into(),
    })
}

impl Dropped {
    /// One line for `inspect ID`: `payload, client_ip and user_agent: dropped at delivery, T`.
    pub fn text(&self) -> String {
        let what = match self.fields.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => self.fields.join(""),
        };
        let how = self
            .reason
            .split_once(" (")
            .map_or(self.reason.as_str(), |(h, _)| h);
        format!(
            "{what}: {how}, {}; the tombstone keeps the trace ID, status, times and payload_sha256",
            self.at
        )
    }
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
        next_attempt_at: r.status.is_queued().then(|| rfc3339(r.next_attempt_at_ms)),
        last_attempt_at: r.last_attempt_at_ms.map(rfc3339),
        last_error: r.last_error.clone(),
        last_status_code: r.last_status_code,
        delivered_at: r.delivered_at_ms.map(rfc3339),
        dead_at: r.dead_at_ms.map(rfc3339),
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
                at: rfc3339(a.at_ms),
                action: a.action.clone(),
                previous_payload_sha256: a.previous_payload_hash.map(hex::encode),
                note: a.note.clone(),
            })
            .collect(),
        dropped: dropped(r),
    }
}

pub fn get(store: &Store, trace_id: &str) -> anyhow::Result<Option<RecordView>> {
    Ok(store.get(trace_id)?.map(|r| view(&r)))
}
