//! Fault tests: the service under the faults a small server meets. Short versions run in the
//! suite; `OUTBOX_SOAK=1` runs the long ones (`OUTBOX_SOAK_SECS`, default 1800, for the soak).

mod common;

use common::dashboard::{Dashboard, Reply};
use common::spawn_app;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "fault-test-ingest-key";

fn soak() -> bool {
    std::env::var_os("OUTBOX_SOAK").is_some()
}

/// Flags for fast retries so outages of seconds behave like outages of hours.
fn fast_delivery(url: &str) -> Vec<String> {
    [
        "--dashboard-url",
        url,
        "--ingest-key",
        KEY,
        "--retry-base",
        "20ms",
        "--retry-cap",
        "300ms",
        "--circuit-threshold",
        "3",
        "--circuit-cooldown",
        "100ms",
        "--circuit-cooldown-max",
        "500ms",
        "--delivery-timeout",
        "2s",
        "--lease",
        "3s",
        "--max-attempts",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Trace IDs the stub received, with how often each arrived.
fn delivered(dash: &Dashboard) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in dash.requests() {
        *m.entry(r.trace_id()).or_insert(0) += 1;
    }
    m
}

async fn wait_delivered(dash: &Dashboard, acked: &HashSet<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = delivered(dash);
        let missing = acked.iter().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged submissions never reached the dashboard",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_outage_under_steady_intake_ends_with_everything_delivered() {
    let dash = Dashboard::start().await;
    let flags = fast_delivery(&dash.url());
    let app = spawn_app(&as_strs(&flags)).await;
    let outage = if soak() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(3)
    };
    let mut acked = HashSet::new();
    let mut circuit_opened = false;
    let mut i = 0;
    // Steady intake before, during and after the outage.
    for (phase, length) in [
        ("up", Duration::from_millis(500)),
        ("down", outage),
        ("back", outage),
    ] {
        match phase {
            "down" => dash.go_down().await,
            "back" => dash.come_back().await,
            _ => {}
        }
        let phase_started = Instant::now();
        while phase_started.elapsed() < length {
            let r = app
                .post_json(&json!({"email": format!("steady{i}@example.com")}), &[])
                .await;
            assert_eq!(r.status(), 202, "intake keeps accepting in phase {phase}");
            acked.insert(
                r.json::<serde_json::Value>().await.unwrap()["trace_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            i += 1;
            if phase == "down" && i % 20 == 0 {
                let (_, d) = app.get_json("/health/detailed").await;
                circuit_opened |= d["delivery"]["circuit"] == "open";
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(
        circuit_opened,
        "the circuit should open while the dashboard is down"
    );
    wait_delivered(&dash, &acked, Duration::from_secs(60)).await;
    let (_, d) = app.get_json("/health/detailed").await;
    assert_eq!(d["accounting_balanced"], true, "{d}");
    assert_eq!(
        d["counts"]["accepted"].as_u64().unwrap() as usize,
        acked.len()
    );
    assert_eq!(d["counts"]["dead"], 0, "{d}");
    assert_eq!(d["delivery"]["circuit"], "closed", "{d}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_intake_and_delivery_loses_nothing_acknowledged() {
    let dash = Dashboard::start().await;
    // Slow answers keep deliveries in flight when the kill lands.
    dash.set_reply(Reply::ok().delay(Duration::from_millis(30)));
    let flags = fast_delivery(&dash.url());
    let concurrency = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cycles = if soak() { 40 } else { 8 };
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    for cycle in 0..cycles {
        let port = common::free_port();
        let (d, f) = (dir.clone(), flags.clone());
        let child =
            tokio::task::spawn_blocking(move || common::spawn_binary(&d, port, &as_strs(&f)))
                .await
                .unwrap();
        let client = reqwest::Client::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..4 {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("dk-{cycle:02}-{c}-{n:05}");
                    n += 1;
                    let r = client
                        .post(format!("http://127.0.0.1:{port}/api/collect"))
                        .header("Idempotency-Key", &id)
                        .json(&json!({"email": format!("{id}@example.com")}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().unwrap().insert(id);
                        }
                        _ => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + (cycle as u64 * 97) % 600)).await;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        tokio::task::spawn_blocking(move || {
            let mut c = child;
            c.wait()
        })
        .await
        .unwrap()
        .unwrap();
    }
    // A last run without kills drains what is left.
    let port = common::free_port();
    let (d, f) = (dir.clone(), flags.clone());
    let mut last =
        tokio::task::spawn_blocking(move || common::spawn_binary(&d, port, &as_strs(&f)))
            .await
            .unwrap();
    let acked = acked.lock().unwrap().clone();
    wait_delivered(&dash, &acked, Duration::from_secs(90)).await;
    let got = delivered(&dash);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    // Only deliveries in flight at a kill may arrive twice: at most `concurrency` per kill.
    assert!(
        duplicates <= cycles * concurrency,
        "{duplicates} duplicates for {cycles} kills"
    );
    let keys: HashSet<&String> = got.keys().collect();
    assert!(acked.iter().all(|id| keys.contains(id)));
    let _ = last.kill();
    let _ = last.wait();
    eprintln!(
        "{} acknowledged, all delivered; {duplicates} redelivered after {cycles} kills",
        acked.len()
    );
}
