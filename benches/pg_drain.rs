//! Drain on PostgreSQL (not a test): how fast delivery empties a backlog stored in the
//! PostgreSQL store (a throwaway local cluster: fsync on, `synchronous_commit = on`, no
//! standby), to a stub dashboard in this process that answers 200 at once and counts the
//! deliveries of each `Idempotency-Key`.
//!
//! 1. One instance: N stored records (default 200,000) delivered by one delivery worker.
//! 2. Two instances: N more, delivered by two workers, each with its own store connection
//!    pool, as two `outbox serve` on the same store. Then no key may have been delivered
//!    twice (no instance crashed, so no lease ran out).
//!
//! The fill (untimed) goes through the store's group commit, 64 submissions in flight, as
//! intake writes. For each part it prints deliveries/s, and the CPU time of this process
//! (workers and stub) and of the PostgreSQL server's processes per delivery.
//!
//! Run: `cargo bench --bench pg_drain` (needs Debian's `postgresql`). Knobs (environment):
//! `OUTBOX_BENCH_RECORDS` (200000), `OUTBOX_BENCH_CONCURRENCY` (the default
//! `delivery-concurrency`, 8).

#[path = "support/form.rs"]
mod form;
#[path = "../tests/harness/mod.rs"]
mod harness;

use axum::http::{HeaderMap, StatusCode};
use outbox::config::Settings;
use outbox::delivery::{self, DeliveryState};
use outbox::store::{Engine, RecordStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Submissions in flight while filling: the intake bench's connections.
const FILL_IN_FLIGHT: usize = 64;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deliveries per `Idempotency-Key`. The test harness's stub keeps every request whole,
/// which for 400,000 deliveries would be hundreds of MiB; this one keeps a count per key.
#[derive(Default)]
struct Counter(Mutex<HashMap<String, u32>>);

impl Counter {
    fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn repeated(&self) -> usize {
        self.0.lock().unwrap().values().filter(|&&n| n > 1).count()
    }
}

async fn stub(counter: Arc<Counter>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let counter = counter.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            *counter.0.lock().unwrap().entry(key).or_default() += 1;
            (StatusCode::OK, "{}")
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn settings(store_url: &str, dashboard: SocketAddr, concurrency: u64) -> Settings {
    let (dashboard, concurrency) = (format!("http://{dashboard}"), concurrency.to_string());
    harness::settings_from_args(&[
        "--store-url",
        store_url,
        "--dashboard-url",
        &dashboard,
        "--ingest-key",
        "bench-ingest-key-0123456789",
        "--delivery-concurrency",
        &concurrency,
    ])
}

/// Stores `n` pending records through the group commit, [`FILL_IN_FLIGHT`] at a time.
async fn fill(store: &Engine, n: u64) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= FILL_IN_FLIGHT {
            set.join_next().await.unwrap().unwrap();
        }
        let s = store.clone();
        set.spawn(async move { s.submit(form::record(i)).await.unwrap() });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    println!("  setup: stored {n} records in {:.1?}", started.elapsed());
}

/// User + system CPU time of process `pid` (Linux, USER_HZ 100).
fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time of this process, and of the postmaster `pm` with its live children (the
/// backends of the pools stay connected all along, so none of their time is lost).
fn cpu_times(pm: u32) -> (Duration, Duration) {
    let mine = cpu_of(std::process::id()).unwrap_or_default();
    let mut server = cpu_of(pm).unwrap_or_default();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            if parent_of(pid) == Some(pm) {
                server += cpu_of(pid).unwrap_or_default();
            }
        }
    }
    (mine, server)
}

async fn drain(
    label: &str,
    s: &Settings,
    instances: usize,
    counter: &Counter,
    n: u64,
    pm: u32,
) -> f64 {
    let store = outbox::app::open_store(s).await.unwrap();
    fill(&store, n).await;
    let target = counter.distinct() + n as usize;
    let mut engines = Vec::new();
    for _ in 0..instances {
        engines.push(outbox::app::open_store(s).await.unwrap());
    }
    let (started, (cpu0, pg0)) = (Instant::now(), cpu_times(pm));
    let workers: Vec<_> = engines
        .into_iter()
        .map(|e| {
            let state = Arc::new(DeliveryState::new(true));
            delivery::start(e, s, state, Arc::new(Notify::new())).unwrap()
        })
        .collect();
    while counter.distinct() < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let (cpu1, pg1) = cpu_times(pm);
    for w in workers {
        w.stop(Duration::from_secs(5)).await;
    }
    let c = store.counts().await.unwrap();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "  {label}: delivered {n} in {elapsed:.2?}: {rate:.0} deliveries/s; store: {} delivered, {} pending, {} in flight",
        c.delivered, c.pending, c.in_flight
    );
    println!(
        "  CPU per delivery: this process (workers + stub) {:.0} µs, PostgreSQL server {:.0} µs",
        (cpu1 - cpu0).as_secs_f64() * 1e6 / n as f64,
        (pg1 - pg0).as_secs_f64() * 1e6 / n as f64
    );
    rate
}

fn main() {
    outbox::alloc::return_freed_memory_at_once();
    let n = env_num("OUTBOX_BENCH_RECORDS", 200_000);
    let concurrency = env_num("OUTBOX_BENCH_CONCURRENCY", 8);
    let Some(pg) = harness::postgres::Postgres::start("pg_drain bench") else {
        return;
    };
    let checkpointer =
        pg.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
    let pm = parent_of(checkpointer.parse().unwrap()).expect("the postmaster");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let counter = Arc::new(Counter::default());
        let dash = stub(counter.clone()).await;
        let s = settings(&pg.url(), dash, concurrency);
        println!(
            "drain on PostgreSQL {}: {n} records per part, stub answers 200 at once, concurrency {concurrency}",
            harness::postgres::bin_dir().unwrap().display()
        );
        let one = drain("one instance", &s, 1, &counter, n, pm).await;
        let two = drain("two instances", &s, 2, &counter, n, pm).await;
        println!(
            "one instance {one:.0}/s (target >= 5,000), two instances {two:.0}/s, {:.2} of one (target >= 1); keys delivered more than once: {} of {}",
            two / one,
            counter.repeated(),
            counter.distinct()
        );
    });
    drop(pg);
}
