//! The PostgreSQL store: one table that several outbox instances share.
//!
//! The embedded sled store keeps what a machine acknowledged on that machine's disk. This
//! store keeps it in PostgreSQL, the replicated engine the sites running outbox already have,
//! with the same records, outcomes and accounting ([`crate::store::Record`],
//! [`crate::store::SubmitOutcome`], [`crate::store::Counts`]), and methods of the same shape
//! and meaning as [`crate::store::Store`]'s (`submit`, `get`, `claim_due`, `settle`,
//! `release`, `counts`, a purge), async because every one is a round trip.
//!
//! # Table
//! `outbox_records` holds one row per trace ID (the primary key, so the same key posted to
//! two instances is stored once): the record's state, its payload and client details, and
//! the lease (`claim_token`, `lease_until_ms`). A delivered record keeps a tombstone (payload
//! and client details NULL or empty) for the idempotency window, then the purge deletes it.
//! Two partial indexes keep the hot paths small: `outbox_records_due (due_at_ms) WHERE status
//! = 'pending'` for claims, `outbox_records_delivered (delivered_at_ms) WHERE status =
//! 'delivered'` for the purge. Trace IDs compare byte by byte (collation "C"), the order
//! listings page in. `outbox_counters` counts what left the table (purged, quarantined; see
//! [`maintenance`]); `outbox_accepted` counts what came in, one row per group committer so
//! no two commits queue on one counter ([`committer`]); `outbox_quarantine` keeps the rows
//! moved out of the lifecycle whole, with the reason ([`change`]). The schema is
//! `migrations/V*.sql`, applied by [`schema`], which also refuses a database of a newer
//! schema.
//!
//! # Autovacuum
//! A queue table is all inserts, updates and deletes, so the table carries its own settings:
//! vacuum after 1% of rows changed (`autovacuum_vacuum_scale_factor = 0.01`, threshold 1000,
//! the same for inserts), analyze after 2%, no cost delay, and `fillfactor = 80` so a lease
//! (no indexed column changes) is a HOT update. Vacuum still cannot remove rows that a
//! long-running transaction anywhere in the cluster may see: watch `n_dead_tup` in
//! `pg_stat_user_tables` and the oldest `xact_start` in `pg_stat_activity`.
//!
//! # Leases and fencing
//! See [`claims`]: claims are `FOR UPDATE SKIP LOCKED` leases with a random token, settles
//! apply only where the token still matches, expired leases are claimed again by any
//! instance. No `NOTIFY` per insert (it serialises every commit in the database): instances
//! poll, and the one that accepted a post wakes its own worker.
//!
//! # Durability
//! - A submission is answered only after the COMMIT holding it returned ([`committer`]:
//!   one multi-row insert and one commit per group of concurrent posts).
//! - Every connection asks for `synchronous_commit` `on` (or `remote_apply`) in its startup
//!   options and checks it took; `off` and `local` cannot be chosen ([`config`]). Behind
//!   PgBouncer before 1.20 (which refuses startup options) the group commit sets it with
//!   `SET LOCAL` in its own transaction instead ([`PgOptions::sync_per_transaction`]).
//! - At start, [`PgStore::open`] refuses a server with `fsync` off, and reads
//!   `synchronous_standby_names`: when it is empty, acknowledged posts live on one server
//!   ([`Durability::on_one_server`]), which is logged once.
//! - A COMMIT that returns with a WARNING (a cancelled wait for the synchronous standby:
//!   "committed locally, but might not have been replicated") is not an acknowledgement, nor
//!   is a connection lost during COMMIT: both are [`PgStoreError::is_unavailable`] (503), and
//!   the client's retry with the same key gets 200 once the row is safely there, or 202.
//! - At start it also reads `backend_flush_after`: at `0` (PostgreSQL's default) the
//!   backends leave their writes to the kernel, which writes them back about 30 s later in
//!   bursts that hold up every commit on the disk for a while; that is logged once as advice
//!   ([`flush_advice`]; figures in benches/README.md).
//! - PostgreSQL unreachable: every wait is bounded (connect, pool, commit and read timeouts
//!   in [`PgOptions`], enforced on this side, since a frozen server runs no timer of its
//!   own; the delivery worker's claims, settles and releases too, see [`claims`]), and the
//!   pool replaces dead connections, so the store comes back by itself when PostgreSQL does.
//!
//! # Why these crates
//! tokio-postgres is the client: it hands every notice of a connection to its owner, which is
//! how the cancelled-wait WARNING at COMMIT is told from a good commit ([`pool`] counts them
//! per connection), it pipelines concurrent queries on one connection, and it needs no
//! database at build time. sqlx was weighed and not taken: its checked queries want a
//! database or an offline cache at build time, it does not pipeline, and it logs notices
//! instead of returning them to the caller. The pool is deadpool's managed pool with a
//! manager of our own (each connection's notice counter, the per-host connect bound, the
//! `synchronous_commit` check on every new connection); migrations are refinery's, embedded
//! in the binary and run over the same tokio-postgres client. TLS is rustls, as reqwest's.

