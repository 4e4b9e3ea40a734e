//! The store boundary's conformance suite (`outbox::store::conformance`) against the
//! PostgreSQL store: the same check bodies the sled store's tests run, one test per check,
//! each on a fresh database (`CREATE DATABASE`) of a cluster the checks running at the same
//! time share (a cluster takes seconds to create; a database, milliseconds). The cluster
//! stops when the last check using it ends.

use super::harness::postgres::Postgres;
use outbox::store::conformance;
use outbox::store::postgres::{PgOptions, PgStore};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The cluster of the checks running now, if any.
static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

/// The shared cluster (started if none runs), or `None` after a loud SKIP.
fn cluster(test: &str) -> Option<Arc<Postgres>> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = shared.upgrade() {
        return Some(pg);
    }
    let pg = Arc::new(Postgres::start(test)?);
    *shared = Arc::downgrade(&pg);
    Some(pg)
}

/// A store on a new, empty database named after the check.
async fn fresh(pg: &Postgres, check: &str) -> Arc<PgStore> {
    let db = format!("conformance_{check}");
    let admin = super::sql(pg).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create the check's database");
    let url = pg.url().replace("/postgres?", &format!("/{db}?"));
    let mut o = PgOptions::new(url);
    // Far above a check's length: a claim is released or settled, never lapses.
    o.lease = Duration::from_secs(600);
    PgStore::open(&o).await.expect("open the store")
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(pg) = cluster(concat!("postgres conformance ", stringify!($name))) else {
                return;
            };
            let store = fresh(&pg, stringify!($name)).await;
            conformance::$name(&*store).await;
        }
    )*};
}

conformance!(
    idempotency,
    claim_and_settle,
    dead_letters,
    busy_record_refuses_changes,
    purge_after_window,
    erasure_by_address,
    list_and_quarantine,
);
