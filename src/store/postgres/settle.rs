//! Writing the outcomes of delivery attempts ([`PgStore::settle`]): one statement per kind of
//! change (a new version of the record, a lease ended with the record kept, a record purged),
//! each fenced by the claim tokens this instance holds ([`super::claims`] says why that keeps
//! a write cut off by the write timeout from applying twice), in one transaction when more
//! than one kind is asked.

use super::claims::{Held, END_LEASES};
use super::pool;
use super::row::{self, Columns};
use super::{PgStore, PgStoreError};
use crate::store::{Change, Record, Updated};
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;
use uuid::Uuid;

impl PgStore {
    /// Writes the outcomes of records this instance claimed where the lease is still theirs,
    /// and ends the leases. `decide` gets each record's index in `ids` and the record as it
    /// is stored, as for the embedded store's `settle`. A record whose lease was taken over
    /// (or was never this instance's) is left alone: [`Updated::Busy`]. When nothing commits,
    /// the claims stay this instance's (see [`Self::keep_claims_on_error`]).
    ///
    /// The stored record is the copy this instance claimed: every write to a row (a claim, a
    /// settle, an operator's edit or replay) replaces or clears its token, and an edit,
    /// erasure or quarantine waits for a live lease, so while the row still carries our token
    /// it is exactly what the claim returned. The statements are fenced by that token, so
    /// deciding on the claimed copy needs no read of the row first: the usual settle (every
    /// outcome a new version of the record) is one `UPDATE ... FROM unnest(...)` in one round
    /// trip and one commit, which is what bounds the drain (benches/README.md, "drain").
    pub async fn settle<F: Fn(usize, &Record) -> Change>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, PgStoreError> {
        let taken = self.take_claims(ids);
        let held: HashMap<&str, &Held> = taken.iter().map(|(id, h)| (id.as_str(), h)).collect();
        let mut plan = Plan::default();
        for (i, id) in ids.iter().enumerate() {
            let slot = held.get(id).map(|h| (decide(i, &h.record), *h));
            if let Some((change, h)) = &slot {
                plan.add(id, h, change);
            }
            plan.slots.push(slot.map(|(change, _)| change));
        }
        let written = self.write_plan(&plan).await;
        drop(held);
        let applied = self.keep_claims_on_error(written, taken)?;
        let mut results = Vec::with_capacity(ids.len());
        for (id, slot) in ids.iter().zip(plan.slots) {
            results.push(Ok(match slot {
                Some(change) if applied.contains(*id) => match change {
                    Change::Put(new) => Updated::Put(new),
                    Change::Keep => Updated::Kept(plan.kept.remove(*id).expect("kept above")),
                    Change::Purge => Updated::Purged,
                },
                // Not ours (any more): as it is now, or gone.
                _ => match self.get(id).await? {
                    Some(r) => Updated::Busy(r),
                    None => Updated::NotFound,
                },
            }));
        }
        Ok(results)
    }

    /// Runs the statements of `plan`, each fenced by the claim tokens: one statement on its
    /// own (autocommit) when only one kind of change is asked, else one transaction. Returns
    /// the trace IDs the statements applied to.
    async fn write_plan(&self, plan: &Plan<'_>) -> Result<HashSet<String>, PgStoreError> {
        let mut conn = pool::get(&self.pool).await?;
        let before = conn.warnings();
        let kinds = [plan.puts.len(), plan.ends.0.len(), plan.purges.0.len()];
        let c: &mut pool::Conn = &mut conn;
        let write = async {
            let mut applied = HashSet::new();
            if kinds.iter().filter(|n| **n > 0).count() > 1 {
                let tx = c.client.transaction().await?;
                plan.run(&tx, &mut applied).await?;
                tx.commit().await?;
            } else {
                plan.run(&c.client, &mut applied).await?;
            }
            Ok::<_, PgStoreError>(applied)
        };
        let done = tokio::time::timeout(self.write_timeout, write).await;
        let warned = conn.warnings() != before;
        let applied = pool::bounded(conn, done, self.write_timeout, "writing delivery outcomes")?;
        if warned {
            return Err(PgStoreError::NotReplicated(
                "a settle's commit returned with a WARNING".into(),
            ));
        }
        Ok(applied)
    }
}

/// Deletes the rows given as in [`END_LEASES`] and counts them purged.
const PURGE_HELD: &str = "WITH d AS (DELETE FROM outbox_records r \
       USING unnest($1::text[], $2::uuid[]) AS c(trace_id, token) \
       WHERE r.trace_id = c.trace_id AND r.claim_token = c.token RETURNING r.trace_id), \
     n AS (UPDATE outbox_counters SET value = value + (SELECT count(*) FROM d) \
       WHERE name = 'purged') \
     SELECT trace_id FROM d";

/// The statements of one settle, grouped by kind.
#[derive(Default)]
struct Plan<'a> {
    /// Per trace ID asked: the change decided, `None` where the claim is not ours.
    slots: Vec<Option<Change>>,
    puts: Vec<Record>,
    put_tokens: Vec<Uuid>,
    ends: (Vec<&'a str>, Vec<Uuid>),
    purges: (Vec<&'a str>, Vec<Uuid>),
    /// The stored copies of records kept as they are, for [`Updated::Kept`].
    kept: HashMap<String, Record>,
}

impl<'a> Plan<'a> {
    fn add(&mut self, id: &'a str, held: &Held, change: &Change) {
        match change {
            Change::Put(new) => {
                self.puts.push(new.clone());
                self.put_tokens.push(held.token);
            }
            Change::Keep => {
                self.ends.0.push(id);
                self.ends.1.push(held.token);
                self.kept.insert(id.to_string(), held.record.clone());
            }
            Change::Purge => {
                self.purges.0.push(id);
                self.purges.1.push(held.token);
            }
        }
    }

    async fn run(
        &self,
        client: &impl GenericClient,
        applied: &mut HashSet<String>,
    ) -> Result<(), PgStoreError> {
        let mut rows = Vec::new();
        if !self.puts.is_empty() {
            let mut cols = Columns::default();
            for r in &self.puts {
                cols.push(r);
            }
            let sql = format!("{} RETURNING r.trace_id", row::put_sql(true));
            let mut params = cols.params();
            params.push((&self.put_tokens, Type::UUID_ARRAY));
            rows.extend(client.query_typed(&sql, &params).await?);
        }
        for (sql, (ids, tokens)) in [(END_LEASES, &self.ends), (PURGE_HELD, &self.purges)] {
            if !ids.is_empty() {
                let params: [(&(dyn ToSql + Sync), Type); 2] =
                    [(ids, Type::TEXT_ARRAY), (tokens, Type::UUID_ARRAY)];
                rows.extend(client.query_typed(sql, &params).await?);
            }
        }
        applied.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        Ok(())
    }
}
