//! Drain benchmark (not a test): how fast the delivery worker empties a backlog.
//!
//! 1. Throughput: N stored records (default 50,000) delivered to a local stub dashboard that
//!    answers 200 at once; prints deliveries/s.
//! 2. Outage: the stub refuses connections for OUTAGE seconds (default 60) while the worker
//!    runs with the default retry and circuit-breaker settings over a backlog of N records;
//!    prints the time from the stub's return until the backlog is empty.
//!
//! Run: `cargo bench --bench drain`. Knobs (environment):
//! `OUTBOX_BENCH_RECORDS` (50000), `OUTBOX_BENCH_OUTAGE_SECS` (60; try 5 first; 0 skips part 2),
//! `OUTBOX_BENCH_CONCURRENCY` (the default `delivery-concurrency`, 8).
//! Loopback only; the stub shares the machine's cores with the worker.

#[path = "../tests/harness/dashboard.rs"]
mod dashboard;
mod support;

use support::{write_bytes, write_bytes_source};

// The same allocator as the `outbox` binary, set up as it is there (see `main`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use dashboard::Dashboard;
use outbox::cli::{Cli, Command};
use outbox::config::Settings;
use outbox::delivery::{self, DeliveryState};
use outbox::intake::enrich::Enrichment;
use outbox::store::{Record, Store};
use outbox::time::{format_time, now_ms};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(dir: &Path, url: &str, concurrency: u64) -> Settings {
    let args = [
        "outbox".to_string(),
        "serve".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--dashboard-url".into(),
        url.into(),
        "--ingest-key".into(),
        "bench-ingest-key-0123456789".into(),
        "--delivery-concurrency".into(),
        concurrency.to_string(),
    ];
    let Command::Serve { settings } = Cli::try_parse_from(args).unwrap().command else {
        unreachable!()
    };
    Settings::from_layers(&settings.layers().unwrap()).unwrap()
}

fn record(i: u64) -> Record {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
        serde_json::json!({"email": format!("user{i}@example.com"), "message": "Hello, I would like a demo of the product next week."}),
    )
    .unwrap();
    let now = now_ms();
    let trace_id = format!("bench-{i:08}");
    Record::pending(
        fields,
        Enrichment {
            received_at: format_time(chrono::Utc::now()),
            client_ip: "203.0.113.7".into(),
            user_agent: Some("Mozilla/5.0 (bench)".into()),
            trace_id,
            src: "site-proxy".into(),
            form_type: "contact".into(),
        },
        now,
    )
}

/// Stores `n` records through the group committer (64 writers), untimed setup.
async fn fill(store: &Arc<Store>, n: u64) {
    let (started, bytes0) = (Instant::now(), write_bytes());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let s = store.clone();
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                s.submit(record(i)).await.unwrap();
                i += 64;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    store.sync().unwrap();
    println!(
        "  setup: stored {n} records in {:.1?}, {:.0} bytes written per record",
        started.elapsed(),
        (write_bytes() - bytes0) as f64 / n as f64
    );
}

/// CPU time (user + system) this process has used so far, from /proc (Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

async fn wait_delivered(store: &Store, n: u64) {
    while store.counts().unwrap().delivered < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn throughput(n: u64, concurrency: u64) {
    println!("drain: {n} stored records, stub answers 200 at once, concurrency {concurrency}");
    println!("  {}", write_bytes_source());
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&tmp.path().join("data"), &dash.url(), concurrency);
    let store = Arc::new(Store::open(&s.data_dir).unwrap());
    fill(&store, n).await;
    let state = Arc::new(DeliveryState::new(true));
    store.sync().unwrap();
    let (started, cpu0, bytes0) = (Instant::now(), cpu_time(), write_bytes());
    let worker = delivery::start(store.clone(), &s, state, Arc::new(Notify::new())).unwrap();
    wait_delivered(&store, n).await;
    let elapsed = started.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    worker.stop(Duration::from_secs(5)).await;
    store.sync().unwrap();
    let written = write_bytes() - bytes0;
    let c = store.counts().unwrap();
    assert!(c.balanced() && c.delivered == n);
    println!(
        "  delivered {n} in {elapsed:.2?}: {:.0} deliveries/s (stub saw {} requests)",
        n as f64 / elapsed.as_secs_f64(),
        dash.count()
    );
    println!(
        "  written to disk while draining: {:.1} MiB, {:.0} bytes per delivery",
        written as f64 / (1 << 20) as f64,
        written as f64 / n as f64
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU (worker + stub, this process): {cpu:.2?}, {:.0} µs per delivery",
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    }
}

async fn outage(n: u64, concurrency: u64, outage: Duration) {
    println!(
        "outage: {n} records, stub refusing connections for {outage:?}, default retry and circuit settings"
    );
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&tmp.path().join("data"), &dash.url(), concurrency);
    let store = Arc::new(Store::open(&s.data_dir).unwrap());
    fill(&store, n).await;
    dash.go_down().await;
    let state = Arc::new(DeliveryState::new(true));
    let worker =
        delivery::start(store.clone(), &s, state.clone(), Arc::new(Notify::new())).unwrap();
    tokio::time::sleep(outage).await;
    let spent: u64 = (0..n)
        .filter_map(|i| store.get(&format!("bench-{i:08}")).ok().flatten())
        .map(|r| r.attempts as u64)
        .sum();
    println!(
        "  during the outage: circuit {}, {spent} attempts spent over {n} records",
        state.snapshot().circuit
    );
    dash.come_back().await;
    let back = Instant::now();
    while store.counts().unwrap().delivered == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = back.elapsed();
    wait_delivered(&store, n).await;
    let drained = back.elapsed();
    worker.stop(Duration::from_secs(5)).await;
    assert!(store.counts().unwrap().balanced());
    println!(
        "  after the stub came back: first delivery {first:.2?}, backlog drained in {drained:.2?}"
    );
}

fn main() {
    outbox::alloc::return_freed_memory_at_once();
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_num("OUTBOX_BENCH_RECORDS", 50_000);
    let outage_secs = env_num("OUTBOX_BENCH_OUTAGE_SECS", 60);
    let concurrency = env_num("OUTBOX_BENCH_CONCURRENCY", 8);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        throughput(n, concurrency).await;
        if outage_secs > 0 {
            outage(n, concurrency, Duration::from_secs(outage_secs)).await;
        }
    });
}
