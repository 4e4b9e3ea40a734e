//! Delivery across process boundaries, with the real binary: a SIGKILL mid-delivery leads to
//! a redelivery with the same Idempotency-Key after restart, and SIGHUP brings new credentials
//! from the config file or a key file and ends a pause at once.

use crate::harness;
use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::{
    free_port, log_lines, spawn_binary_async as start, spawn_binary_logged, KillOnDrop,
};
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
    harness::wait_detailed(&format!("http://127.0.0.1:{port}"), what, pred).await
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

/// The runbook's rotation: the key lives in a file (as `OUTBOX_INGEST_KEY_FILE` in the unit),
/// the operator writes the new key there and reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_ingest_key_file_and_the_next_delivery_carries_the_new_key() {
    const NEW_KEY: &str = "the-rotated-ingest-key-5555";
    let dash = Dashboard::start().await;
    dash.set_handler(|r| match r.header("x-ingest-key") {
        Some(NEW_KEY) => Reply::ok(),
        _ => Reply::status(401),
    });
    let tmp = tempfile::tempdir().unwrap();
    let (dir, log) = (tmp.path().join("data"), tmp.path().join("outbox.log"));
    let key_file = tmp.path().join("ingest-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let url = dash.url();
    let flags = [
        "--ingest-key-file",
        key_file.to_str().unwrap(),
        "--dashboard-url",
        url.as_str(),
        "--auth-probe-interval",
        "1h",
    ];
    let port = free_port();
    let child = spawn_binary_logged(&dir, port, &flags, &log).await;
    let pid = Pid::from_raw(child.id() as i32);
    post(port, "keyfile-0001").await;
    let d = wait_detailed(port, "the pause", |d| {
        d["delivery"]["mode"] == "paused_credentials"
    })
    .await;
    assert_eq!(
        dash.requests()[0].header("x-ingest-key"),
        Some(KEY),
        "the file's content, newline trimmed"
    );
    assert!(
        d["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "delivery paused: dashboard rejected credentials"),
        "/health/detailed carries the pause warning: {d}"
    );
    let probe_at = d["delivery"]["next_probe_at"]
        .as_str()
        .expect("next probe time");
    let in_secs = (chrono::DateTime::parse_from_rfc3339(probe_at)
        .unwrap()
        .timestamp()
        - chrono::Utc::now().timestamp()) as i64;
    assert!(
        (3000..=3600).contains(&in_secs),
        "the next credentials probe is an hour away: {d}"
    );
    assert!(
        d["next_attempt_in_seconds"].as_i64().unwrap() >= 3000,
        "{d}"
    );
    let paused = log_lines(&log, "delivery paused: the dashboard rejected the credentials (the ingest key comes from key_source; delivery also resumes by itself when a probe succeeds)");
    assert_eq!(paused.len(), 1, "the pause is logged once");
    let key_source = paused[0]["key_source"].as_str().unwrap_or_default();
    assert!(
        key_source.contains(&format!("the file {}", key_file.display()))
            && !key_source.contains("OUTBOX_INGEST_KEY "),
        "the pause names the key file to edit: {}",
        paused[0]
    );

    // A reload that finds the same key says so, and where the key comes from.
    kill(pid, Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let unchanged = loop {
        let l = log_lines(&log, "reload: the delivery credentials did not change");
        if let Some(l) = l.first() {
            break l.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning for an unchanged reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(unchanged["level"], "WARN");
    assert!(
        unchanged["key_source"]
            .as_str()
            .unwrap()
            .contains(key_file.to_str().unwrap()),
        "{unchanged}"
    );

    std::fs::write(&key_file, format!("{NEW_KEY}\n")).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let d = wait_detailed(port, "delivered", |d| d["counts"]["delivered"] == 1).await;
    assert_eq!(d["delivery"]["mode"], "running");
    assert_eq!(d["delivery"]["next_probe_at"], Value::Null);
    let last = dash.requests().pop().unwrap();
    assert_eq!(last.header("x-ingest-key"), Some(NEW_KEY));
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {NEW_KEY}").as_str())
    );
    let reloaded = log_lines(&log, "reload: delivery credentials reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(reloaded[0]["resumed"], true);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(KEY) && !logged.contains(NEW_KEY),
        "no key in the log"
    );
    stop(child).await;
}

/// Every failed attempt's cause reaches the log at the default level, as one summary line
/// per minute at most; refused posts too. While the circuit is open, health and `inspect`
/// show when the next probe goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_refusals_are_summarized_and_the_open_circuit_shows_its_next_probe() {
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::status(503));
    let tmp = tempfile::tempdir().unwrap();
    let (dir, log) = (tmp.path().join("data"), tmp.path().join("outbox.log"));
    let url = dash.url();
    let flags = [
        "--ingest-key",
        KEY,
        "--dashboard-url",
        url.as_str(),
        "--retry-base",
        "1ms",
        "--retry-cap",
        "5ms",
        "--max-attempts",
        "1000",
        "--circuit-threshold",
        "30",
        "--circuit-cooldown",
        "1h",
        "--global-rate-limit",
        "1/m",
    ];
    let port = free_port();
    let child = spawn_binary_logged(&dir, port, &flags, &log).await;
    post(port, "summary-0001").await;
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .json(&json!({"email": "b@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);

    let d = wait_detailed(port, "the open circuit", |d| {
        d["delivery"]["circuit"] == "open"
    })
    .await;
    assert!(dash.count() >= 30, "30 failed attempts open the circuit");
    let probe_at = d["delivery"]["next_probe_at"]
        .as_str()
        .expect("next probe time");
    let in_secs = chrono::DateTime::parse_from_rfc3339(probe_at)
        .unwrap()
        .timestamp()
        - chrono::Utc::now().timestamp();
    assert!(
        (3000..=3600).contains(&in_secs),
        "the probe is a cooldown away: {d}"
    );
    assert!(
        d["next_attempt_in_seconds"].as_i64().unwrap() >= 3000,
        "{d}"
    );
    assert!(
        d["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "delivery circuit open: the dashboard is failing"),
        "{d}"
    );
    let inspect = std::process::Command::new(harness::bin())
        .args(["inspect", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains(&format!("next probe      {probe_at} (in ")),
        "{text}"
    );
    assert!(
        text.contains("(circuit probe; nothing is sent before it)"),
        "{text}"
    );

    let failed = log_lines(&log, "delivery attempts failed");
    assert_eq!(
        failed.len(),
        1,
        "one line within the minute for 30 failures: {failed:?}"
    );
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(failed[0]["last_cause"], "HTTP 503");
    assert!(
        failed[0]["causes"].as_str().unwrap().contains("HTTP 503 x"),
        "{:?}",
        failed[0]
    );
    let opened = log_lines(&log, "delivery circuit changed");
    assert_eq!(opened.last().unwrap()["to"], "open", "{opened:?}");
    let posts = log_lines(&log, "posts refused");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["causes"], "429 rate_limited x1");
    stop(child).await;
}
