//! Reads for the accounting, and the purge of tombstones past the idempotency window.
//!
//! The accounting identity (`accepted = pending + in_flight + delivered + dead +
//! quarantined + purged`) is read in one statement, so one snapshot: the statuses are
//! counted from the table (a pending record under a live lease counts as in flight), and
//! what left the table is counted in `outbox_counters`, written in the same transaction as
//! the removal. `accepted` is the sum, never a counter that every group commit would have to
//! update (one hot row would queue the commits of every instance).
//!
//! The purge deletes tombstones oldest delivery first, [`PURGE_STEP`] at a time, each step
//! its own short transaction, so it neither holds locks for long nor keeps vacuum waiting.

use super::pool;
use super::row;
use super::{PgStore, PgStoreError, NOW_MS};
use crate::store::{Counts, Record, Status};
use tokio_postgres::types::Type;

/// Tombstones deleted per transaction by [`PgStore::purge_delivered_before`]: as the
/// embedded store's purge step, short enough that intake never waits behind it.
pub const PURGE_STEP: i64 = 500;

impl PgStore {
    /// The record under `trace_id`, shown as in flight while any instance holds a live lease.
    pub async fn get(&self, trace_id: &str) -> Result<Option<Record>, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_typed_opt(
                &format!(
                    "SELECT *, coalesce(lease_until_ms > {NOW_MS}, false) AS leased \
                     FROM outbox_records WHERE trace_id = $1"
                ),
                &[(&trace_id, Type::TEXT)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut r = row::record(&row)?;
        if r.status == Status::Pending && row.try_get::<_, bool>("leased")? {
            r.status = Status::InFlight;
        }
        Ok(Some(r))
    }

    /// The accounting counters, from one snapshot.
    pub async fn counts(&self) -> Result<Counts, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let row = conn
            .client
            .query_typed_one(
                &format!(
                    "SELECT \
                       count(*) FILTER (WHERE status = 'pending' AND NOT coalesce(lease_until_ms > {NOW_MS}, false)), \
                       count(*) FILTER (WHERE status = 'pending' AND coalesce(lease_until_ms > {NOW_MS}, false)), \
                       count(*) FILTER (WHERE status = 'delivered'), \
                       count(*) FILTER (WHERE status = 'dead'), \
                       (SELECT value FROM outbox_counters WHERE name = 'quarantined'), \
                       (SELECT value FROM outbox_counters WHERE name = 'purged') \
                     FROM outbox_records"
                ),
                &[],
            )
            .await?;
        let n =
            |i: usize| -> Result<u64, PgStoreError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
        let mut c = Counts {
            pending: n(0)?,
            in_flight: n(1)?,
            delivered: n(2)?,
            dead: n(3)?,
            quarantined: n(4)?,
            purged: n(5)?,
            accepted: 0,
        };
        c.accepted = c.pending + c.in_flight + c.delivered + c.dead + c.quarantined + c.purged;
        Ok(c)
    }

    /// Deletes every tombstone delivered before `before_ms` (the idempotency window's
    /// start), [`PURGE_STEP`] per transaction; returns how many. A record being changed by
    /// another transaction is skipped and left for the next pass.
    pub async fn purge_delivered_before(&self, before_ms: i64) -> Result<u64, PgStoreError> {
        let mut purged = 0u64;
        loop {
            let conn = pool::get(&self.pool).await?;
            let row = conn
                .client
                .query_typed_one(
                    "WITH d AS (DELETE FROM outbox_records WHERE trace_id IN ( \
                       SELECT trace_id FROM outbox_records \
                       WHERE status = 'delivered' AND delivered_at_ms < $1 \
                       ORDER BY delivered_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED) \
                       AND status = 'delivered' RETURNING 1), \
                     n AS (SELECT count(*) AS n FROM d), \
                     c AS (UPDATE outbox_counters SET value = value + (SELECT n FROM n) \
                       WHERE name = 'purged') \
                     SELECT n FROM n",
                    &[(&before_ms, Type::INT8), (&PURGE_STEP, Type::INT8)],
                )
                .await?;
            let step: i64 = row.try_get(0)?;
            purged += step.max(0) as u64;
            if step < PURGE_STEP {
                return Ok(purged);
            }
        }
    }
}
