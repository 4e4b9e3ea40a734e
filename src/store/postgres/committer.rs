//! Group commit into PostgreSQL.
//!
//! Submissions wait in a channel; a committer task takes every one waiting (up to
//! [`MAX_BATCH`]) and stores them with ONE statement outside any explicit transaction:
//! `INSERT ... SELECT FROM unnest(...) ON CONFLICT (trace_id) DO NOTHING RETURNING trace_id`.
//! The statement is its own transaction, so one round trip and one commit (one WAL flush, one
//! wait for the synchronous standby) cover the whole group. The statement returns only after
//! `ReadyForQuery`, which the server sends after the COMMIT, so an answer here is an answer
//! about the commit. [`COMMITTERS`] tasks take turns, so one group is collected while the
//! previous one commits.
//!
//! The statement is prepared once per connection (named, at the connection's first group) and
//! then only bound and executed: planning it alone took 0.25 to 0.45 ms of the server's time
//! for a group of 17 rows, about as long as executing it (`benches/README.md`, `pg_http`). Behind PgBouncer in
//! transaction mode a named statement needs PgBouncer 1.21+ with `max_prepared_statements`;
//! with [`super::PgOptions::sync_per_transaction`] (older PgBouncers) the statement is sent
//! unnamed inside the group's own transaction instead, as before.
//!
//! A group is acknowledged only if its commit returned without a WARNING on its connection:
//! PostgreSQL reports a cancelled wait for the synchronous standby ("committed locally, but
//! might not have been replicated") as a success with a WARNING, and that is not durable
//! enough to answer 2xx ([`PgStoreError::NotReplicated`]). A lost connection, an error or a
//! group that did not commit within the commit timeout is answered as unavailable, never as
//! stored; the connection is then closed rather than reused (the commit is never cancelled).
//! The client's retry with the same key finds the row or not, and gets 200 or 202.
//!
//! The same statement raises `accepted` by the rows it inserted (a conflict inserts none), on
//! a counter row of this committer's own (`outbox_accepted`, keyed by a random ID each
//! committer task picks when it starts): the count commits with the rows, and no two
//! committers, of this instance or another, ever wait for one another's counter row.
//!
//! Trace IDs not returned were there already. They are read back in a transaction of their
//! own that locks the rows it reads (`FOR KEY SHARE`, the weakest lock): a row lock is written
//! to the WAL, so this commit waits for the standby like any write (a transaction that wrote
//! no WAL would not wait), and as its WAL comes after the original's, a 200 is only said once
//! the original is replicated too (it may have been committed locally only, by a cancelled
//! wait).

use super::pool::{self, Pool};
use super::row::{self, Columns};
use super::{PgStoreError, SyncCommit};
use crate::store::record::Record;
use crate::store::SubmitOutcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Most submissions in one group: bounds one statement's parameters and one commit's size.
pub const MAX_BATCH: usize = 1024;
/// Committer tasks: while one group commits, the next is collected and sent.
pub const COMMITTERS: usize = 2;
/// Submissions waiting at most: past this, `submit` waits for room (back-pressure).
const QUEUE: usize = 8 * MAX_BATCH;

type Reply = oneshot::Sender<Result<SubmitOutcome, PgStoreError>>;

/// Whether the last group commit failed, so an outage is logged when it starts and ends.
static FAILING: AtomicBool = AtomicBool::new(false);

pub(super) struct Committer {
    tx: mpsc::Sender<(Record, Reply)>,
}

impl Committer {
    /// `per_transaction`: the `synchronous_commit` to `SET LOCAL` in each group's own
    /// transaction, when it is not a startup option (see [`super::PgOptions`]).
    pub fn start(
        pool: Pool,
        commit_timeout: Duration,
        per_transaction: Option<SyncCommit>,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            let (rx, pool) = (rx.clone(), pool.clone());
            // This task's row of `outbox_accepted`.
            let counter = uuid::Uuid::from_u128(rand::random());
            tokio::spawn(async move {
                while let Some(group) = next_group(&rx).await {
                    commit(&pool, counter, group, commit_timeout, per_transaction).await;
                }
            });
        }
        Committer { tx }
    }

    pub async fn submit(&self, record: Record) -> Result<SubmitOutcome, PgStoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((record, reply))
            .await
            .map_err(|_| PgStoreError::Closed)?;
        answer.await.map_err(|_| PgStoreError::Closed)?
    }
}

