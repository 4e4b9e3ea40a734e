//! Reads for the accounting (and the queue's figures that `inspect` and `top` show with it),
//! and the purge of tombstones past the idempotency window.
//!
//! The accounting identity (`accepted = pending + in_flight + delivered + dead +
//! quarantined + purged`) is read in one statement, so one snapshot: the statuses are
//! counted from the table (a pending record under a live lease counts as in flight), what
//! left the table is counted in `outbox_counters`, written in the same transaction as the
//! removal, and `accepted` is the sum of the group committers' rows of `outbox_accepted`,
//! each raised in the statement that inserts its group (see [`super::committer`]). So the
//! identity is a check that fails when a record goes missing, not a definition.
//!
//! `/metrics` reads the counts through [`PgStore::sampled_counts`], paced by their cost: the
//! statement reads every row of the table (a full scan: 173 ms at 500,000 rows, 169 MB, in
//! `benches/pg_counts.rs`), and a scrape must not cost that each time.
//!
//! The purge deletes tombstones oldest delivery first, [`PURGE_STEP`] at a time, each step
//! its own short transaction, so it neither holds locks for long nor keeps vacuum waiting.
//!
//! Every read here is bounded by [`super::PgOptions::read_timeout`] on this side, and each
//! purge step by the write timeout: a server that froze never answers, and its own
//! `statement_timeout` would never fire.

use super::pace::Pace;
use super::pool;
use super::row;
use super::{PgStore, PgStoreError, LEASED, NOW_MS};
use crate::store::{Counts, Record};
use std::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

/// The columns of [`PgStore::read_counts`]'s row that hold the counters.
const COUNT_COLUMNS: usize = 7;

/// What `inspect` and `top` show of the store's queue, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFigures {
    pub counts: Counts,
    /// When the oldest queued record (pending, claimed ones included) was received (ms).
    pub oldest_queued_ms: Option<i64>,
    /// The earliest next attempt of a queued record (ms), claimed ones included.
    pub next_attempt_ms: Option<i64>,
}

/// The counters from the first [`COUNT_COLUMNS`] columns of `row`.
fn counts_of(row: &Row) -> Result<Counts, PgStoreError> {
    let n = |i: usize| -> Result<u64, PgStoreError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
    Ok(Counts {
        pending: n(0)?,
        in_flight: n(1)?,
        delivered: n(2)?,
        dead: n(3)?,
        quarantined: n(4)?,
        purged: n(5)?,
        accepted: n(6)?,
    })
}

/// The last counts [`PgStore::sampled_counts`] read, when, and when the next read is due.
#[derive(Debug, Default)]
pub(super) struct CountsSample {
    pace: Pace,
    last: Option<(Counts, Instant)>,
}

/// Tombstones deleted per transaction by [`PgStore::purge_delivered_before`]: as the
/// embedded store's purge step, short enough that intake never waits behind it.
pub const PURGE_STEP: i64 = 500;

