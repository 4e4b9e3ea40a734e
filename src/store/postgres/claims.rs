//! Delivery claims as leases written to the row, so several instances share one backlog.
//!
//! A claim is one statement: `UPDATE ... SET claim_token, lease_until_ms FROM (SELECT ...
//! WHERE status = 'pending' AND due AND no live lease ORDER BY due_at_ms LIMIT n FOR UPDATE
//! SKIP LOCKED)`. Rows another instance is claiming at that moment are skipped, not waited
//! for, and no transaction or row lock is held while the record is sent. Every claim gets a
//! random token, kept in this instance's memory beside the trace ID.
//!
//! A settle writes an outcome only where the row still carries that token (fencing): if the
//! lease ran out and another instance took the record, the late owner's outcome is refused
//! ([`Updated::Busy`]) and the new owner's stands. A dead instance's leases simply run out and
//! the records are claimed again; the dashboard sees the same `Idempotency-Key` (at least
//! once, as with the embedded store after a crash). Lease times are the database's clock, so
//! the instances' clocks need not agree; due times are the instances' (as written by them).

use super::pool;
use super::row::{self, Columns};
use super::{PgStore, PgStoreError, NOW_MS};
use crate::store::{Change, Claimed, Record, Updated};
use std::collections::HashMap;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

impl PgStore {
    /// Claims up to `want` records due at or before `now_ms` that hold no live lease, earliest
    /// due first, under a lease of [`super::PgOptions::lease`].
    pub async fn claim_due(&self, now_ms: i64, want: usize) -> Result<Claimed, PgStoreError> {
        let token = Uuid::from_u128(rand::random());
        let lease_ms = self.lease.as_millis() as i64;
        // `MATERIALIZED`: the candidates are read (and locked) once; see the purge in
        // `maintenance` for what a rescan of a `LIMIT ... FOR UPDATE SKIP LOCKED` does.
        let sql = format!(
            "WITH due AS MATERIALIZED (SELECT trace_id FROM outbox_records \
               WHERE status = 'pending' AND due_at_ms <= $1 \
                 AND (lease_until_ms IS NULL OR lease_until_ms <= {NOW_MS}) \
               ORDER BY due_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox_records r SET claim_token = $3, lease_until_ms = {NOW_MS} + $4 \
             FROM due WHERE r.trace_id = due.trace_id RETURNING r.*"
        );
        let conn = pool::get(&self.pool).await?;
        let rows = conn
            .client
            .query_typed(
                &sql,
                &[
                    (&now_ms, Type::INT8),
                    (&(want as i64), Type::INT8),
                    (&token, Type::UUID),
                    (&lease_ms, Type::INT8),
                ],
            )
            .await?;
        let mut out = Claimed::default();
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for r in &rows {
            match row::record(r) {
                Ok(rec) => {
                    claims.insert(rec.trace_id.clone(), token);
                    out.records.push(rec);
                }
                Err(e) => {
                    let id: String = r.get("trace_id");
                    out.undecodable.push((id, e.to_string()));
                }
            }
        }
        out.records.sort_by(|a, b| {
            (a.next_attempt_at_ms, &a.trace_id).cmp(&(b.next_attempt_at_ms, &b.trace_id))
        });
        Ok(out)
    }

