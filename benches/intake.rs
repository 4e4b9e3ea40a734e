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
mod support;

use support::{write_bytes, write_bytes_source};

use axum::routing::post;
use axum::Json;
use clap::Parser;
use outbox::app::Application;
use outbox::cli::{Cli, Command};
use outbox::config::Settings;
use outbox::store::Store;
use std::net::SocketAddr;
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The same allocator as the `outbox` binary, set up as it is there (see `main`), for both
// servers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str = r#"{"name":"Maria Lopez","email":"maria.lopez@example.com","company":"Northwind Health","phone":"+1 555 0100","message":"We would like a demo for our support team of about forty agents, ideally next week. Please send a few time slots.","consent":true,"page":"/pricing"}"#;

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    outbox::alloc::return_freed_memory_at_once();
    if Proc::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install wrk");
        std::process::exit(1);
    }
    let secs: u64 = std::env::var("OUTBOX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
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
    let script = tmp.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{BODY}]]\n"
        ),
    )
    .unwrap();
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
    let args = [
        "outbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--rate-limit",
        "off",
        "--log-level",
        "warn",
    ];
    let args = args.iter().chain(extra.iter());
    let Command::Serve { settings } = Cli::parse_from(args).command else {
        unreachable!()
    };
    let settings = Settings::from_layers(&settings.layers().unwrap()).unwrap();
    outbox::telemetry::init(settings.log_format, &settings.log_level);
    let app = Application::build(settings).await.unwrap();
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

fn run_wrk(addr: SocketAddr, script: &std::path::Path, secs: u64) -> Figures {
    let out = Proc::new("wrk")
        .args(["-t2", "-c64", &format!("-d{secs}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}/api/collect"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        eprintln!("warning: non-2xx responses:\n{text}");
    }
    let find = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in wrk output:\n{text}"));
        parse_value(
            line.trim_start()[prefix.len()..]
                .split_whitespace()
                .next()
                .unwrap(),
        )
    };
    Figures {
        rps: find("Requests/sec:"),
        p50_ms: find("50%"),
        p99_ms: find("99%"),
    }
}

/// wrk prints `1.23ms`, `850.00us`, `1.02s`, or a bare number.
fn parse_value(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}
