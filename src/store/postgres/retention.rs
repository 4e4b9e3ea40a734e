//! `payload-retention` in PostgreSQL: a delivered record keeps its payload and client
//! details for that long (the delivery worker's settle writes them with the tombstone when the
//! retention is not zero), then they are dropped and the drop is noted in the audit trail, as
//! the embedded store does. The tombstone itself stays for the idempotency window and goes
//! with the purge ([`PgStore::purge_delivered_before`]).
//!
//! Rows are taken oldest delivery first through the `outbox_records_delivered` index, a bounded
//! step per transaction, skipping rows another transaction holds.

use super::{pool, PgStore, PgStoreError};
use tokio_postgres::types::Type;

impl PgStore {
    /// Drops the payload (and client address and user agent) of up to `limit` records
    /// delivered before `before_ms` that still hold one, noting `audit` (a JSON array of
    /// audit entries) on each. Returns how many.
    pub async fn drop_payloads_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
        audit: &serde_json::Value,
    ) -> Result<u64, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let n = conn
            .client
            .execute_typed(
                "UPDATE outbox_records SET payload = NULL, client_ip = '', user_agent = NULL, \
                   audit = audit || $3 \
                 WHERE trace_id IN (SELECT trace_id FROM outbox_records \
                   WHERE status = 'delivered' AND delivered_at_ms < $1 AND payload IS NOT NULL \
                   ORDER BY delivered_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 AND status = 'delivered'",
                &[
                    (&before_ms, Type::INT8),
                    (&(limit as i64), Type::INT8),
                    (audit, Type::JSONB),
                ],
            )
            .await?;
        Ok(n)
    }
}
