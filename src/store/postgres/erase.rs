//! The erasure's reach into the quarantine: `outbox_quarantine` keeps whole rows (and entries
//! moved from a data directory) that may hold an address a privacy request asks to erase.
//! Each row is read as the embedded store's quarantine entry ([`super::copy::quarantine_entry`])
//! so that one predicate decides for both engines; the rows that mention the address go in
//! one statement that moves them from `quarantined` to `purged`, keeping the accounting.

use super::pool;
use super::{PgStore, PgStoreError};
use crate::store::QuarantineEntry;
use tokio_postgres::types::Type;

impl PgStore {
    /// Removes the quarantined rows for which `mentions` holds (all of them when `dry_run`
    /// is false; none when it is true) and returns how many there are. They count as purged.
    pub async fn erase_quarantined(
        &self,
        mentions: impl Fn(&QuarantineEntry) -> bool,
        dry_run: bool,
    ) -> Result<u64, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        // The quarantine is small (records that cannot be read or sent): read it whole.
        let rows = conn
            .client
            .query(
                "SELECT id, reason, quarantined_at_ms, record FROM outbox_quarantine",
                &[],
            )
            .await?;
        let ids: Vec<i64> = rows
            .iter()
            .filter(|r| {
                let entry = super::copy::quarantine_entry(r.get(1), r.get(2), &r.get(3));
                mentions(&entry)
            })
            .map(|r| r.get(0))
            .collect();
        if dry_run || ids.is_empty() {
            return Ok(ids.len() as u64);
        }
        let row = conn
            .client
            .query_typed_one(
                "WITH d AS (DELETE FROM outbox_quarantine WHERE id = ANY($1) RETURNING 1), \
                 n AS (SELECT count(*) AS n FROM d), \
                 q AS (UPDATE outbox_counters SET value = value - (SELECT n FROM n) \
                   WHERE name = 'quarantined'), \
                 p AS (UPDATE outbox_counters SET value = value + (SELECT n FROM n) \
                   WHERE name = 'purged') \
                 SELECT n FROM n",
                &[(&ids, Type::INT8_ARRAY)],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
