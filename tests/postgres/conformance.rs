//! The store boundary's conformance suite (`outbox::store::conformance`) against the
//! PostgreSQL store: the same check bodies the sled store's tests run, one test per check,
//! each on a fresh database (`CREATE DATABASE`) of a cluster the tests running at the same
//! time share ([`super::shared_cluster`]).

use super::harness::postgres::Postgres;
use outbox::store::postgres::{PgOptions, PgStore};
use std::sync::Arc;
use std::time::Duration;

/// A store on a new, empty database named after the check, and the cluster it is on.
async fn fresh(check: &str) -> Option<(Arc<Postgres>, Arc<PgStore>)> {
    let pg = super::shared_cluster(&format!("postgres conformance {check}"))?;
    let mut o = PgOptions::new(super::fresh_database(&pg, &format!("conformance_{check}")).await);
    // Far above a check's length: a claim is released or settled, never lapses.
    o.lease = Duration::from_secs(600);
    let store = PgStore::open(&o).await.expect("open the store");
    Some((pg, store))
}

outbox::conformance_tests!(fresh);