impl PgStore {
    /// The record under `trace_id`, shown as in flight while any instance holds a live lease.
    pub async fn get(&self, trace_id: &str) -> Result<Option<Record>, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let sql = format!("SELECT *, {LEASED} AS leased FROM outbox_records WHERE trace_id = $1");
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&trace_id, Type::TEXT)];
        let read = conn.client.query_typed_opt(&sql, &params);
        let done = tokio::time::timeout(self.read_timeout, read).await;
        let row = pool::bounded(conn, done, self.read_timeout, "reading a record")?;
        row.as_ref().map(row::shown).transpose()
    }

    /// The accounting counters, from one snapshot.
    pub async fn counts(&self) -> Result<Counts, PgStoreError> {
        let row = self.read_counts("").await?;
        counts_of(&row)
    }

    /// The counters and the queue's two times that `inspect` and `top` show, computed by
    /// the server in the scan that counts (one row comes back, whatever the table holds).
    /// A row that makes no record still counts, as in [`PgStore::counts`].
    pub async fn queue_figures(&self) -> Result<QueueFigures, PgStoreError> {
        let row = self
            .read_counts(
                ", min(received_at_ms) FILTER (WHERE status = 'pending'), \
                 min(due_at_ms) FILTER (WHERE status = 'pending')",
            )
            .await?;
        Ok(QueueFigures {
            counts: counts_of(&row)?,
            oldest_queued_ms: row.try_get(COUNT_COLUMNS)?,
            next_attempt_ms: row.try_get(COUNT_COLUMNS + 1)?,
        })
    }

    /// One row: the [`COUNT_COLUMNS`] counters, then the aggregates `more` adds (SQL
    /// starting with a comma), all from one scan of `outbox_records`. Leases are compared
    /// with the database's clock read once (a scalar subquery, evaluated before the scan):
    /// [`LEASED`] reads it again for every row, which took more than half of the scan's
    /// time (122 ms against 53 ms for 200,000 rows, PostgreSQL 15 on this project's 2-core
    /// machine).
    async fn read_counts(&self, more: &str) -> Result<Row, PgStoreError> {
        let conn = pool::get(&self.pool).await?;
        let leased = format!("coalesce(lease_until_ms > (SELECT {NOW_MS}), false)");
        let sql = format!(
            "SELECT \
               count(*) FILTER (WHERE status = 'pending' AND NOT {leased}), \
               count(*) FILTER (WHERE status = 'pending' AND {leased}), \
               count(*) FILTER (WHERE status = 'delivered'), \
               count(*) FILTER (WHERE status = 'dead'), \
               (SELECT value FROM outbox_counters WHERE name = 'quarantined'), \
               (SELECT value FROM outbox_counters WHERE name = 'purged'), \
               (SELECT coalesce(sum(value), 0)::bigint FROM outbox_accepted){more} \
             FROM outbox_records"
        );
        let read = conn.client.query_typed_one(&sql, &[]);
        let done = tokio::time::timeout(self.read_timeout, read).await;
        pool::bounded(conn, done, self.read_timeout, "reading the counters")
    }

    /// The accounting counts as `/metrics` serves them: read as [`Self::counts`] does, but
    /// only when the last read is older than its own cost allows ([`super::pace`]: at least a
    /// second, and twenty times as long as that read took); in between, that read's figures
    /// and when it started. One snapshot either way, so the identity holds in what is
    /// served. Scrapes that arrive together wait for one read. The ops commands and
    /// `/health/detailed` call [`Self::counts`] and get exact figures.
    pub async fn sampled_counts(&self) -> Result<(Counts, Instant), PgStoreError> {
        let mut sample = self.counts_sample.lock().await;
        let started = Instant::now();
        if let (false, Some(last)) = (sample.pace.due(started), sample.last) {
            return Ok(last);
        }
        let counts = self.counts().await?;
        sample.pace.took(started, started.elapsed());
        sample.last = Some((counts, started));
        Ok((counts, started))
    }

    /// Deletes up to `limit` tombstones delivered before `before_ms` (the idempotency
    /// window's start), oldest delivery first, [`PURGE_STEP`] per transaction; returns how
    /// many. A record being changed by another transaction is skipped and left for the next
    /// pass.
    ///
    /// The step's candidates are a `MATERIALIZED` CTE, read once: as an `IN (SELECT ...
    /// LIMIT n FOR UPDATE SKIP LOCKED)` subquery the planner may scan them again for each
    /// row, and each scan skips the rows this statement already deleted and locks the next
    /// `n`, so one step deleted far more than its limit.
    pub async fn purge_delivered_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<u64, PgStoreError> {
        let mut purged = 0u64;
        while purged < limit as u64 {
            let want = (limit as u64 - purged).min(PURGE_STEP as u64) as i64;
            let conn = pool::get(&self.pool).await?;
            let params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&before_ms, Type::INT8), (&want, Type::INT8)];
            let step = conn.client.query_typed_one(
                "WITH old AS MATERIALIZED (SELECT trace_id FROM outbox_records \
                       WHERE status = 'delivered' AND delivered_at_ms < $1 \
                       ORDER BY delivered_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED), \
                     d AS (DELETE FROM outbox_records r USING old \
                       WHERE r.trace_id = old.trace_id AND r.status = 'delivered' RETURNING 1), \
                     n AS (SELECT count(*) AS n FROM d), \
                     c AS (UPDATE outbox_counters SET value = value + (SELECT n FROM n) \
                       WHERE name = 'purged') \
                     SELECT n FROM n",
                &params,
            );
            let done = tokio::time::timeout(self.write_timeout, step).await;
            let row = pool::bounded(conn, done, self.write_timeout, "a purge step")?;
            let step: i64 = row.try_get(0)?;
            purged += step.max(0) as u64;
            if step < want {
                break;
            }
        }
        Ok(purged)
    }
}
