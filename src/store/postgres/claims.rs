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
//! ([`crate::store::Updated::Busy`]) and the new owner's stands. A dead instance's leases simply run out and
//! the records are claimed again; the dashboard sees the same `Idempotency-Key` (at least
//! once, as with the embedded store after a crash). Lease times are the database's clock, so
//! the instances' clocks need not agree; due times are the instances' (as written by them).
//!
//! # Bounded, and safe when the answer is lost
//! Claims, settles and releases are bounded on this side by the write timeout
//! ([`super::PgOptions::commit_timeout`]): a frozen server runs no timer of its own, and
//! keepalives are answered by its kernel, so without a bound the delivery worker (and its
//! shutdown) would wait as long as the server stays frozen. A call past its bound is
//! [`PgStoreError::Unavailable`] and its connection is closed, not reused
//! ([`pool::bounded`]); the worker pauses and retries. Such a call's outcome is not known:
//! a frozen server reads the statement when it resumes, and may commit it then.
//! - A claim commits only after its `UPDATE` answered, so one cut off before that rolls back
//!   when the server sees the socket closed. One cut off during its `COMMIT` may commit: its
//!   rows then carry a lease under a token this instance never handed to its worker. Such
//!   tokens are kept, and before its next claim the instance ends the leases that carry them
//!   ([`PgStore::end_lost_claims`]), so the records are due again at once, not after the
//!   lease; nothing was sent under them.
//! - A settle or release that timed out keeps this instance's claims
//!   ([`PgStore::keep_claims_on_error`]). Every statement here applies only where the row
//!   still carries the claim's token, and every one of them clears or replaces it, so of a
//!   late commit and its retry (or of it and a release, or another instance's claim after
//!   the lease) only the first applies; the others find the token gone and write nothing.
//!   An outcome is written at most once: a record is never counted delivered twice, nor its
//!   attempts raised twice.

