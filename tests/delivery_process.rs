//! Delivery across process boundaries, with the real binary: a SIGKILL mid-delivery leads to
//! a redelivery with the same Idempotency-Key after restart, and SIGHUP brings new credentials
//! from the config file and ends a pause at once.

mod common;

use common::dashboard::{Dashboard, Reply};
use common::{free_port, spawn_binary_async as start, KillOnDrop};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use outbox::store::{Status, Store};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "test-ingest-key-0123456789";

async fn post(port: u16, trace_id: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("Idempotency-Key", trace_id)
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

async fn wait_detailed(port: u16, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = reqwest::get(format!("http://127.0.0.1:{port}/health/detailed"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["accounting_balanced"], json!(true), "accounting: {d}");
        if pred(&d) {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGTERM and wait for a clean exit.
async fn stop(mut child: KillOnDrop) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "outbox exits cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_delivery_redelivers_with_the_same_idempotency_key() {
    let dash = Dashboard::start().await;
    // The first attempt hangs: the process is killed while the record is in flight.
    dash.push_replies([Reply::ok().delay(Duration::from_secs(60))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = dash.url();
    let flags = ["--dashboard-url", url.as_str(), "--ingest-key", KEY];
    let port = free_port();
    let mut child = start(&dir, port, &flags).await;
    post(port, "killed-0001").await;
    dash.wait_for_requests(1).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let port = free_port();
    let child = start(&dir, port, &flags).await;
    let got = dash.wait_for_requests(2).await;
    assert_eq!(got[0].trace_id(), "killed-0001");
    assert_eq!(got[1].trace_id(), "killed-0001");
    assert_eq!(got[0].body, got[1].body, "the same request again");
    wait_detailed(port, "the redelivery", |d| d["counts"]["delivered"] == 1).await;
    stop(child).await;
    assert_eq!(
        Store::open(&dir)
            .unwrap()
            .get("killed-0001")
            .unwrap()
            .unwrap()
            .status,
        Status::Delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_a_new_ingest_key_from_the_config_file_and_resumes_at_once() {
    const NEW_KEY: &str = "the-new-ingest-key-0987654321";
    let dash = Dashboard::start().await;
    dash.set_handler(|r| match r.header("x-ingest-key") {
        Some(NEW_KEY) => Reply::ok(),
        _ => Reply::status(403),
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let config = tmp.path().join("outbox.toml");
    std::fs::write(&config, format!("ingest_key = \"{KEY}\"\n")).unwrap();
    let url = dash.url();
    let cfg = config.to_str().unwrap();
    // Probes are hourly: only SIGHUP can end this pause within the test.
    let flags = [
        "--config",
        cfg,
        "--dashboard-url",
        url.as_str(),
        "--auth-probe-interval",
        "1h",
    ];
    let port = free_port();
    let child = start(&dir, port, &flags).await;
    let pid = Pid::from_raw(child.id() as i32);
    post(port, "sighup-0001").await;
    post(port, "sighup-0002").await;
    wait_detailed(port, "the pause", |d| {
        d["delivery"]["mode"] == "paused_credentials"
    })
    .await;

    // An invalid file is refused and the service keeps running, still paused.
    std::fs::write(&config, "ingest_key = \"short\"\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = wait_detailed(port, "still paused", |_| true).await;
    assert_eq!(d["delivery"]["mode"], "paused_credentials");

    std::fs::write(&config, format!("ingest_key = \"{NEW_KEY}\"\n")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let d = wait_detailed(port, "both delivered", |d| d["counts"]["delivered"] == 2).await;
    assert_eq!(d["delivery"]["mode"], "running");
    stop(child).await;
    let store = Store::open(&dir).unwrap();
    for id in ["sighup-0001", "sighup-0002"] {
        let r = store.get(id).unwrap().unwrap();
        assert_eq!(
            (r.status, r.attempts),
            (Status::Delivered, 1),
            "403s spend no attempt"
        );
    }
}
