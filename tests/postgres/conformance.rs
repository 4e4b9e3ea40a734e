//! The store boundary's conformance suite (`outbox::store::conformance`) against the
//! PostgreSQL store: the same check bodies the sled store's tests run, one test per check,
//! each on a fresh database (`CREATE DATABASE`) of a cluster the tests running at the same
//! time share ([`super::shared_cluster`]).

use super::harness::postgres::Postgres;
use outbox::store::conformance;
use outbox::store::postgres::{PgOptions, PgStore};
use std::sync::Arc;
use std::time::Duration;

/// A store on a new, empty database named after the check.
async fn fresh(pg: &Postgres, check: &str) -> Arc<PgStore> {
    let mut o = PgOptions::new(super::fresh_database(pg, &format!("conformance_{check}")).await);
    // Far above a check's length: a claim is released or settled, never lapses.
    o.lease = Duration::from_secs(600);
    PgStore::open(&o).await.expect("open the store")
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(pg) = super::shared_cluster(concat!("postgres conformance ", stringify!($name))) else {
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
    removals_are_counted,
);
