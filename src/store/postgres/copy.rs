//! Copying a whole outbox into and out of PostgreSQL, for `outbox move-store`.
//!
//! A move copies records as they are (status, attempts, due time, last error, tombstones and
//! their payload hash), never as new submissions: each keeps its trace ID, receipt and
//! history. Rows are inserted with `ON CONFLICT (trace_id) DO NOTHING`, so copying the same
//! records again (a rerun after an interruption) adds only the missing ones and changes none.
//! Records arrive without a lease. Whether a row already there is the one being copied is for
//! the caller to compare ([`PgStore::copy_page`] reads rows exactly as stored).
//!
//! Quarantined entries go to `outbox_quarantine` with their reason and the bytes the embedded
//! store set aside; the counters of what left the table (`quarantined`, `purged`) are set to
//! the source's figures ([`PgStore::set_moved_counters`]), so the accounting identity holds
//! with the source's `accepted`.

use super::pool;
use super::row::{self, Columns};
use super::{PgStore, PgStoreError, NOW_MS};
use crate::store::{QuarantineEntry, Quarantined, Record};
use tokio_postgres::types::Type;

/// The figures a move writes besides the rows: what left the source before the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedCounters {
    pub quarantined: u64,
    pub purged: u64,
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

    /// Every quarantined entry, in trace ID order.
    pub async fn copy_quarantined(&self) -> Result<Vec<Quarantined>, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let rows = conn
            .client
            .query(
                "SELECT trace_id, reason, quarantined_at_ms, previous_status, original \
                 FROM outbox_quarantine ORDER BY trace_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let original: serde_json::Value = r.try_get("original")?;
                let hex = |k: &str| original.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                Ok(Quarantined {
                    trace_id: r.try_get("trace_id")?,
                    entry: QuarantineEntry {
                        original_body_hex: hex("original_body_hex"),
                        original_hex: hex("original_hex").unwrap_or_default(),
                        previous_status: r.try_get("previous_status")?,
                        quarantined_at_ms: r.try_get("quarantined_at_ms")?,
                        reason: r.try_get("reason")?,
                    },
                })
            })
            .collect()
    }

    /// Inserts quarantined entries that are not there yet; returns how many were new.
    /// The `quarantined` counter is the caller's ([`PgStore::set_moved_counters`]).
    pub async fn copy_in_quarantined(&self, items: &[Quarantined]) -> Result<u64, PgStoreError> {
        let (mut ids, mut reasons, mut ats, mut previous, mut originals) =
            (vec![], vec![], vec![], vec![], vec![]);
        for q in items {
            ids.push(q.trace_id.clone());
            reasons.push(q.entry.reason.clone());
            ats.push(q.entry.quarantined_at_ms);
            previous.push(q.entry.previous_status.clone());
            let mut original = serde_json::json!({ "original_hex": q.entry.original_hex });
            if let Some(body) = &q.entry.original_body_hex {
                original["original_body_hex"] = body.clone().into();
            }
            originals.push(original);
        }
        let conn = pool::get(&self.pool).await?;
        Ok(conn
            .client
            .execute_typed(
                "INSERT INTO outbox_quarantine \
                   (trace_id, reason, quarantined_at_ms, previous_status, original) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::jsonb[]) \
                 ON CONFLICT (trace_id) DO NOTHING",
                &[
                    (&ids, Type::TEXT_ARRAY),
                    (&reasons, Type::TEXT_ARRAY),
                    (&ats, Type::INT8_ARRAY),
                    (&previous, Type::TEXT_ARRAY),
                    (&originals, Type::JSONB_ARRAY),
                ],
            )
            .await?)
    }

    /// The counters of what left the table, as stored.
    pub async fn moved_counters(&self) -> Result<MovedCounters, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_one(
                "SELECT coalesce((SELECT value FROM outbox_counters WHERE name = 'quarantined'), 0), \
                        coalesce((SELECT value FROM outbox_counters WHERE name = 'purged'), 0)",
                &[],
            )
            .await?;
        let n =
            |i: usize| -> Result<u64, PgStoreError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
        Ok(MovedCounters {
            quarantined: n(0)?,
            purged: n(1)?,
        })
    }

    /// Sets the counters of what left the table to the source's figures (not added: a rerun
    /// writes the same values).
    pub async fn set_moved_counters(&self, c: MovedCounters) -> Result<(), PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        conn.client
            .execute(
                "INSERT INTO outbox_counters (name, value) VALUES ('quarantined', $1), ('purged', $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&(c.quarantined as i64), &(c.purged as i64)],
            )
            .await?;
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