/// Every submission waiting, at least one; `None` once the store is dropped.
async fn next_group(rx: &Mutex<mpsc::Receiver<(Record, Reply)>>) -> Option<Vec<(Record, Reply)>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(s) => group.push(s),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn commit(
    pool: &Pool,
    counter: uuid::Uuid,
    group: Vec<(Record, Reply)>,
    timeout: Duration,
    per_tx: Option<SyncCommit>,
) {
    metrics::histogram!("outbox_commit_batch_size").record(group.len() as f64);
    let started = std::time::Instant::now();
    let (records, replies): (Vec<Record>, Vec<Reply>) = group.into_iter().unzip();
    let outcomes = store(pool, counter, &records, timeout, per_tx).await;
    metrics::histogram!("outbox_commit_seconds").record(started.elapsed().as_secs_f64());
    match outcomes {
        Ok(outcomes) => {
            if FAILING.swap(false, Ordering::Relaxed) {
                tracing::info!("group commits are acknowledged again");
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            // Once per outage, not once per group: the refused posts are counted and
            // summarized by intake's own log line.
            match FAILING.swap(true, Ordering::Relaxed) {
                false => {
                    tracing::error!(error = %e, submissions = records.len(), "a group commit was not acknowledged; its submissions are answered 503 (further failures are logged at debug until a commit succeeds)")
                }
                true => {
                    tracing::debug!(error = %e, submissions = records.len(), "a group commit was not acknowledged")
                }
            }
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Stores `records` (one statement, one commit) and answers each: stored, duplicate or
/// conflict, or an error for the one record whose original vanished meanwhile.
async fn store(
    pool: &Pool,
    counter: uuid::Uuid,
    records: &[Record],
    timeout: Duration,
    per_tx: Option<SyncCommit>,
) -> Result<Vec<Result<SubmitOutcome, PgStoreError>>, PgStoreError> {
    // The first of each trace ID goes to the database; later ones in the group are answered
    // against it, as repeats within one sled transaction are.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        first.entry(&r.trace_id).or_insert(i);
    }
    // Inserted in trace ID order: two instances inserting the same keys then wait for one
    // another in one order, never in a cycle (a deadlock PostgreSQL would break by failing
    // one group).
    let mut order: Vec<usize> = first.values().copied().collect();
    order.sort_by(|a, b| records[*a].trace_id.cmp(&records[*b].trace_id));
    let mut cols = Columns::default();
    for i in order {
        cols.push(&records[i]);
    }
    let mut conn = pool::get(pool).await?;
    let before = conn.warnings();
    let mut params = cols.params();
    params.push((&counter, tokio_postgres::types::Type::UUID));
    let c: &mut pool::Conn = &mut conn;
    let insert = async {
        match per_tx {
            None => {
                let statement = match &c.insert {
                    Some(s) => s.clone(),
                    None => {
                        let types: Vec<_> = params.iter().map(|(_, t)| t.clone()).collect();
                        let s = c.client.prepare_typed(&INSERT, &types).await?;
                        c.insert.insert(s).clone()
                    }
                };
                let values: Vec<_> = params.iter().map(|(v, _)| *v).collect();
                let rows = c.client.query(&statement, &values).await;
                if rows.is_err() {
                    // Prepared again by the next group: a statement the server no longer
                    // knows or whose plan went stale (a newer schema) fails once, not forever.
                    c.insert = None;
                }
                rows
            }
            Some(level) => {
                let tx = c.client.transaction().await?;
                tx.batch_execute(&set_local(level)).await?;
                let rows = tx.query_typed(&INSERT, &params).await?;
                tx.commit().await?;
                Ok(rows)
            }
        }
    };
    let inserted = tokio::time::timeout(timeout, insert).await;
    drop(params);
    let inserted = match inserted {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            let e = super::classify(e);
            if matches!(e, PgStoreError::Unavailable(_)) {
                let _ = managed_take(conn);
            }
            return Err(e);
        }
        // Still committing (a standby that does not answer): closed, not reused, so no one
        // queues behind it; the server ends the wait when it sees the socket close.
        Err(_) => {
            let _ = managed_take(conn);
            return Err(PgStoreError::Unavailable(format!(
                "the group commit took longer than {timeout:?}"
            )));
        }
    };
    if conn.warnings() != before {
        let _ = managed_take(conn);
        return Err(PgStoreError::NotReplicated(
            "the group commit returned with a WARNING".into(),
        ));
    }
    let stored: std::collections::HashSet<String> =
        inserted.iter().map(|r| r.get::<_, String>(0)).collect();
    let others: Vec<String> = first
        .keys()
        .filter(|id| !stored.contains(**id))
        .map(|id| id.to_string())
        .collect();
    let existing = match others.is_empty() {
        true => HashMap::new(),
        false => match tokio::time::timeout(timeout, read_back(&mut conn, &others, per_tx)).await {
            Ok(r) => r?,
            Err(_) => {
                let _ = managed_take(conn);
                return Err(PgStoreError::Unavailable(format!(
                    "reading back stored submissions took longer than {timeout:?}"
                )));
            }
        },
    };
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let original = &records[first[r.trace_id.as_str()]];
            if first[r.trace_id.as_str()] == i && stored.contains(&r.trace_id) {
                return Ok(SubmitOutcome::Stored(r.receipt()));
            }
            let (hash, receipt) = match stored.contains(&r.trace_id) {
                // A repeat within the group of one stored by it.
                true => (original.payload_hash, original.receipt()),
                false => existing.get(&r.trace_id).cloned().ok_or_else(|| {
                    PgStoreError::Unavailable(format!(
                        "record {} was removed while this submission was stored; retry",
                        r.trace_id
                    ))
                })?,
            };
            Ok(match hash == r.payload_hash {
                true => SubmitOutcome::Duplicate(receipt),
                false => SubmitOutcome::Conflict(receipt),
            })
        })
        .collect())
}

