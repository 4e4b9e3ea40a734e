//! Copying a whole outbox into and out of PostgreSQL, for `outbox move-store`.
//!
//! A move copies records as they are (status, attempts, due time, last error, tombstones and
//! their payload hash), never as new submissions: each keeps its trace ID, receipt and
//! history. Rows are inserted with `ON CONFLICT (trace_id) DO NOTHING`, so copying the same
//! records again (a rerun after an interruption) adds only the missing ones and changes none.
//! Records arrive without a lease. Whether a row already there is the one being copied is for
//! the caller to compare ([`PgStore::copy_page`] reads rows exactly as stored).
//!
//! Quarantined entries go to `outbox_quarantine` with their reason and time. The embedded
//! store's entry (the bytes it set aside, in hex, and the status it left) is the row's
//! `record`, under the one key [`EMBEDDED_ENTRY`], which no row of `outbox_records` has, so it
//! is told apart from a row this store quarantined (`to_jsonb` of the row). Such a row moves
//! to the embedded store as an entry holding the row's JSON ([`QuarantineEntry::postgres_row`]),
//! and back as the same row: both ways, an entry comes back as it left.
//!
//! The counters of what left the table (`quarantined`, `purged`) are set to the source's
//! figures, and `accepted` brought to the source's with a row of `outbox_accepted` under
//! [`MOVE_COMMITTER`] ([`PgStore::set_moved_counters`]): set, never added, so a rerun writes
//! the same values and the accounting identity holds with the source's numbers.

use super::pool;
use super::row::{self, Columns};
use super::{PgStore, PgStoreError, NOW_MS};
use crate::store::{QuarantineEntry, Quarantined, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::Type;

/// The committer ID of the `outbox_accepted` row a move writes: fixed (the ASCII of "move"),
/// so a rerun sets the same row instead of adding one; apart from the random IDs group
/// committers choose and from the zero ID that holds a schema version 1 store's count.
pub const MOVE_COMMITTER: uuid::Uuid = uuid::Uuid::from_u128(0x6d6f_7665);

/// The key of a quarantined row's `record` that holds an entry moved from the embedded store.
pub const EMBEDDED_ENTRY: &str = "embedded_entry";

/// The figures a move writes besides the rows: what the source accepted, and what left its
/// records before the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedCounters {
    pub accepted: u64,
    pub quarantined: u64,
    pub purged: u64,
}

/// What the embedded store kept of a quarantined entry besides its reason and time.
#[derive(Debug, Serialize, Deserialize)]
struct EmbeddedEntry {
    original_hex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_body_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_status: Option<String>,
}

/// The `record` of the row a quarantined entry of the embedded store becomes: the row it was
/// if it came from this store, else the entry under [`EMBEDDED_ENTRY`].
pub fn quarantine_record(e: &QuarantineEntry) -> Value {
    if e.postgres_row {
        if let Ok(row) = serde_json::from_slice::<Value>(&e.original()) {
            return row;
        }
    }
    let entry = EmbeddedEntry {
        original_hex: e.original_hex.clone(),
        original_body_hex: e.original_body_hex.clone(),
        previous_status: e.previous_status.clone(),
    };
    serde_json::json!({ EMBEDDED_ENTRY: entry })
}

/// The embedded store's entry for a quarantined row: the entry it was if it came from there,
/// else one holding the row's JSON, with the row's status as the status it left.
pub fn quarantine_entry(reason: String, at_ms: i64, record: &Value) -> QuarantineEntry {
    let moved = match record.as_object() {
        Some(o) if o.len() == 1 => o.get(EMBEDDED_ENTRY),
        _ => None,
    };
    if let Some(Ok(e)) = moved.map(EmbeddedEntry::deserialize) {
        return QuarantineEntry {
            original_body_hex: e.original_body_hex,
            original_hex: e.original_hex,
            postgres_row: false,
            previous_status: e.previous_status,
            quarantined_at_ms: at_ms,
            reason,
        };
    }
    QuarantineEntry {
        original_body_hex: None,
        original_hex: hex::encode(record.to_string()),
        postgres_row: true,
        previous_status: record
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_owned),
        quarantined_at_ms: at_ms,
        reason,
    }
}

