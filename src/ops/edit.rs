//! `outbox edit`: correct a record's payload (typically a dead letter the dashboard refused
//! with a 422) before replaying it.
//!
//! The record keeps an audit line with the previous payload's hash, the time and the
//! operator's note, so what was delivered can always be told apart from what was received.

use crate::ops::inspect::{view, RecordView};
use crate::store::record::{AuditEntry, Status};
use crate::store::{payload_hash, Change, Store, Updated};
use crate::time::now_ms;
use anyhow::bail;
use serde_json::{Map, Value};

/// Statuses whose payload may be changed: the worker holds in-flight records, and a
/// delivered one was already sent as it is.
pub fn editable(status: Status) -> bool {
    matches!(status, Status::Dead | Status::Pending)
}

pub fn edit(
    store: &Store,
    trace_id: &str,
    payload: Map<String, Value>,
    note: Option<String>,
) -> anyhow::Result<RecordView> {
    let text = Value::Object(payload.clone()).to_string();
    let hash = payload_hash(&payload);
    let now = now_ms();
    let outcome = store.update(trace_id, |r| {
        if !editable(r.status) || r.payload_hash == hash {
            return Change::Keep;
        }
        let mut n = r.clone();
        n.audit.push(AuditEntry {
            at_ms: now,
            action: "edit".into(),
            previous_payload_hash: Some(r.payload_hash),
            note: note.clone(),
        });
        n.payload = Some(text.clone());
        n.payload_hash = hash;
        Change::Put(n)
    })?;
    match outcome {
        Updated::NotFound => bail!("no record with trace ID {trace_id}"),
        Updated::Busy(_) => {
            bail!("record {trace_id} is being delivered right now; retry when the attempt ends")
        }
        Updated::Kept(r) if !editable(r.status) => bail!(
            "record {trace_id} is {}; only pending records and dead letters can be edited",
            r.status.as_str()
        ),
        Updated::Kept(_) => bail!("the new payload is the same as the stored one; nothing changed"),
        Updated::Put(r) => Ok(view(&r)),
        Updated::Purged => unreachable!("edit never purges"),
    }
}