/// The group's statement: its rows inserted, and the committer's count raised by as many.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS (INSERT INTO outbox_records ({}) SELECT * FROM {} \
           ON CONFLICT (trace_id) DO NOTHING RETURNING trace_id), \
         counted AS (INSERT INTO outbox_accepted (committer, value) \
           SELECT $19, n FROM (SELECT count(*) AS n FROM ins) c WHERE n > 0 \
           ON CONFLICT (committer) DO UPDATE SET value = outbox_accepted.value + EXCLUDED.value) \
         SELECT trace_id FROM ins",
        row::COLUMNS,
        row::unnest(1, false)
    )
});

/// The statement that sets the commit level for the rest of a transaction.
fn set_local(level: SyncCommit) -> String {
    format!("SET LOCAL synchronous_commit = {}", level.as_str())
}

/// Takes a connection out of the pool for good: it is closed when dropped.
fn managed_take(conn: deadpool::managed::Object<pool::Manager>) -> pool::Conn {
    deadpool::managed::Object::take(conn)
}

type Existing = HashMap<String, ([u8; 32], crate::store::Receipt)>;

/// The payload hash and receipt of records already stored, read in a transaction whose
/// commit waits for the standby (see the module doc).
async fn read_back(
    conn: &mut deadpool::managed::Object<pool::Manager>,
    ids: &[String],
    per_tx: Option<SyncCommit>,
) -> Result<Existing, PgStoreError> {
    let before = conn.warnings();
    let tx = conn.client.transaction().await?;
    if let Some(level) = per_tx {
        tx.batch_execute(&set_local(level)).await?;
    }
    let rows = tx
        .query_typed(
            "SELECT trace_id, payload_hash, received_at FROM outbox_records \
             WHERE trace_id = ANY($1) ORDER BY trace_id FOR KEY SHARE",
            &[(&ids, tokio_postgres::types::Type::TEXT_ARRAY)],
        )
        .await?;
    tx.commit().await?;
    if conn.warnings() != before {
        return Err(PgStoreError::NotReplicated(
            "reading back already stored submissions returned with a WARNING".into(),
        ));
    }
    let mut out = HashMap::new();
    for r in rows {
        let trace_id: String = r.try_get(0)?;
        let hash: Vec<u8> = r.try_get(1)?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| PgStoreError::Db(format!("record {trace_id}: payload hash")))?;
        let receipt = crate::store::Receipt {
            trace_id: trace_id.clone(),
            received_at: r.try_get(2)?,
        };
        out.insert(trace_id, (hash, receipt));
    }
    Ok(out)
}
