//! Resource figures for a large backlog: RSS and disk bytes per pending record at 100k and
//! 1M pending records, the time `outbox serve` takes to answer /health with 1M pending, the
//! largest RSS of `outbox serve` while it delivers the 1M to a stub dashboard that answers
//! 200 at once, and the disk use after they were delivered and purged, then after `outbox
//! compact` against the running server (with how long it held writes off; for the smaller
//! sizes it compacts the backlog after purging two thirds of it, so that a third is kept).
//!
//! Run: `cargo bench --bench resources` (about 10 minutes on 2 cores; `OUTBOX_RESOURCE_SIZES`
//! takes a comma-separated list of backlog sizes, default `100000,1000000`).
//! Records are ~300-byte JSON forms stored through the same group committer intake uses.

#[path = "../tests/harness/dashboard.rs"]
mod dashboard;
#[path = "support/fill.rs"]
mod fill;

use outbox::store::{Change, Store};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let sizes: Vec<usize> = std::env::var("OUTBOX_RESOURCE_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are whole numbers"))
        .collect();
    let largest = *sizes.iter().max().expect("at least one size");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:>9} | {:>12} | {:>10} | {:>12} | {:>9} | {:>10}",
        "pending", "disk MiB", "disk B/rec", "RSS MiB", "RSS B/rec", "start s"
    );
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let fill = Instant::now();
        rt.block_on(fill::fill_store(&dir, n));
        let fill_secs = fill.elapsed().as_secs_f64();
        let idle_rss = serve_rss(&tempfile::tempdir().unwrap().path().join("empty")).1;
        let disk = dir_size(&dir);
        let (start_secs, rss) = serve_rss(&dir);
        println!(
            "{n:>9} | {:>12.1} | {:>10.0} | {:>12.1} | {:>9.0} | {start_secs:>10.2}   (filled in {fill_secs:.1}s; idle RSS {:.1} MiB)",
            disk as f64 / 1048576.0,
            disk as f64 / n as f64,
            rss as f64 / 1048576.0,
            (rss.saturating_sub(idle_rss)) as f64 / n as f64,
            idle_rss as f64 / 1048576.0,
        );
        if n != largest {
            // Two thirds gone, a third kept: the hold grows with the records kept.
            let kept = purge_two_thirds(&dir);
            println!(
                "{}",
                compact_served(&dir, &format!("{kept} of {n} pending kept"))
            );
        }
        if n == largest {
            let (secs, peak) = rt.block_on(drain_rss(&dir, n));
            println!(
                "delivered all {n} through `outbox serve` in {secs:.1}s ({:.0}/s): RSS at most {:.1} MiB while draining",
                n as f64 / secs,
                peak as f64 / 1048576.0
            );
            let purge = Instant::now();
            let after = purge_delivered(&dir, n);
            println!(
                "after all {n} delivered and purged: disk {:.1} MiB (was {:.1} MiB; sled files only shrink when tail segments free up) in {:.1}s",
                after as f64 / 1048576.0,
                disk as f64 / 1048576.0,
                purge.elapsed().as_secs_f64()
            );
            println!("{}", compact_served(&dir, "after the purge"));
            println!(
                "disk after compaction: {:.1}% of the peak",
                dir_size(&dir) as f64 * 100.0 / disk as f64
            );
        }
    }
}

/// `outbox serve` on `dir` with `extra` arguments, listening on a free loopback port.
fn spawn_serve(dir: &Path, extra: &[&str]) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--log-level", "warn", "--max-pending", "100000000"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

fn terminate(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

/// Starts the real binary on `dir`, returns (seconds until /health answers, RSS after it settles).
fn serve_rss(dir: &Path) -> (f64, u64) {
    let started = Instant::now();
    let (child, port) = spawn_serve(dir, &[]);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "outbox did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let resident = rss(child.id());
    terminate(child);
    (start_secs, resident)
}

/// Runs `outbox serve` on `dir` against a stub dashboard until it has delivered `n` records;
/// returns the seconds that took and the largest RSS seen (sampled every 250 ms).
async fn drain_rss(dir: &Path, n: usize) -> (f64, u64) {
    let dash = dashboard::Dashboard::start().await;
    let started = Instant::now();
    let url = dash.url();
    let extra = [
        "--dashboard-url",
        &url,
        "--ingest-key",
        "bench-ingest-key-0123456789",
    ];
    let (mut child, _) = spawn_serve(dir, &extra);
    let mut peak = 0;
    let mut peak_at = (0.0, 0);
    // The RSS when each further tenth of the backlog has been delivered: does it level off or
    // keep growing?
    let mut tenths = Vec::new();
    while dash.count() < n {
        assert!(child.try_wait().unwrap().is_none(), "outbox exited");
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "not drained in 30 minutes"
        );
        let now = rss(child.id());
        if now > peak {
            peak = now;
            peak_at = (started.elapsed().as_secs_f64(), dash.count());
        }
        if dash.count() * 10 >= n * (tenths.len() + 1) {
            tenths.push(format!("{:.0}", now as f64 / 1048576.0));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    peak = peak.max(rss(child.id()));
    terminate(child);
    println!(
        "RSS MiB while draining, at each tenth delivered: {}; the most {:.1} s after the start, {} delivered",
        tenths.join(" "),
        peak_at.0,
        peak_at.1
    );
    (secs, peak)
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// Runs `outbox compact` against `outbox serve` on `dir`; describes the outcome.
fn compact_served(dir: &Path, what: &str) -> String {
    let (child, port) = spawn_serve(dir, &[]);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["compact", "--json", "--data-dir", dir.to_str().unwrap()])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    terminate(child);
    assert!(out.status.success(), "outbox compact failed");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mib = |k: &str| r[k].as_u64().unwrap() as f64 / 1048576.0;
    format!(
        "compaction of the running server ({what}): {:.1} -> {:.1} MiB in {secs:.1}s, {} records kept, writes held off {} ms{}",
        mib("bytes_before"),
        mib("bytes_after"),
        r["records"],
        r["writers_held_ms"],
        match r["swapped"].as_bool() {
            Some(true) => "",
            _ => " (the copy would not be smaller: not used)",
        }
    )
}

/// Purges every delivered tombstone through the store's own transactions; returns the
/// directory size after a reopen.
/// Purges two of every three records (in trace ID order); returns how many are kept.
fn purge_two_thirds(dir: &Path) -> usize {
    let store = Store::open(dir).unwrap();
    let ids: Vec<String> = store.records().map(|r| r.unwrap().trace_id).collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 3 != 0 {
            store.update(id, |_| Change::Purge).unwrap();
        }
    }
    store.sync().unwrap();
    ids.len().div_ceil(3)
}

fn purge_delivered(dir: &Path, n: usize) -> u64 {
    let store = Store::open(dir).unwrap();
    let ids: Vec<String> = store
        .delivered_before(outbox::store::done::TOMBSTONE, i64::MAX, n)
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids.len(), n, "every record was delivered");
    for id in &ids {
        store.update(id, |_| Change::Purge).unwrap();
    }
    store.sync().unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.purged as usize, n, "{c:?}");
    drop(store);
    // Reopen once: sled reclaims freed segments on the next start.
    drop(Store::open(dir).unwrap());
    dir_size(dir)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
