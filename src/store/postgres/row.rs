//! A [`Record`] as a row of `outbox_records`, and back.
//!
//! Rows are written column-wise: each column of a group of records is one array parameter,
//! and `unnest` turns the arrays back into rows, so a group of any size is one statement
//! with a fixed text (prepared once per connection, whatever the group's size).

use super::PgStoreError;
use crate::intake::enrich::Enrichment;
use crate::store::record::{self, AuditEntry, Record, Status};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

/// The record's columns, in the order of [`Columns`] and of `unnest`'s arguments.
pub const COLUMNS: &str = "trace_id, status, attempts, received_at_ms, received_at, due_at_ms, \
    last_attempt_at_ms, last_error, last_status_code, payload_hash, payload, client_ip, \
    user_agent, src, form_type, delivered_at_ms, dead_at_ms, audit";

/// `unnest` over the 18 array parameters starting at `$first`, typed, as `u(<COLUMNS>)`;
/// with `token`, a 19th (`uuid[]`) as column `token`.
pub fn unnest(first: usize, token: bool) -> String {
    let types = [
        "text", "text", "int8", "int8", "text", "int8", "int8", "text", "int4", "bytea", "text",
        "text", "text", "text", "text", "int8", "int8", "jsonb",
    ];
    let extra: &[&str] = if token { &["uuid"] } else { &[] };
    let args: Vec<String> = types
        .iter()
        .chain(extra)
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    let names = if token { ", token" } else { "" };
    format!("unnest({}) AS u({COLUMNS}{names})", args.join(", "))
}

/// The columns of a group of records, one array each.
#[derive(Default)]
pub struct Columns {
    trace_id: Vec<String>,
    status: Vec<String>,
    attempts: Vec<i64>,
    received_at_ms: Vec<i64>,
    received_at: Vec<String>,
    due_at_ms: Vec<i64>,
    last_attempt_at_ms: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    last_status_code: Vec<Option<i32>>,
    payload_hash: Vec<Vec<u8>>,
    payload: Vec<Option<String>>,
    client_ip: Vec<String>,
    user_agent: Vec<Option<String>>,
    src: Vec<String>,
    form_type: Vec<String>,
    delivered_at_ms: Vec<Option<i64>>,
    dead_at_ms: Vec<Option<i64>>,
    audit: Vec<serde_json::Value>,
}

/// The status as stored: in flight is a lease, not a status.
fn status_text(s: Status) -> &'static str {
    match s {
        Status::InFlight => Status::Pending.as_str(),
        s => s.as_str(),
    }
}

impl Columns {
    pub fn push(&mut self, r: &Record) {
        // A tombstone keeps no client details, as the embedded store drops its body.
        let whole = record::has_body(r);
        self.trace_id.push(r.trace_id.clone());
        self.status.push(status_text(r.status).into());
        self.attempts.push(i64::from(r.attempts));
        self.received_at_ms.push(r.received_at_ms);
        self.received_at.push(r.enrichment.received_at.clone());
        self.due_at_ms.push(r.next_attempt_at_ms);
        self.last_attempt_at_ms.push(r.last_attempt_at_ms);
        self.last_error.push(r.last_error.clone());
        self.last_status_code
            .push(r.last_status_code.map(i32::from));
        self.payload_hash.push(r.payload_hash.to_vec());
        self.payload.push(r.payload.clone());
        self.client_ip.push(match whole {
            true => r.enrichment.client_ip.clone(),
            false => String::new(),
        });
        self.user_agent
            .push(r.enrichment.user_agent.clone().filter(|_| whole));
        self.src.push(r.enrichment.src.clone());
        self.form_type.push(r.enrichment.form_type.clone());
        self.delivered_at_ms.push(r.delivered_at_ms);
        self.dead_at_ms.push(r.dead_at_ms);
        self.audit
            .push(serde_json::to_value(&r.audit).expect("an audit trail serializes"));
    }