    /// When the earliest pending record that holds no live lease falls due, `None` when
    /// there is none. A record under a live lease counts from the lease's end (the database's
    /// clock, turned into this instance's): that is when another instance's claim runs out.
    pub async fn next_unclaimed_due_ms(&self) -> Result<Option<i64>, PgStoreError> {
        let sql = format!(
            "SELECT min(CASE WHEN lease_until_ms IS NULL OR lease_until_ms <= n.now THEN due_at_ms \
                        ELSE greatest(due_at_ms, lease_until_ms - n.now + $1) END) \
             FROM outbox_records, (SELECT {NOW_MS} AS now) n WHERE status = 'pending'"
        );
        let here = crate::time::now_ms();
        let conn = pool::get(&self.pool).await?;
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&here, Type::INT8)];
        let read = conn.client.query_typed_one(&sql, &params);
        let done = tokio::time::timeout(self.read_timeout, read).await;
        let row = pool::bounded(conn, done, self.read_timeout, "reading the next due time")?;
        Ok(row.try_get::<_, Option<i64>>(0)?)
    }

    /// Gives leases back unsent: the records are due as they were, no attempt spent.
    /// When PostgreSQL cannot be reached, the claims stay this instance's, so a later release
    /// or settle of those records still works.
    pub async fn release(&self, ids: &[&str]) -> Result<(), PgStoreError> {
        let (ids, tokens) = self.take_claims(ids);
        let released = async {
            let conn = pool::get(&self.pool).await?;
            conn.client
                .query_typed(
                    "UPDATE outbox_records r SET claim_token = NULL, lease_until_ms = NULL \
                     FROM unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
                     WHERE r.trace_id = c.trace_id AND r.claim_token = c.token",
                    &[(&ids, Type::TEXT_ARRAY), (&tokens, Type::UUID_ARRAY)],
                )
                .await?;
            Ok(())
        }
        .await;
        self.keep_claims_on_error(released, &ids, &tokens)
    }

    /// This instance's claims among `ids`, forgotten: the trace IDs and their tokens.
    fn take_claims(&self, ids: &[&str]) -> (Vec<String>, Vec<Uuid>) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter_map(|id| claims.remove(*id).map(|t| (id.to_string(), t)))
            .unzip()
    }

    /// Gives the claims taken by [`Self::take_claims`] back when what was to end them did not
    /// commit (PostgreSQL unreachable, the transaction failed): the rows still carry the
    /// tokens, so only with them can this instance settle or release the records before their
    /// lease runs out. A commit whose outcome is unknown is treated the same: if it did apply,
    /// the rows no longer carry the tokens and a later settle finds them not ours.
    fn keep_claims_on_error<T>(
        &self,
        result: Result<T, PgStoreError>,
        ids: &[String],
        tokens: &[Uuid],
    ) -> Result<T, PgStoreError> {
        if result.is_err() {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            for (id, token) in ids.iter().zip(tokens) {
                claims.entry(id.clone()).or_insert(*token);
            }
        }
        result
    }

    /// Whether this instance holds a lease on the record.
    pub fn is_claimed(&self, trace_id: &str) -> bool {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.contains_key(trace_id)
    }

    /// Writes the outcomes of records this instance claimed, in one transaction, where the
    /// lease is still theirs, and ends the leases. `decide` gets each record's index in `ids`
    /// and the stored record, as for the embedded store's `settle`. A record whose lease was
    /// taken over (or was never this instance's) is left alone: [`Updated::Busy`]. When the
    /// transaction does not commit, the claims stay this instance's (see
    /// [`Self::keep_claims_on_error`]).
    pub async fn settle<F: Fn(usize, &Record) -> Change>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, PgStoreError> {
        let (held, tokens) = self.take_claims(ids);
        let written = self.settle_held(ids, &held, &tokens, decide).await;
        let written = self.keep_claims_on_error(written, &held, &tokens);
        let out = written?;
        // Not ours (any more): as it is now, or gone.
        let mut results = Vec::with_capacity(ids.len());
        for (id, slot) in ids.iter().zip(out) {
            results.push(match slot {
                Some(r) => r,
                None => Ok(match self.get(id).await? {
                    Some(r) => Updated::Busy(r),
                    None => Updated::NotFound,
                }),
            });
        }
        Ok(results)
    }

    /// The transaction of [`Self::settle`] for the claims `held` with `tokens`: the outcome of
    /// each of `ids`, `None` where the record is not (or no longer) this instance's.
    async fn settle_held<F: Fn(usize, &Record) -> Change>(
        &self,
        ids: &[&str],
        held: &[String],
        tokens: &[Uuid],
        decide: F,
    ) -> Result<Vec<Option<Result<Updated, String>>>, PgStoreError> {
        let mut conn = pool::get(&self.pool).await?;
        let before = conn.warnings();
        let tx = conn.client.transaction().await?;
        let rows = tx
            .query_typed(
                "SELECT r.* FROM outbox_records r \
                 JOIN unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
                   ON r.trace_id = c.trace_id AND r.claim_token = c.token \
                 ORDER BY r.trace_id FOR UPDATE OF r",
                &[(&held, Type::TEXT_ARRAY), (&tokens, Type::UUID_ARRAY)],
            )
            .await?;
        let token_of: HashMap<&str, Uuid> = held
            .iter()
            .map(String::as_str)
            .zip(tokens.iter().copied())
            .collect();
        let mut locked: HashMap<String, Result<Record, String>> = HashMap::new();
        for r in &rows {
            let id: String = r.get("trace_id");
            locked.insert(id, row::record(r).map_err(|e| e.to_string()));
        }
        let (mut puts, mut put_tokens) = (Columns::default(), Vec::new());
        let (mut ends, mut purges) = (Vec::new(), Vec::new());
        let mut out: Vec<Option<Result<Updated, String>>> = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let (Some(stored), Some(token)) = (locked.get(*id), token_of.get(id)) else {
                out.push(None);
                continue;
            };
            let stored = match stored {
                Ok(r) => r,
                Err(reason) => {
                    ends.push((id.to_string(), *token));
                    out.push(Some(Err(reason.clone())));
                    continue;
                }
            };
            out.push(Some(Ok(match decide(i, stored) {
                Change::Keep => {
                    ends.push((id.to_string(), *token));
                    Updated::Kept(stored.clone())
                }
                Change::Put(new) => {
                    puts.push(&new);
                    put_tokens.push(*token);
                    Updated::Put(new)
                }
                Change::Purge => {
                    purges.push((id.to_string(), *token));
                    Updated::Purged
                }
            })));
        }
        if puts.len() > 0 {
            let sql = row::put_sql(true);
            let mut params = puts.params();
            params.push((&put_tokens, Type::UUID_ARRAY));
            tx.query_typed(&sql, &params).await?;
        }
        if !ends.is_empty() {
            let (ids, tokens): (Vec<String>, Vec<Uuid>) = ends.into_iter().unzip();
            tx.query_typed(
                "UPDATE outbox_records r SET claim_token = NULL, lease_until_ms = NULL \
                 FROM unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
                 WHERE r.trace_id = c.trace_id AND r.claim_token = c.token",
                &[(&ids, Type::TEXT_ARRAY), (&tokens, Type::UUID_ARRAY)],
            )
            .await?;
        }
        if !purges.is_empty() {
            let (ids, tokens): (Vec<String>, Vec<Uuid>) = purges.into_iter().unzip();
            tx.query_typed(
                "WITH d AS (DELETE FROM outbox_records r \
                   USING unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
                   WHERE r.trace_id = c.trace_id AND r.claim_token = c.token RETURNING 1) \
                 UPDATE outbox_counters SET value = value + (SELECT count(*) FROM d) \
                 WHERE name = 'purged'",
                &[(&ids, Type::TEXT_ARRAY), (&tokens, Type::UUID_ARRAY)],
            )
            .await?;
        }
        tx.commit().await?;
        if conn.warnings() != before {
            return Err(PgStoreError::NotReplicated(
                "a settle's commit returned with a WARNING".into(),
            ));
        }
        Ok(out)
    }
}
