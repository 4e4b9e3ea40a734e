//! Intake benchmark: acknowledged submissions per second and p50/p99 latency at 64
//! keep-alive connections posting a ~300-byte JSON form, side by side with a minimal axum
//! endpoint that parses the same JSON and stores nothing (the ceiling on this machine), and
//! with a second outbox that delivers while it takes posts, to a stub dashboard in this
//! process that answers 200 at once. For each outbox it prints the bytes the process wrote to
//! disk per submission (`write_bytes` of `/proc/self/io`; only outbox writes to disk here):
//! accept only, and accept + deliver (measured until its backlog is delivered).
//!
//! Run: `cargo bench --bench intake` (needs `wrk`: `apt-get install wrk`).
//! `OUTBOX_BENCH_SECS` sets each run's length (default 10); two rounds alternate the servers.

#[path = "../tests/harness/dashboard.rs"]
mod dashboard;
#[path = "support/http.rs"]
mod http;
mod support;

use http::{run_wrk, Figures, BODY};
use support::{write_bytes, write_bytes_source};

use axum::routing::post;
use axum::Json;
use outbox::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The same allocator as the `outbox` binary, set up as it is there (see `main`), for both
// servers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    outbox::alloc::return_freed_memory_at_once();
    http::require_wrk();
    let secs = http::run_secs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (baseline, outbox, delivering, stub) = rt.block_on(async {
        let baseline = start_baseline().await;
        let stub = dashboard::Dashboard::start().await;
        let quiet = start_outbox(&tmp.path().join("quiet"), &[]).await;
        let url = stub.url();
        let delivering = start_outbox(
            &tmp.path().join("delivering"),
            &[
                "--dashboard-url",
                &url,
                "--ingest-key",
                "bench-ingest-key-0123456789",
            ],
        )
        .await;
        (baseline, quiet, delivering, stub)
    });
    let script = http::script(tmp.path());
    println!(
        "body: {} bytes, 64 connections, 2 wrk threads, {secs}s per run",
        BODY.len()
    );
    println!("{}", write_bytes_source());
    let mut base_runs = Vec::new();
    let mut outbox_runs = Vec::new();
    let mut delivering_runs = Vec::new();
    for round in 1..=2 {
        let b = run_wrk(baseline, &script, secs);
        let (o, o_bytes) = measured(&outbox, &script, secs, false);
        let (d, d_bytes) = measured(&delivering, &script, secs, true);
        println!(
            "round {round}: baseline {:>8.0} req/s | outbox {:>8.0} req/s p50 {:.2} ms p99 {:.2} ms, {o_bytes:.0} B/submission | delivering {:>8.0} req/s p99 {:.2} ms, {d_bytes:.0} B/submission accept+deliver | ratio {:.2}, delivering/quiet {:.2}",
            b.rps, o.rps, o.p50_ms, o.p99_ms, d.rps, d.p99_ms, o.rps / b.rps, d.rps / o.rps
        );
        base_runs.push(b);
        outbox_runs.push(o);
        delivering_runs.push(d);
    }
    let avg = |v: &[Figures], f: fn(&Figures) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (b, o) = (avg(&base_runs, |f| f.rps), avg(&outbox_runs, |f| f.rps));
    let d = avg(&delivering_runs, |f| f.rps);
    println!(
        "mean: baseline {b:.0} req/s, outbox {o:.0} req/s, ratio {:.2} (target >= 0.40)",
        o / b
    );
    println!(
        "outbox p99: {:.2} ms (target <= 10 ms)",
        avg(&outbox_runs, |f| f.p99_ms)
    );
    println!(
        "intake while delivering: {d:.0} req/s, {:.2} of intake with delivery off (target >= 0.80); the stub got {} deliveries",
        d / o,
        stub.count()
    );
}

/// An outbox server in this process, and its store for the counts.
struct Served {
    addr: SocketAddr,
    store: Arc<Store>,
}

async fn start_outbox(dir: &std::path::Path, extra: &[&str]) -> Served {
    let args = [&["--data-dir", dir.to_str().unwrap()], extra].concat();
    let app = http::build(&args).await;
    let served = Served {
        addr: app.local_addr(),
        store: app
            .state()
            .store
            .embedded()
            .expect("the embedded store")
            .clone(),
    };
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    served
}

/// One wrk run against `s`, and the bytes written per accepted submission; with `drain`,
/// counted until every submission of the run is delivered (at most 120 s after it).
fn measured(s: &Served, script: &std::path::Path, secs: u64, drain: bool) -> (Figures, f64) {
    let accepted = || s.store.counts().map_or(0, |c| c.accepted);
    let (bytes0, acc0) = (write_bytes(), accepted());
    let f = run_wrk(s.addr, script, secs);
    let acc1 = accepted();
    if drain {
        let deadline = Instant::now() + Duration::from_secs(120);
        while s.store.counts().map_or(0, |c| c.pending + c.in_flight) > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let per = (write_bytes() - bytes0) as f64 / (acc1 - acc0).max(1) as f64;
    (f, per)
}

async fn start_baseline() -> SocketAddr {
    async fn handler(
        Json(v): Json<serde_json::Value>,
    ) -> (axum::http::StatusCode, Json<serde_json::Value>) {
        let n = v.as_object().map_or(0, |m| m.len());
        (
            axum::http::StatusCode::ACCEPTED,
            Json(serde_json::json!({"status": "accepted", "fields": n})),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/api/collect", post(handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