use super::pool;
use super::row;
use super::{PgStore, PgStoreError, NOW_MS};
use crate::store::{Claimed, Record};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// Set in a claim's transaction: the claim reads the due index in its order and stops at its
/// `LIMIT`, whatever the planner's statistics say. Right after a backlog built up (an outage
/// of the dashboard, a bulk import) and before autovacuum's next analyze, the statistics still
/// describe a small table, and the planner then reads every due row by bitmap and sorts
/// them for each claim: `cargo bench --bench pg_drain` at 100,000 records, one instance,
/// drained 6,532 deliveries/s with 163 µs of server CPU each that way, and 16,793/s with 43
/// µs once the table was analyzed (benches/README.md, "drain").
const ORDERED_SCAN: &str = "SET LOCAL enable_sort = off";

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
        self.end_lost_claims().await?;
        let mut conn = pool::get(&self.pool).await?;
        let c: &mut pool::Conn = &mut conn;
        let claim = async {
            let tx = c.client.transaction().await?;
            tx.batch_execute(ORDERED_SCAN).await?;
            let rows = tx
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
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(rows)
        };
        let done = tokio::time::timeout(self.write_timeout, claim).await;
        let rows = match pool::bounded(conn, done, self.write_timeout, "a claim") {
            Ok(rows) => rows,
            Err(e) => {
                if e.is_unavailable() {
                    // It may have committed all the same: see `end_lost_claims`.
                    self.lost_claims().push(token);
                }
                return Err(e);
            }
        };
        let mut out = Claimed::default();
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for r in &rows {
            match row::record(r) {
                Ok(rec) => {
                    let record = rec.clone();
                    claims.insert(rec.trace_id.clone(), Held { token, record });
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

    /// Ends the leases of claims whose answer was lost (PostgreSQL unreachable, or no answer
    /// within the write timeout): such a claim may have committed, and its rows would then
    /// wait a whole lease under a token nobody holds. They are found by that token, which no
    /// other claim, settle or edit writes (each writes its own or clears it), so this ends
    /// those leases and nothing else. Done before the next claim, within the write timeout;
    /// on failure the tokens are kept and the claim fails too (the worker retries). A claim
    /// that rolled back leaves nothing to end; one still committing holds its rows' locks,
    /// which this waits for, then sees the committed token.
    async fn end_lost_claims(&self) -> Result<(), PgStoreError> {
        let lost = self.lost_claims().clone();
        if lost.is_empty() {
            return Ok(());
        }
        let conn = pool::get(&self.pool).await?;
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&lost, Type::UUID_ARRAY)];
        let end = conn.client.query_typed(
            "UPDATE outbox_records SET claim_token = NULL, lease_until_ms = NULL \
             WHERE status = 'pending' AND claim_token = ANY($1) RETURNING trace_id",
            &params,
        );
        let done = tokio::time::timeout(self.write_timeout, end).await;
        let ended = pool::bounded(conn, done, self.write_timeout, "ending lost claims")?;
        if !ended.is_empty() {
            tracing::info!(
                records = ended.len(),
                "claims whose answer was lost had committed; their leases ended, the records are due again"
            );
        }
        self.lost_claims().retain(|t| !lost.contains(t));
        Ok(())
    }

    fn lost_claims(&self) -> std::sync::MutexGuard<'_, Vec<Uuid>> {
        self.lost_claims.lock().unwrap_or_else(|e| e.into_inner())
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
        let taken = self.take_claims(ids);
        let released = async {
            let (ids, tokens) = Held::columns(&taken);
            let conn = pool::get(&self.pool).await?;
            let params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&ids, Type::TEXT_ARRAY), (&tokens, Type::UUID_ARRAY)];
            let end = conn.client.query_typed(END_LEASES, &params);
            let done = tokio::time::timeout(self.write_timeout, end).await;
            pool::bounded(conn, done, self.write_timeout, "a release").map(drop)
        }
        .await;
        self.keep_claims_on_error(released, taken)
    }

    /// This instance's claims among `ids`, forgotten.
    pub(super) fn take_claims(&self, ids: &[&str]) -> Vec<(String, Held)> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter_map(|id| claims.remove(*id).map(|h| (id.to_string(), h)))
            .collect()
    }

    /// Gives the claims taken by [`Self::take_claims`] back when what was to end them did not
    /// commit (PostgreSQL unreachable, the statement failed): the rows still carry the
    /// tokens, so only with them can this instance settle or release the records before their
    /// lease runs out. A commit whose outcome is unknown is treated the same: if it did apply,
    /// the rows no longer carry the tokens and a later settle finds them not ours.
    pub(super) fn keep_claims_on_error<T>(
        &self,
        result: Result<T, PgStoreError>,
        taken: Vec<(String, Held)>,
    ) -> Result<T, PgStoreError> {
        if result.is_err() {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            for (id, held) in taken {
                claims.entry(id).or_insert(held);
            }
        }
        result
    }

    /// Whether this instance holds a lease on the record.
    pub fn is_claimed(&self, trace_id: &str) -> bool {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.contains_key(trace_id)
    }
}

/// A lease this instance holds: its token, and the record as the claim returned it (which is
/// what the row holds while it carries the token, see [`PgStore::settle`]).
pub(super) struct Held {
    pub token: Uuid,
    pub record: Record,
}

impl Held {
    /// The trace IDs and tokens of `taken`, as the arrays the statements take.
    pub(super) fn columns(taken: &[(String, Held)]) -> (Vec<&str>, Vec<Uuid>) {
        taken.iter().map(|(id, h)| (id.as_str(), h.token)).unzip()
    }
}

/// Ends leases given as `unnest($1 trace IDs, $2 tokens)` where the row still carries the
/// token, returning the trace IDs it applied to.
pub(super) const END_LEASES: &str =
    "UPDATE outbox_records r SET claim_token = NULL, lease_until_ms = NULL \
     FROM unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
     WHERE r.trace_id = c.trace_id AND r.claim_token = c.token RETURNING r.trace_id";