mod boundary;
mod change;
pub mod claims;
mod committer;
pub mod config;
pub mod copy;
mod erase;
pub mod health;
pub mod maintenance;
pub mod pace;
pub mod pool;
pub mod retention;
mod row;
pub mod schema;
mod settle;
mod tls;
mod verify;

pub use config::{PgOptions, SyncCommit};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The database's clock in milliseconds as SQL (a macro, so [`LEASED`] can be built on it).
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The database's clock in milliseconds, for leases: one clock for every instance.
pub(crate) const NOW_MS: &str = now_ms!();

/// Whether a row is under a live lease of any instance (in flight), as SQL.
pub(crate) const LEASED: &str = concat!("coalesce(lease_until_ms > ", now_ms!(), ", false)");

#[derive(Debug, Clone, thiserror::Error)]
pub enum PgStoreError {
    #[error("the PostgreSQL store settings are not valid: {0}")]
    Config(String),
    #[error("PostgreSQL is unavailable ({0}); retry later")]
    Unavailable(String),
    #[error("PostgreSQL committed locally but did not confirm replication to the synchronous standby ({0}); the submission is not acknowledged: retry with the same Idempotency-Key")]
    NotReplicated(String),
    #[error("PostgreSQL is not safe for acknowledged data: {0}")]
    Unsafe(String),
    #[error("the PostgreSQL store schema is at version {found}, written by a newer outbox (this release knows versions up to {known}): run that release or a newer one, or restore a database backup taken before the upgrade")]
    NewerSchema { found: i64, known: i64 },
    #[error("migrating the PostgreSQL store schema failed: {0}")]
    Migration(String),
    #[error("PostgreSQL error: {0}")]
    Db(String),
    #[error("the store is shutting down")]
    Closed,
    /// A change that must not be skipped (an erasure) waited this long for the delivery of
    /// the record to end.
    #[error("record {trace_id} was being delivered for over {waited:?}; run the erasure again")]
    StillDelivering { trace_id: String, waited: Duration },
    /// This engine does not do that; the text says what does it instead.
    #[error("{0}")]
    NotSupported(&'static str),
}

impl PgStoreError {
    /// Whether the right answer is 503 with `Retry-After`: the outcome is not known or not
    /// durable, and the same request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            PgStoreError::Unavailable(_) | PgStoreError::NotReplicated(_) | PgStoreError::Closed
        )
    }
}

/// Sorts a driver error: connection trouble (and the server shutting down or refusing new
/// connections) is [`PgStoreError::Unavailable`], anything else a database error.
pub(crate) fn classify(e: tokio_postgres::Error) -> PgStoreError {
    let unavailable = e.is_closed()
        || e.code().is_some_and(|c| {
            let c = c.code();
            // 08: connection exception; 57P0x: shutdown, crash, cannot connect now; 53300:
            // too many connections; 40001/40P01 are retryable too.
            c.starts_with("08") || c.starts_with("57P") || c == "53300" || c.starts_with("40")
        })
        // The driver's own errors name their kind only in their text: reaching the server
        // failed (I/O, connect, timeout, TLS), as opposed to a row or type mismatch.
        || e.as_db_error().is_none() && {
            let text = e.to_string();
            [
                "error communicating with the server",
                "error connecting to server",
                "timeout waiting for server",
                "error performing TLS handshake",
                "connection closed",
            ]
            .iter()
            .any(|k| text.starts_with(k))
        };
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    match unavailable {
        true => PgStoreError::Unavailable(text),
        false => PgStoreError::Db(text),
    }
}

impl From<tokio_postgres::Error> for PgStoreError {
    fn from(e: tokio_postgres::Error) -> PgStoreError {
        classify(e)
    }
}

/// What the server promises about an acknowledged submission, as read at start.
#[derive(Debug, Clone)]
pub struct Durability {
    pub synchronous_commit: SyncCommit,
    /// The server's `synchronous_standby_names` (empty: no synchronous standby).
    pub synchronous_standby_names: String,
}

