//! Changes to one record outside delivery: an operator's replay or edit, an erasure by
//! address, and a quarantine.
//!
//! An update reads the row with `SELECT ... FOR UPDATE` in a transaction of its own, decides,
//! and writes (or deletes) in the same transaction, so nothing slips in between the read and
//! the write: two instances, or an operator and a settle, change a record one after the
//! other. A record under a live lease of any instance is being delivered and is left alone
//! ([`Updated::Busy`]): an edit or a replay of it would race the outcome its owner is about
//! to settle. A put ends any lease that ran out, so a late settle by an instance whose lease
//! expired is fenced out.
//!
//! A quarantine moves the row out of `outbox_records` into `outbox_quarantine` (the row
//! whole, as `to_jsonb`, so one whose columns no longer make a record is kept too) with the
//! reason and the time, and raises the `quarantined` counter, in one statement.
//!
//! Each of these waits at most the commit timeout; a commit that returned with a WARNING (a
//! cancelled wait for the synchronous standby) is reported as not replicated, as in the
//! group commit.

use super::pool;
use super::row::{self, Columns};
use super::{PgStore, PgStoreError, LEASED, NOW_MS};
use crate::store::lifecycle::{record_mentions, ERASE_PATIENCE};
use crate::store::{Change, Record, Updated};
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;

/// Rows read per page when an erasure looks for the records that mention an address.
const ERASE_PAGE: usize = 1000;

/// How often an erasure looks again at a record being delivered: an attempt takes about a
/// round trip to the dashboard.
const ERASE_POLL: Duration = Duration::from_millis(50);

impl PgStore {
    /// Reads, decides and writes one record atomically (replay, edit, erasure). A record
    /// under a live lease of any instance is left as it is: [`Updated::Busy`].
    pub async fn update<F: Fn(&Record) -> Change + Sync>(
        &self,
        trace_id: &str,
        decide: F,
    ) -> Result<Updated, PgStoreError> {
        let mut conn = pool::get(&self.pool).await?;
        let before = conn.warnings();
        let work = update_in(&mut conn.client, trace_id, &decide);
        let done = tokio::time::timeout(self.write_timeout, work).await;
        self.written(conn, before, done, "changing a record")
    }

    /// Removes every record whose payload or enrichment mentions `address` in any letter
    /// case ([`record_mentions`], the meaning every engine shares), dead letters included,
    /// counted as purged; waits up to [`ERASE_PATIENCE`] for a delivery of one to end. The
    /// table is read in pages in trace ID order and each record decided in Rust: a SQL
    /// filter would have to agree with Rust's lower-casing and JSON unescaping to the letter.
    pub async fn erase_address(&self, address: &str) -> Result<Vec<String>, PgStoreError> {
        let needle = address.to_lowercase();
        let mut mentioning = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let rows = self.rows_after(after.as_deref(), ERASE_PAGE).await?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            for (id, r) in rows {
                match r {
                    Ok(r) if record_mentions(&r, &needle) => mentioning.push(id),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(PgStoreError::Db(format!(
                            "{e}: it cannot be checked for the address; quarantine it and run \
                             the erasure again"
                        )))
                    }
                }
            }
        }
        let decide = |r: &Record| match record_mentions(r, &needle) {
            true => Change::Purge,
            false => Change::Keep,
        };
        let mut erased = Vec::new();
        for id in mentioning {
            let until = Instant::now() + ERASE_PATIENCE;
            loop {
                match self.update(&id, decide).await? {
                    Updated::Purged => erased.push(id),
                    Updated::Busy(_) if Instant::now() < until => {
                        tokio::time::sleep(ERASE_POLL).await;
                        continue;
                    }
                    Updated::Busy(_) => {
                        return Err(PgStoreError::StillDelivering {
                            trace_id: id,
                            waited: ERASE_PATIENCE,
                        })
                    }
                    _ => {}
                }
                break;
            }
        }
        Ok(erased)
    }

    /// Moves a record out of the lifecycle into `outbox_quarantine` with `reason`; its status
    /// count goes down as `quarantined` goes up. Nothing happens if it is not there.
    pub async fn quarantine(&self, trace_id: &str, reason: &str) -> Result<(), PgStoreError> {
        let sql = format!(
            "WITH q AS (DELETE FROM outbox_records r WHERE trace_id = $1 RETURNING r), \
             moved AS (INSERT INTO outbox_quarantine (trace_id, reason, quarantined_at_ms, record) \
               SELECT (q.r).trace_id, $2, {NOW_MS}, to_jsonb(q.r) FROM q RETURNING 1) \
             UPDATE outbox_counters SET value = value + (SELECT count(*) FROM moved) \
             WHERE name = 'quarantined'"
        );
        let conn = pool::get(&self.pool).await?;
        let before = conn.warnings();
        let work = async {
            conn.client
                .query_typed(&sql, &[(&trace_id, Type::TEXT), (&reason, Type::TEXT)])
                .await?;
            Ok(())
        };
        let done = tokio::time::timeout(self.write_timeout, work).await;
        self.written(conn, before, done, "quarantining a record")?;
        tracing::error!(trace_id, reason, "record quarantined");
        Ok(())
    }

    /// The outcome of a change given the commit timeout on `conn` (see [`pool::bounded`]);
    /// one whose commit drew a WARNING (`before`: the count when it began) is not replicated.
    fn written<T>(
        &self,
        conn: deadpool::managed::Object<pool::Manager>,
        before: u64,
        done: Result<Result<T, PgStoreError>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> Result<T, PgStoreError> {
        let warned = conn.warnings() != before;
        let out = pool::bounded(conn, done, self.write_timeout, what)?;
        match warned {
            true => Err(PgStoreError::NotReplicated(format!(
                "{what} committed with a WARNING"
            ))),
            false => Ok(out),
        }
    }
}

/// [`PgStore::update`] in one transaction on `client`.
async fn update_in(
    client: &mut tokio_postgres::Client,
    trace_id: &str,
    decide: &(dyn Fn(&Record) -> Change + Sync),
) -> Result<Updated, PgStoreError> {
    let tx = client.transaction().await?;
    let sql =
        format!("SELECT *, {LEASED} AS leased FROM outbox_records WHERE trace_id = $1 FOR UPDATE");
    let Some(found) = tx.query_typed_opt(&sql, &[(&trace_id, Type::TEXT)]).await? else {
        return Ok(Updated::NotFound);
    };
    let shown = row::shown(&found)?;
    if found.try_get::<_, bool>("leased")? {
        return Ok(Updated::Busy(shown));
    }
    let out = match decide(&shown) {
        Change::Keep => Updated::Kept(shown),
        Change::Put(new) => {
            if new.trace_id != trace_id {
                return Err(PgStoreError::Db(format!(
                    "a change of record {trace_id} may not give it another trace ID ({})",
                    new.trace_id
                )));
            }
            let mut cols = Columns::default();
            cols.push(&new);
            tx.query_typed(&row::put_sql(false), &cols.params()).await?;
            Updated::Put(new)
        }
        Change::Purge => {
            tx.query_typed(
                "WITH d AS (DELETE FROM outbox_records WHERE trace_id = $1 RETURNING 1) \
                 UPDATE outbox_counters SET value = value + (SELECT count(*) FROM d) \
                 WHERE name = 'purged'",
                &[(&trace_id, Type::TEXT)],
            )
            .await?;
            Updated::Purged
        }
    };
    tx.commit().await?;
    Ok(out)
}
