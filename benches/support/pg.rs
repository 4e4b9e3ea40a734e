//! What the PostgreSQL benches share: a throwaway cluster (the test harness's), a runtime,
//! the store on the cluster, and a plain client for the bench's own statements (sizes, fills,
//! `VACUUM`). A bench including this declares the harness as `mod harness` beside it.

use outbox::store::postgres::{PgOptions, PgStore};
use std::future::Future;
use std::sync::Arc;

/// Starts a cluster for bench `name` (or returns after the harness's loud SKIP) and runs
/// `bench` on a multi-threaded runtime with the store on it and a plain client to it.
pub fn run<F: Future<Output = ()>>(
    name: &str,
    bench: impl FnOnce(Arc<PgStore>, tokio_postgres::Client) -> F,
) {
    let Some(pg) = crate::harness::postgres::Postgres::start(name) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = pg.url();
        let store = PgStore::open(&PgOptions::new(url.clone())).await.unwrap();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        bench(store, client).await
    });
}

/// The number in the environment variable `name`, else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