    /// The 18 parameters for [`unnest`], with their types.
    pub fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![
            (&self.trace_id, Type::TEXT_ARRAY),
            (&self.status, Type::TEXT_ARRAY),
            (&self.attempts, Type::INT8_ARRAY),
            (&self.received_at_ms, Type::INT8_ARRAY),
            (&self.received_at, Type::TEXT_ARRAY),
            (&self.due_at_ms, Type::INT8_ARRAY),
            (&self.last_attempt_at_ms, Type::INT8_ARRAY),
            (&self.last_error, Type::TEXT_ARRAY),
            (&self.last_status_code, Type::INT4_ARRAY),
            (&self.payload_hash, Type::BYTEA_ARRAY),
            (&self.payload, Type::TEXT_ARRAY),
            (&self.client_ip, Type::TEXT_ARRAY),
            (&self.user_agent, Type::TEXT_ARRAY),
            (&self.src, Type::TEXT_ARRAY),
            (&self.form_type, Type::TEXT_ARRAY),
            (&self.delivered_at_ms, Type::INT8_ARRAY),
            (&self.dead_at_ms, Type::INT8_ARRAY),
            (&self.audit, Type::JSONB_ARRAY),
        ]
    }
}

/// The record in a row selected with [`COLUMNS`] first.
pub fn record(row: &Row) -> Result<Record, PgStoreError> {
    let trace_id: String = row.try_get("trace_id")?;
    let bad = |what: &str| PgStoreError::Db(format!("record {trace_id}: {what}"));
    let status: String = row.try_get("status")?;
    let hash: Vec<u8> = row.try_get("payload_hash")?;
    let audit: serde_json::Value = row.try_get("audit")?;
    let audit: Vec<AuditEntry> =
        serde_json::from_value(audit).map_err(|e| bad(&format!("audit: {e}")))?;
    let code: Option<i32> = row.try_get("last_status_code")?;
    Ok(Record {
        status: Status::parse(&status).ok_or_else(|| bad(&format!("status {status:?}")))?,
        attempts: u32::try_from(row.try_get::<_, i64>("attempts")?).map_err(|_| bad("attempts"))?,
        received_at_ms: row.try_get("received_at_ms")?,
        next_attempt_at_ms: row.try_get("due_at_ms")?,
        last_attempt_at_ms: row.try_get("last_attempt_at_ms")?,
        last_error: row.try_get("last_error")?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        payload_hash: hash.try_into().map_err(|_| bad("payload hash"))?,
        payload: row.try_get("payload")?,
        enrichment: Enrichment {
            received_at: row.try_get("received_at")?,
            client_ip: row.try_get("client_ip")?,
            user_agent: row.try_get("user_agent")?,
            trace_id: trace_id.clone(),
            src: row.try_get("src")?,
            form_type: row.try_get("form_type")?,
        },
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        dead_at_ms: row.try_get("dead_at_ms")?,
        audit,
        trace_id,
    })
}

/// An `UPDATE` that writes every column of the records given as [`unnest`]`(1, fenced)` over
/// their rows and ends any lease on them; with `fenced`, only where the row still carries
/// the claim token in the 19th array.
pub fn put_sql(fenced: bool) -> String {
    let cols: Vec<&str> = COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "trace_id")
        .collect();
    let from: Vec<String> = cols.iter().map(|c| format!("u.{c}")).collect();
    let fence = match fenced {
        true => " AND r.claim_token = u.token",
        false => "",
    };
    format!(
        "UPDATE outbox_records r SET ({}, claim_token, lease_until_ms) = ({}, NULL, NULL) \
         FROM {} WHERE r.trace_id = u.trace_id{fence}",
        cols.join(", "),
        from.join(", "),
        unnest(1, fenced)
    )
}

/// The record in a row selected with [`COLUMNS`] and [`super::LEASED`] `AS leased`, shown as
/// the callers above the boundary see it: a pending record under a live lease is in flight.
pub fn shown(row: &Row) -> Result<Record, PgStoreError> {
    let mut r = record(row)?;
    if r.status == Status::Pending && row.try_get::<_, bool>("leased")? {
        r.status = Status::InFlight;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_put_writes_every_column_but_the_key_and_ends_the_lease() {
        let sql = super::put_sql(true);
        let (set, _) = sql.split_once(" FROM ").unwrap();
        for col in super::COLUMNS.split(',').map(str::trim) {
            assert_eq!(
                set.contains(&format!("u.{col}")),
                col != "trace_id",
                "{col}: {sql}"
            );
        }
        assert!(sql.contains("claim_token, lease_until_ms) = ("));
        assert!(sql.ends_with("r.claim_token = u.token"), "{sql}");
        assert!(!super::put_sql(false).contains("u.token"));
    }
}
