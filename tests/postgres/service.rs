//! `outbox serve` on PostgreSQL, through the real binary over real TCP with the stub
//! dashboard: PostgreSQL stopped (`-m immediate`) and killed (SIGKILL of the postmaster) under
//! steady posts and started again, and PostgreSQL unreachable at start. Shared helpers for
//! the service tests (`shared`) are here too: a poster that keeps every answer, readiness.

use super::harness::dashboard::Dashboard;
use super::harness::postgres::Postgres;
use super::harness::{free_port, log_lines, spawn_on_postgres, unused_data_dir};
use super::sql;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "service-test-ingest-key";

/// One post's answer as the client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub key: String,
    /// 0: no HTTP answer (the connection failed or was cut).
    pub status: u16,
    pub retry_after: bool,
    pub sent: Instant,
    pub answered: Instant,
    pub port: u16,
}

impl Answer {
    pub fn acknowledged(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Posts one submission under `key` to the instance on `port`.
pub async fn post(client: &reqwest::Client, port: u16, key: &str) -> Answer {
    let sent = Instant::now();
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("idempotency-key", key)
        .json(&serde_json::json!({"email": "visitor@example.com", "message": key}))
        .send()
        .await;
    let (status, retry_after) = match r {
        Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
        Err(_) => (0, false),
    };
    Answer {
        key: key.to_owned(),
        status,
        retry_after,
        sent,
        answered: Instant::now(),
        port,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `/health/ready`'s status and body on `port` (0 when it does not answer).
pub async fn ready(port: u16) -> (u16, serde_json::Value) {
    let r = client()
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Waits up to `within` until readiness on `port` is `want` (200 or 503); returns how long.
pub async fn wait_ready(port: u16, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = ready(port).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "readiness on {port} did not become {want} within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/health/detailed` on `port`.
pub async fn detailed(port: u16) -> serde_json::Value {
    client()
        .get(format!("http://127.0.0.1:{port}/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Clients posting unique keys to `ports` in turn until stopped; every answer is kept.
pub struct Posters {
    pub answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Posters {
    pub fn start(clients: usize, ports: &[u16], prefix: &str) -> Posters {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (answers, stop, ports) = (answers.clone(), stop.clone(), ports.to_vec());
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let client = client();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let port = ports[n % ports.len()];
                        let a = post(&client, port, &format!("{prefix}-{c}-{n:06}")).await;
                        if a.status != 202 {
                            // Not stored (or not answered): a short pause, as a client backs off.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        answers.lock().unwrap().push(a);
                        n += 1;
                    }
                })
            })
            .collect();
        Posters {
            answers,
            stop,
            tasks,
        }
    }

    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

/// Waits until the stub holds a delivery of every key in `keys`, each carrying its own
/// trace ID in the body and as the `Idempotency-Key`.
pub async fn wait_all_delivered(dash: &Dashboard, keys: &std::collections::HashSet<String>) {
    let got = dash
        .wait_until(
            |r| {
                let seen: std::collections::HashSet<String> =
                    r.iter().map(|r| r.trace_id()).collect();
                keys.iter().all(|k| seen.contains(k))
            },
            "every acknowledged trace ID",
        )
        .await;
    for r in got.iter().filter(|r| keys.contains(&r.trace_id())) {
        assert_eq!(
            r.json()["trace_id"],
            r.trace_id(),
            "its own Idempotency-Key"
        );
    }
}

/// How PostgreSQL is taken away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    StopImmediate,
    KillPostmaster,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_or_killed_under_posts_costs_503s_and_nothing_acknowledged() {
    let Some(mut pg) = Postgres::start("outbox serve through PostgreSQL outages") else {
        return;
    };
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (log, port) = (tmp.path().join("outbox.log"), free_port());
    let flags = [
        "--dashboard-url",
        &dash.url(),
        "--ingest-key",
        KEY,
        "--delivery-timeout",
        "1s",
        "--retry-base",
        "100ms",
    ];
    let mut outbox = spawn_on_postgres(&pg.url(), port, &flags, &log).await;
    let pid = outbox.id();
    wait_ready(port, 200, Duration::from_secs(10)).await;
    assert!(
        !unused_data_dir(&log).exists(),
        "no data directory with PostgreSQL"
    );

    let posters = Posters::start(4, &[port], "outage");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut windows = Vec::new();
    for outage in [Outage::StopImmediate, Outage::KillPostmaster] {
        tokio::task::block_in_place(|| match outage {
            Outage::StopImmediate => pg.stop_immediate(),
            Outage::KillPostmaster => pg.kill_postmaster(),
        });
        let down = Instant::now();
        let took = wait_ready(port, 503, Duration::from_secs(6)).await;
        println!("{outage:?}: not ready {took:?} after PostgreSQL went");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let up = Instant::now();
        tokio::task::block_in_place(|| pg.run());
        let took = wait_ready(port, 200, Duration::from_secs(10)).await;
        println!("{outage:?}: ready again {took:?} after PostgreSQL accepted connections");
        windows.push((outage, down, up));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let answers = posters.stop().await;

    // Every post was answered, 202 or 503 with Retry-After, within the store's bounds.
    let slowest = answers.iter().map(|a| a.answered - a.sent).max().unwrap();
    println!(
        "{} posts, {} acknowledged, slowest answer {slowest:?}",
        answers.len(),
        answers.iter().filter(|a| a.acknowledged()).count()
    );
    for a in &answers {
        assert!(matches!(a.status, 202 | 503), "{a:?}");
        assert!(
            a.status != 503 || a.retry_after,
            "503 without Retry-After: {a:?}"
        );
    }
    assert!(
        slowest < Duration::from_secs(10),
        "an answer took {slowest:?}"
    );
    for (outage, down, up) in &windows {
        let during: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.sent >= *down && a.answered <= *up)
            .collect();
        assert!(!during.is_empty(), "{outage:?}: posts during the outage");
        assert!(
            during.iter().all(|a| a.status == 503),
            "{outage:?}: a post during the outage was acknowledged"
        );
    }

    // Every acknowledged post is in the table and reaches the dashboard.
    let acked: std::collections::HashSet<String> = answers
        .iter()
        .filter(|a| a.acknowledged())
        .map(|a| a.key.clone())
        .collect();
    let keys: Vec<String> = acked.iter().cloned().collect();
    assert_eq!(super::present(&sql(&pg).await, &keys).await, keys.len());
    wait_all_delivered(&dash, &acked).await;

    // The same process throughout, which logged each outage once, not once per attempt.
    assert_eq!(outbox.id(), pid);
    assert!(outbox.try_wait().unwrap().is_none(), "outbox kept running");
    let lines = |m: &str| log_lines(&log, m).len();
    assert_eq!(
        lines("the PostgreSQL store cannot be reached; intake answers 503 and delivery waits until it is back"),
        2
    );
    assert_eq!(lines("the PostgreSQL store is reachable again"), 2);
    let delivery_down =
        lines("delivery cannot read the store; retrying every second until it answers");
    assert!(delivery_down <= 2, "{delivery_down} delivery error lines");
    assert_eq!(lines("delivery reads the store again"), delivery_down);
    let d = detailed(port).await;
    assert_eq!(d["accounting_balanced"], true, "{d}");
    assert!(!unused_data_dir(&log).exists());
}

#[test]
fn postgres_unreachable_at_start_exits_3_naming_the_masked_url_and_the_fix() {
    let port = free_port();
    let url = format!("postgres://outbox:hunter2@127.0.0.1:{port}/outbox?sslmode=disable");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = std::process::Command::new(super::harness::bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .args(["--store-url", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "postgres://outbox:********@127.0.0.1:{port}/outbox"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("check that PostgreSQL runs"), "{stderr}");
    assert!(!data.exists(), "no data directory with PostgreSQL");
}