impl Durability {
    /// Whether an acknowledged submission may exist on one server only (no synchronous
    /// standby configured).
    pub fn on_one_server(&self) -> bool {
        self.synchronous_standby_names.trim().is_empty()
    }
}

/// The advice to log when the server's `backend_flush_after` (as `SHOW` gives it) is `0`:
/// under sustained intake the kernel then writes the backends' dirty pages back in bursts,
/// and every commit on that disk (PostgreSQL's WAL flush, and another store's sync) waits
/// behind them. With `256kB` the backends start writeback as they go. `None` when set.
pub fn flush_advice(backend_flush_after: &str) -> Option<&'static str> {
    (backend_flush_after.trim() == "0").then_some(
        "backend_flush_after is 0: under sustained intake the kernel writes PostgreSQL's \
         dirty pages back in bursts that delay commits; set backend_flush_after = '256kB' on \
         the server (Linux), see \"The PostgreSQL settings outbox needs\" in the README",
    )
}

pub struct PgStore {
    pool: pool::Pool,
    committer: committer::Committer,
    lease: Duration,
    /// Bound on one read ([`PgOptions::read_timeout`]).
    read_timeout: Duration,
    /// Bound on one change outside the group commit (an edit, a quarantine, an erasure).
    write_timeout: Duration,
    durability: Durability,
    /// Leases this instance holds, by trace ID.
    claims: Mutex<HashMap<String, claims::Held>>,
    /// Tokens of claims whose answer was lost, which may have committed ([`claims`]).
    lost_claims: Mutex<Vec<uuid::Uuid>>,
    /// The sampler's last backlog read ([`health`]).
    backlog: health::SharedBacklog,
    /// The last counts read for `/metrics` ([`PgStore::sampled_counts`]).
    counts_sample: tokio::sync::Mutex<maintenance::CountsSample>,
}

impl PgStore {
    /// Connects, checks the server, applies the schema and starts the group committer.
    /// Fails with a message naming the fix when the server is not safe or the schema newer.
    pub async fn open(o: &PgOptions) -> Result<Arc<PgStore>, PgStoreError> {
        let pool = pool::build(o)?;
        let mut conn = pool::get(&pool).await?;
        let show = |name: &'static str| {
            let client = &conn.client;
            async move {
                let m = client.simple_query(&format!("SHOW {name}")).await?;
                Ok::<_, PgStoreError>(pool::first_value(&m).unwrap_or_default())
            }
        };
        let fsync = show("fsync").await?;
        if fsync != "on" {
            return Err(PgStoreError::Unsafe(format!(
                "the server runs with fsync = {fsync}, so a crash can lose committed data: set \
                 fsync = on in postgresql.conf and restart PostgreSQL"
            )));
        }
        let durability = Durability {
            synchronous_commit: o.synchronous_commit,
            synchronous_standby_names: show("synchronous_standby_names").await?,
        };
        let flush_after = show("backend_flush_after").await?;
        schema::migrate(&mut conn).await?;
        drop(conn);
        if let Some(advice) = flush_advice(&flush_after) {
            tracing::info!("{advice}");
        }
        if durability.on_one_server() {
            tracing::warn!(
                "synchronous_standby_names is empty: acknowledged submissions live on one PostgreSQL server until they are delivered"
            );
        }
        Ok(Arc::new(PgStore {
            committer: committer::Committer::start(
                pool.clone(),
                o.commit_timeout,
                o.sync_per_transaction.then_some(o.synchronous_commit),
            ),
            pool,
            lease: o.lease,
            read_timeout: o.read_timeout,
            write_timeout: o.commit_timeout,
            durability,
            claims: Mutex::default(),
            lost_claims: Mutex::default(),
            backlog: Default::default(),
            counts_sample: tokio::sync::Mutex::default(),
        }))
    }

    /// Stores a new record, or reports the one under its trace ID. Resolves only after the
    /// commit that covers it returned, replicated as `synchronous_commit` asks.
    pub async fn submit(
        &self,
        record: crate::store::Record,
    ) -> Result<crate::store::SubmitOutcome, PgStoreError> {
        self.committer.submit(record).await
    }

    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    /// How long a claim holds a record before any instance may claim it again.
    pub fn lease(&self) -> Duration {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::flush_advice;

    #[test]
    fn backend_flush_after_at_zero_gets_advice_and_any_other_value_none() {
        let advice = flush_advice("0").expect("advice at 0");
        assert!(advice.contains("backend_flush_after = '256kB'"), "{advice}");
        for set in ["256kB", "32", "2MB"] {
            assert_eq!(flush_advice(set), None, "{set}");
        }
    }
}
