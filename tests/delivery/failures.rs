//! Delivery when the dashboard fails as a whole: rejected credentials pause everything
//! without spending attempts; an outage opens the circuit breaker, and nothing is lost.

use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::{spawn_app, TestApp};
use outbox::store::{Status, Store};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "test-ingest-key-0123456789";

async fn app_for(dash: &Dashboard, extra: &[&str]) -> TestApp {
    let url = dash.url();
    let mut args = vec![
        "--dashboard-url",
        &url,
        "--ingest-key",
        KEY,
        "--retry-base",
        "20ms",
        "--retry-cap",
        "200ms",
    ];
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

async fn post(app: &TestApp, trace_id: &str) {
    let r = app
        .post_json(
            &json!({"email": "a@example.com"}),
            &[("Idempotency-Key", trace_id)],
        )
        .await;
    assert_eq!(r.status().as_u16(), 202, "{trace_id} accepted");
}

async fn stored(app: TestApp) -> (Option<tempfile::TempDir>, Store) {
    let dir = app.data_dir.clone();
    let tmp = app.stop().await;
    for _ in 0..100 {
        match Store::open(&dir) {
            Err(outbox::store::StoreError::InUse(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return (tmp, other.unwrap()),
        }
    }
    panic!("store stayed locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_pause_delivery_without_spending_attempts_until_a_probe_succeeds() {
    let dash = Dashboard::start().await;
    let accepted = Arc::new(AtomicBool::new(false));
    let a = accepted.clone();
    dash.set_handler(move |_| match a.load(Ordering::SeqCst) {
        true => Reply::ok(),
        false => Reply::status(401).body("bad key"),
    });
    let app = app_for(&dash, &["--auth-probe-interval", "100ms"]).await;
    for i in 0..5 {
        post(&app, &format!("auth-{i:04}")).await;
    }
    let d = app
        .wait_detailed("the pause", |d| {
            d["delivery"]["mode"] == "paused_credentials"
        })
        .await;
    assert_eq!(d["counts"]["delivered"], 0);
    let (status, ready) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "intake stays ready while delivery is paused");
    assert!(
        ready["warnings"]
            .as_array()
            .unwrap()
            .contains(&json!("delivery paused: dashboard rejected credentials")),
        "{ready}"
    );
    // While paused only single probes go out: wait for two more, then fix the dashboard.
    let seen = dash.count();
    dash.wait_for_requests(seen + 2).await;
    accepted.store(true, Ordering::SeqCst);

    let d = app
        .wait_detailed("all delivered", |d| d["counts"]["delivered"] == 5)
        .await;
    assert_eq!(d["delivery"]["mode"], "running");
    let (_, ready) = app.get_json("/health/ready").await;
    assert_eq!(ready["warnings"], json!([]));
    let (_tmp, store) = stored(app).await;
    for i in 0..5 {
        let r = store.get(&format!("auth-{i:04}")).unwrap().unwrap();
        assert_eq!(
            (r.status, r.attempts),
            (Status::Delivered, 1),
            "401s spend no attempt"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_circuit_and_every_submission_is_delivered_once_it_is_back() {
    let dash = Dashboard::start().await;
    let app = app_for(
        &dash,
        &[
            "--circuit-threshold",
            "3",
            "--circuit-cooldown",
            "100ms",
            "--circuit-cooldown-max",
            "300ms",
        ],
    )
    .await;
    dash.go_down().await;
    for i in 0..10 {
        post(&app, &format!("outage-{i:04}")).await;
    }
    let d = app
        .wait_detailed("the circuit to open", |d| {
            d["delivery"]["circuit"] == "open"
        })
        .await;
    assert!(d["delivery"]["last_error"].is_string());
    dash.come_back().await;

    let d = app
        .wait_detailed("all delivered", |d| d["counts"]["delivered"] == 10)
        .await;
    assert_eq!(d["delivery"]["circuit"], "closed");
    assert_eq!(d["counts"]["dead"], 0);
    let mut ids: Vec<String> = dash.requests().iter().map(|r| r.trace_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_circuit_is_open_nothing_is_sent_and_no_attempt_is_spent() {
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::status(503));
    // A long cooldown: the circuit stays open for the rest of the test.
    let app = app_for(
        &dash,
        &["--circuit-threshold", "2", "--circuit-cooldown", "1h"],
    )
    .await;
    for i in 0..4 {
        post(&app, &format!("open-{i:04}")).await;
    }
    app.wait_detailed("the circuit to open", |d| {
        d["delivery"]["circuit"] == "open"
    })
    .await;
    let (_, ready) = app.get_json("/health/ready").await;
    assert!(
        ready["warnings"].to_string().contains("circuit open"),
        "{ready}"
    );
    let sent = dash.count();
    // A new submission wakes the worker, which must still send nothing.
    post(&app, "open-late-01").await;
    app.wait_detailed("the new record queued", |d| d["counts"]["accepted"] == 5)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dash.count(), sent);
    let (_tmp, store) = stored(app).await;
    let spent: u32 = (0..4)
        .map(|i| {
            store
                .get(&format!("open-{i:04}"))
                .unwrap()
                .unwrap()
                .attempts
        })
        .sum();
    assert_eq!(
        spent as usize, sent,
        "only requests really sent count as attempts"
    );
    assert_eq!(store.get("open-late-01").unwrap().unwrap().attempts, 0);
}
