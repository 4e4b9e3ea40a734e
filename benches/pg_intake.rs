//! Store-level intake: group-committed submissions per second and p50/p99 latency with 64
//! concurrent submitters, into the PostgreSQL store (a throwaway local cluster, fsync on,
//! `synchronous_commit = on`, no standby) and into the embedded sled store, side by side in
//! one run, alternating. No HTTP: this measures the stores and their group commit alone.
//!
//! Run: `cargo bench --bench pg_intake` (needs Debian's `postgresql`). `OUTBOX_BENCH_SECS`
//! sets each run's length (default 10); two rounds alternate the stores.

#[path = "support/form.rs"]
mod form;
#[path = "../tests/harness/mod.rs"]
mod harness;

use form::record;
use outbox::store::postgres::{PgOptions, PgStore};
use outbox::store::{Record, Store, SubmitOutcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent submitters, as the HTTP intake benchmark's 64 connections.
const CLIENTS: usize = 64;

type Submit = Arc<dyn Fn(Record) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(submit: Submit, secs: u64) -> Figures {
    let seq = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (submit, seq) = (submit.clone(), seq.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let r = record(seq.fetch_add(1, Ordering::Relaxed));
                    let t = Instant::now();
                    assert!(submit(r).await, "a submission was not stored");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Figures {
        rps: lat.len() as f64 / elapsed,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
    }
}

fn main() {
    let secs: u64 = std::env::var("OUTBOX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let Some(pg) = harness::postgres::Postgres::start("pg_intake bench") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let pg_store = PgStore::open(&PgOptions::new(pg.url())).await.unwrap();
        let sled = Arc::new(Store::open(&tmp.path().join("data")).unwrap());
        let into_pg: Submit = Arc::new(move |r| {
            let s = pg_store.clone();
            Box::pin(async move { matches!(s.submit(r).await, Ok(SubmitOutcome::Stored(_))) })
        });
        let into_sled: Submit = Arc::new(move |r| {
            let s = sled.clone();
            Box::pin(async move { matches!(s.submit(r).await, Ok(SubmitOutcome::Stored(_))) })
        });
        println!(
            "{CLIENTS} concurrent submitters, {secs} s per run, PostgreSQL {}",
            harness::postgres::bin_dir().unwrap().display()
        );
        for round in 1..=2 {
            for (name, submit) in [("sled", &into_sled), ("postgres", &into_pg)] {
                let f = run(submit.clone(), secs).await;
                println!(
                    "round {round} {name:>8}: {:>8.0} submissions/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                    f.rps, f.p50_ms, f.p99_ms
                );
            }
        }
    });
}
