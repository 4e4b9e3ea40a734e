//! The longest post while `outbox verify` checks a running server's store: four clients post
//! one submission after another to `outbox serve` holding a backlog of pending records
//! (delivery off, so it stays), and after two seconds `outbox verify --data-dir` runs through
//! the server. Printed per backlog size: how long verify took, the longest post that was
//! under way at any moment of it, and the 99th percentile and longest post outside it.
//!
//! Run: `cargo bench --bench live_verify` (`OUTBOX_VERIFY_SIZES`: comma-separated backlog
//! sizes, default `200000`; `OUTBOX_BIN`: the `outbox` binary to measure, default the one
//! built with this bench, so an older build can be measured with the same bench).

#[path = "support/fill.rs"]
mod fill;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const BODY: &str = r#"{"name":"Maria Lopez","email":"maria.lopez@example.com","company":"Northwind Health","message":"We would like a demo for our support team of about forty agents, ideally next week.","consent":true,"page":"/pricing"}"#;

fn main() {
    let sizes: Vec<usize> = std::env::var("OUTBOX_VERIFY_SIZES")
        .unwrap_or_else(|_| "200000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are whole numbers"))
        .collect();
    let bin = std::env::var("OUTBOX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_outbox").into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("binary: {bin}; {CLIENTS} clients posting");
    println!(
        "{:>9} | {:>9} | {:>16} | {:>13} | {:>13} | {:>12}",
        "pending", "verify s", "longest post, ms", "p99 else, ms", "max else, ms", "posts during"
    );
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        rt.block_on(fill::fill_store(&dir, n));
        let m = rt.block_on(measure(&bin, &dir));
        println!(
            "{n:>9} | {:>9.2} | {:>16.1} | {:>13.1} | {:>13.1} | {:>12}   (verify: {})",
            m.verify.as_secs_f64(),
            m.longest_during * 1e3,
            m.p99_else * 1e3,
            m.max_else * 1e3,
            m.during,
            m.verdict
        );
    }
}

struct Measured {
    verify: Duration,
    longest_during: f64,
    p99_else: f64,
    max_else: f64,
    during: usize,
    verdict: String,
}

/// One post: when it started and how long it took (seconds since `t0`).
type Post = (f64, f64);

async fn measure(bin: &str, dir: &Path) -> Measured {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--log-level", "warn", "--max-pending", "100000000"])
        .args(["--rate-limit", "off"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/collect");
    let http = reqwest::Client::new();
    while http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut posts: Vec<Post> = vec![];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = t0.elapsed().as_secs_f64();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("live-verify-{c}-{i}"))
                        .body(BODY)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202, "post answered {}", r.status());
                    posts.push((started, t0.elapsed().as_secs_f64() - started));
                    i += 1;
                }
                posts
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = t0.elapsed().as_secs_f64();
    let out = tokio::task::spawn_blocking({
        let (bin, dir) = (bin.to_owned(), dir.to_owned());
        move || {
            Command::new(bin)
                .args(["verify", "--data-dir"])
                .arg(dir)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let to = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut posts: Vec<Post> = vec![];
    for c in clients {
        posts.extend(c.await.unwrap());
    }
    let _ = server.kill();
    let _ = server.wait();
    let overlaps = |(s, d): &Post| *s < to && s + d > from;
    let longest_during = posts
        .iter()
        .filter(|p| overlaps(p))
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let mut other: Vec<f64> = posts.iter().filter(|p| !overlaps(p)).map(|p| p.1).collect();
    other.sort_by(f64::total_cmp);
    let p99_else = other.get(other.len() * 99 / 100).copied().unwrap_or(0.0);
    let last = String::from_utf8_lossy(&out.stdout);
    Measured {
        verify: Duration::from_secs_f64(to - from),
        longest_during,
        p99_else,
        max_else: other.last().copied().unwrap_or(0.0),
        during: posts.iter().filter(|p| overlaps(p)).count(),
        verdict: last.lines().last().unwrap_or("no output").to_owned(),
    }
}
