//! HTTP intake on PostgreSQL: acknowledged submissions per second and p50/p99 latency at 64
//! keep-alive wrk connections posting the ~300-byte form, into outbox on the PostgreSQL store
//! (a throwaway local PostgreSQL cluster: fsync on, `synchronous_commit = on`, no standby)
//! and into outbox on the embedded sled store, both servers in this process, delivery off,
//! alternating in one run. Prints each run's figures and the ratio PostgreSQL/sled.
//!
//! Run: `cargo bench --bench pg_http` (needs `wrk` and Debian's `postgresql`).
//! `OUTBOX_BENCH_SECS` sets each run's length (default 10); `OUTBOX_BENCH_ROUNDS` the rounds
//! (default 2). Each server first gets an unmeasured run of 2 s. The cluster runs with
//! `backend_flush_after = '256kB'`, as the README recommends; `OUTBOX_BENCH_PG_FLUSH_AFTER=0`
//! measures PostgreSQL's default.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;

use http::{run_wrk, Figures, CONNECTIONS};
use std::net::SocketAddr;

// The same allocator as the `outbox` binary, set up as it is there (see `main`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The unmeasured run each server gets first.
const WARM_UP_SECS: u64 = 2;

async fn serve(extra: &[&str]) -> SocketAddr {
    let app = http::build(extra).await;
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

fn main() {
    outbox::alloc::return_freed_memory_at_once();
    http::require_wrk();
    let secs = http::run_secs();
    let rounds: usize = std::env::var("OUTBOX_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let Some(pg) = harness::postgres::Postgres::start("pg_http bench") else {
        return;
    };
    // As the README recommends for a server taking sustained intake: at PostgreSQL's default
    // (0) the kernel writes the backends' pages back in bursts about 30 s later, and
    // whichever store is measured then gets a p99 of 40 to 120 ms (benches/README.md).
    let flush_after = std::env::var("OUTBOX_BENCH_PG_FLUSH_AFTER").unwrap_or("256kB".into());
    pg.psql(&format!(
        "ALTER SYSTEM SET backend_flush_after = '{flush_after}'"
    ));
    pg.psql("SELECT pg_reload_conf()");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (sled, postgres) = rt.block_on(async {
        let sled = serve(&["--data-dir", data.to_str().unwrap()]).await;
        let postgres = serve(&["--store-url", &pg.url()]).await;
        (sled, postgres)
    });
    let script = http::script(tmp.path());
    println!(
        "body: {} bytes, {CONNECTIONS} connections, 2 wrk threads, {secs} s per run, backend_flush_after {}, PostgreSQL {}",
        http::BODY.len(),
        pg.psql("SHOW backend_flush_after"),
        harness::postgres::bin_dir().unwrap().display()
    );
    // Unmeasured, for both: the pools open their connections and PostgreSQL's backends
    // prepare the group statement, so the first measured round is not the only one to pay it.
    for addr in [sled, postgres] {
        run_wrk(addr, &script, WARM_UP_SECS);
    }
    let (mut s_runs, mut p_runs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first, so neither always runs on the warmer machine.
        let (s, p) = if round % 2 == 1 {
            let s = run_wrk(sled, &script, secs);
            (s, run_wrk(postgres, &script, secs))
        } else {
            let p = run_wrk(postgres, &script, secs);
            (run_wrk(sled, &script, secs), p)
        };
        println!(
            "round {round}: sled {:>8.0} req/s p50 {:.2} ms p99 {:.2} ms | postgres {:>8.0} req/s p50 {:.2} ms p99 {:.2} ms | ratio {:.2}",
            s.rps, s.p50_ms, s.p99_ms, p.rps, p.p50_ms, p.p99_ms, p.rps / s.rps
        );
        s_runs.push(s);
        p_runs.push(p);
    }
    let avg = |v: &[Figures], f: fn(&Figures) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (s, p) = (avg(&s_runs, |f| f.rps), avg(&p_runs, |f| f.rps));
    println!(
        "mean: sled {s:.0} req/s, postgres {p:.0} req/s, ratio {:.2} (target >= 0.80); postgres p99 {:.2} ms (target <= 20 ms)",
        p / s,
        avg(&p_runs, |f| f.p99_ms)
    );
    drop(pg);
}