impl PgStore {
    /// Up to `limit` records after trace ID `after` in trace ID order, exactly as stored
    /// (a leased record shows as pending: a lease is not part of the record).
    pub async fn copy_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let rows = conn
            .client
            .query_typed(
                "SELECT * FROM outbox_records WHERE $1::text IS NULL OR trace_id > $1 \
                 ORDER BY trace_id LIMIT $2",
                &[(&after, Type::TEXT), (&(limit as i64), Type::INT8)],
            )
            .await?;
        rows.iter().map(row::record).collect()
    }

    /// Inserts records that are not there yet, as they are; returns how many were new.
    pub async fn copy_in(&self, records: &[Record]) -> Result<u64, PgStoreError> {
        let mut cols = Columns::default();
        for r in records {
            cols.push(r);
        }
        let sql = format!(
            "INSERT INTO outbox_records ({}) SELECT * FROM {} ON CONFLICT (trace_id) DO NOTHING",
            row::COLUMNS,
            row::unnest(1, false)
        );
        let conn = pool::get(&self.pool).await?;
        Ok(conn.client.execute_typed(&sql, &cols.params()).await?)
    }

    /// Every quarantined entry, in trace ID order (a trace ID quarantined more than once
    /// comes once per row, oldest first).
    pub async fn copy_quarantined(&self) -> Result<Vec<Quarantined>, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let rows = conn
            .client
            .query(
                "SELECT trace_id, reason, quarantined_at_ms, record \
                 FROM outbox_quarantine ORDER BY trace_id, id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let record: Value = r.try_get("record")?;
                Ok(Quarantined {
                    trace_id: r.try_get("trace_id")?,
                    entry: quarantine_entry(
                        r.try_get("reason")?,
                        r.try_get("quarantined_at_ms")?,
                        &record,
                    ),
                })
            })
            .collect()
    }

    /// Inserts quarantined entries whose trace ID has none yet; returns how many were new.
    /// The `quarantined` counter is the caller's ([`PgStore::set_moved_counters`]).
    pub async fn copy_in_quarantined(&self, items: &[Quarantined]) -> Result<u64, PgStoreError> {
        let (mut ids, mut reasons, mut ats, mut records) = (vec![], vec![], vec![], vec![]);
        for q in items {
            ids.push(q.trace_id.clone());
            reasons.push(q.entry.reason.clone());
            ats.push(q.entry.quarantined_at_ms);
            records.push(quarantine_record(&q.entry));
        }
        let conn = pool::get(&self.pool).await?;
        Ok(conn
            .client
            .execute_typed(
                "INSERT INTO outbox_quarantine (trace_id, reason, quarantined_at_ms, record) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::jsonb[]) \
                   AS u(trace_id, reason, at_ms, record) \
                 WHERE NOT EXISTS (SELECT 1 FROM outbox_quarantine q WHERE q.trace_id = u.trace_id)",
                &[
                    (&ids, Type::TEXT_ARRAY),
                    (&reasons, Type::TEXT_ARRAY),
                    (&ats, Type::INT8_ARRAY),
                    (&records, Type::JSONB_ARRAY),
                ],
            )
            .await?)
    }

    /// The counters as stored: `accepted` (every committer's row), `quarantined`, `purged`.
    pub async fn moved_counters(&self) -> Result<MovedCounters, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_one(
                "SELECT (SELECT coalesce(sum(value), 0)::bigint FROM outbox_accepted), \
                        coalesce((SELECT value FROM outbox_counters WHERE name = 'quarantined'), 0), \
                        coalesce((SELECT value FROM outbox_counters WHERE name = 'purged'), 0)",
                &[],
            )
            .await?;
        let n =
            |i: usize| -> Result<u64, PgStoreError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
        Ok(MovedCounters {
            accepted: n(0)?,
            quarantined: n(1)?,
            purged: n(2)?,
        })
    }

    /// What the group committers counted as accepted: every row of `outbox_accepted` but
    /// the one a move writes.
    pub async fn accepted_by_committers(&self) -> Result<u64, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_one(
                "SELECT coalesce(sum(value), 0)::bigint FROM outbox_accepted WHERE committer <> $1",
                &[&MOVE_COMMITTER],
            )
            .await?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    /// Sets the counters of what left the table to the source's figures, and the move's row
    /// of `outbox_accepted` so that `accepted` is the source's (what committers counted, for
    /// records of the source already there, plus the rest). Set, not added: a rerun writes
    /// the same values. One transaction.
    pub async fn set_moved_counters(&self, c: MovedCounters) -> Result<(), PgStoreError> {
        let mut conn = pool::get(&self.pool).await?;
        let tx = conn.client.transaction().await?;
        tx.execute(
            "INSERT INTO outbox_counters (name, value) VALUES ('quarantined', $1), ('purged', $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&(c.quarantined as i64), &(c.purged as i64)],
        )
        .await?;
        tx.execute(
            "INSERT INTO outbox_accepted (committer, value) \
             SELECT $1, $2 - (SELECT coalesce(sum(value), 0)::bigint FROM outbox_accepted \
                              WHERE committer <> $1) \
             ON CONFLICT (committer) DO UPDATE SET value = excluded.value",
            &[&MOVE_COMMITTER, &(c.accepted as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many records an instance holds a live lease on: an instance is delivering.
    pub async fn live_leases(&self) -> Result<u64, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_one(
                &format!("SELECT count(*) FROM outbox_records WHERE lease_until_ms > {NOW_MS}"),
                &[],
            )
            .await?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Status;

    #[test]
    fn an_embedded_entry_becomes_a_row_and_comes_back_the_same() {
        let mut e = QuarantineEntry::new("does not decode", 7, Some(Status::Dead), &[1, 0xff]);
        e.original_body_hex = Some("beef".into());
        let record = quarantine_record(&e);
        assert_eq!(
            record,
            serde_json::json!({"embedded_entry": {
                "original_hex": "01ff", "original_body_hex": "beef", "previous_status": "dead"
            }})
        );
        assert_eq!(quarantine_entry(e.reason.clone(), 7, &record), e);
        let bare = QuarantineEntry::new("x", 1, None, &[]);
        assert_eq!(
            quarantine_entry("x".into(), 1, &quarantine_record(&bare)),
            bare
        );
    }

    #[test]
    fn a_row_this_store_quarantined_becomes_an_entry_holding_it_and_comes_back_the_same() {
        let row = serde_json::json!({
            "trace_id": "t-1", "status": "pending", "payload": "{\"email\":\"a@example.com\"}",
            "attempts": 2, "audit": []
        });
        let e = quarantine_entry("cannot be sent".into(), 9, &row);
        assert!(e.postgres_row);
        assert_eq!(e.previous_status.as_deref(), Some("pending"));
        assert!(String::from_utf8(e.original())
            .unwrap()
            .contains("a@example.com"));
        assert_eq!(quarantine_record(&e), row);
        let stored = QuarantineEntry::decode(&e.encode());
        assert_eq!(stored, e, "the embedded store keeps the flag");
        // A row that happens to hold the key among others is still a row.
        let odd = serde_json::json!({"embedded_entry": {"original_hex": ""}, "trace_id": "t"});
        assert!(quarantine_entry("r".into(), 1, &odd).postgres_row);
    }
}
