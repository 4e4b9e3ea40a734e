//! The PostgreSQL store against a real PostgreSQL: a throwaway cluster per test
//! (`tests/harness/postgres.rs`), two store instances on it where the behaviour is about
//! sharing. `core` covers idempotency, group commit, leases and fencing, the purge and the
//! schema version; `failures` covers what PostgreSQL does to durability (a cancelled wait for
//! the synchronous standby, the server stopped and started again, fsync off); `frozen` a
//! server whose processes stop mid-delivery; `metrics` the paced counts of `/metrics`; `failover`
//! loses the primary's machine under load and promotes its synchronous standby
//! (`failover_service` under `outbox serve`); `nginx` runs `ops/nginx-shared-store.conf` in
//! real nginx over two instances; `ops*` run
//! the ops commands against the store through the binary.

#[path = "../harness/mod.rs"]
mod harness;

mod claims_ahead;
mod conformance;
mod core;
mod failover;
mod failover_service;
mod failures;
mod frozen;
mod lost_claims;
mod metrics;
mod move_store;
mod move_store_checks;
mod nginx;
mod ops;
mod ops_changes;
mod ops_listing;
mod ops_refusals;
mod pgbouncer;
mod records;
mod server_work;
mod service;
mod service_limits;
mod shared;
mod tls;

use outbox::intake::enrich::Enrichment;
use outbox::store::postgres::{PgOptions, PgStore};
use outbox::store::{Change, Record, Status};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A new pending record under `trace_id` with `fields` (a JSON object).
pub fn record(trace_id: &str, fields: &str) -> Record {
    let serde_json::Value::Object(fields) = serde_json::from_str(fields).unwrap() else {
        panic!("fields must be a JSON object");
    };
    let now = outbox::time::now_ms();
    Record::pending(
        fields,
        Enrichment {
            received_at: format!("received-{now}"),
            client_ip: "203.0.113.9".into(),
            user_agent: Some("test".into()),
            trace_id: trace_id.into(),
            src: "test".into(),
            form_type: "contact".into(),
        },
        now,
    )
}

/// Options for a store on `pg` with a short lease.
pub fn options(pg: &harness::postgres::Postgres, lease: Duration) -> PgOptions {
    let mut o = PgOptions::new(pg.url());
    o.lease = lease;
    o.commit_timeout = Duration::from_secs(10);
    o
}

pub async fn open(pg: &harness::postgres::Postgres, lease: Duration) -> Arc<PgStore> {
    PgStore::open(&options(pg, lease))
        .await
        .expect("open store")
}

/// What the delivery worker writes for a record the dashboard accepted at `at_ms`: a
/// tombstone without payload.
pub fn delivered(at_ms: i64) -> impl Fn(usize, &Record) -> Change {
    move |_, r| {
        let mut n = r.clone();
        n.status = Status::Delivered;
        n.attempts += 1;
        n.payload = None;
        n.delivered_at_ms = Some(at_ms);
        n.last_attempt_at_ms = Some(at_ms);
        n.last_status_code = Some(200);
        Change::Put(n)
    }
}

/// The trace IDs `store` claims now (it keeps the claims), sorted.
pub async fn claimable(store: &PgStore) -> Vec<String> {
    let claimed = store.claim_due(i64::MAX, 10).await.unwrap();
    let mut ids: Vec<String> = claimed.records.into_iter().map(|r| r.trace_id).collect();
    ids.sort();
    ids
}

/// A plain client for checks and for playing the operator.
pub async fn sql(pg: &harness::postgres::Postgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// How many of `trace_ids` have a row in the table.
pub async fn present(client: &tokio_postgres::Client, trace_ids: &[String]) -> usize {
    let row = client
        .query_one(
            "SELECT count(*) FROM outbox_records WHERE trace_id = ANY($1)",
            &[&trace_ids],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as usize
}

/// The cluster of the tests on a fresh database running now, if any.
static SHARED: Mutex<Weak<harness::postgres::Postgres>> = Mutex::new(Weak::new());

/// A cluster that tests running at the same time share, each on a database of its own
/// ([`fresh_database`]): a cluster takes seconds to create, a database milliseconds. It
/// stops when the last test holding it ends. `None` after a loud SKIP.
pub fn shared_cluster(test: &str) -> Option<Arc<harness::postgres::Postgres>> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = shared.upgrade() {
        return Some(pg);
    }
    let pg = Arc::new(harness::postgres::Postgres::start(test)?);
    *shared = Arc::downgrade(&pg);
    Some(pg)
}

/// Creates the empty database `name` on `pg` and returns its URL.
pub async fn fresh_database(pg: &harness::postgres::Postgres, name: &str) -> String {
    sql(pg)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test's database");
    pg.url().replace("/postgres?", &format!("/{name}?"))
}
