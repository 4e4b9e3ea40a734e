//! Delivery through real TCP to a stub dashboard: the request contract, the outcomes
//! (delivered, retried, dead letter, redirect not followed, quarantine), shutdown and purge.
//! Time-dependent settings are passed as short flags so each test runs in about a second.

use crate::harness;
use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::{spawn_app, TestApp};
use base64::Engine;
use hmac::Mac;
use outbox::store::{Status, Store};
use serde_json::{json, Value};

const KEY: &str = "test-ingest-key-0123456789";

/// Flags for a fast worker pointed at `dash`; a flag in `extra` replaces its default here.
async fn app_for(dash: &Dashboard, extra: &[&str]) -> TestApp {
    let url = dash.url();
    let defaults = [
        ("--dashboard-url", url.as_str()),
        ("--ingest-key", KEY),
        ("--retry-base", "20ms"),
        ("--retry-cap", "200ms"),
        ("--delivery-timeout", "5s"),
    ];
    let mut args: Vec<&str> = extra.to_vec();
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    spawn_app(&args).await
}

async fn post(app: &TestApp, trace_id: &str, body: Value) {
    let r = app.post_json(&body, &[("Idempotency-Key", trace_id)]).await;
    assert_eq!(r.status().as_u16(), 202, "{trace_id} accepted");
}

/// Stops the app and opens its store.
async fn stored(app: TestApp) -> (Option<tempfile::TempDir>, Store) {
    let dir = app.data_dir.clone();
    let tmp = app.stop().await;
    (tmp, open_when_free(&dir).await)
}

/// Opens a store whose previous owner is stopping (its last background task may still be
/// letting go of the directory lock).
async fn open_when_free(dir: &std::path::Path) -> Store {
    for _ in 0..100 {
        match Store::open(dir) {
            Err(outbox::store::StoreError::InUse(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked after the app stopped", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_carries_the_contract_headers_body_and_a_valid_signature() {
    let dash = Dashboard::start().await;
    let secret_bytes = b"0123456789abcdef0123456789abcdef";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret_bytes)
    );
    let app = app_for(
        &dash,
        &[
            "--site-origin",
            "https://www.example.com",
            "--signing-secret",
            &secret,
            "--routes",
            "contact=/api/contact",
        ],
    )
    .await;
    post(
        &app,
        "contract-0001",
        json!({"email": "jo@example.com", "message": "Hello", "src": "footer"}),
    )
    .await;
    post(&app, "contract-0002", json!({"email": "jo@example.com"})).await;

    let got = dash.wait_for_requests(2).await;
    let contact = got
        .iter()
        .find(|r| r.trace_id() == "contract-0001")
        .unwrap();
    let news = got
        .iter()
        .find(|r| r.trace_id() == "contract-0002")
        .unwrap();
    assert_eq!(
        (contact.path.as_str(), news.path.as_str()),
        ("/api/contact", "/api/ingest")
    );
    assert_eq!(contact.method, "POST");
    let h = |name| {
        contact
            .header(name)
            .unwrap_or_else(|| panic!("header {name}"))
    };
    assert_eq!(h("x-ingest-key"), KEY);
    assert_eq!(h("authorization"), format!("Bearer {KEY}"));
    assert_eq!(h("origin"), "https://www.example.com");
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("idempotency-key"), "contract-0001");
    assert_eq!(h("x-trace-id"), "contract-0001");
    assert_eq!(
        h("user-agent"),
        format!("outbox/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(h("webhook-id"), "contract-0001");

    // The signature verifies over `id.timestamp.body` with the decoded secret.
    let signed = format!("{}.{}.", h("webhook-id"), h("webhook-timestamp"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret_bytes).unwrap();
    mac.update(signed.as_bytes());
    mac.update(&contact.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(h("webhook-signature"), format!("v1,{want}"));

    // Body: the form's fields win at top level; the observed values are under _enrichment.
    let body = contact.json();
    assert_eq!(body["email"], "jo@example.com");
    assert_eq!(body["message"], "Hello");
    assert_eq!(body["src"], "footer");
    assert_eq!(body["_enrichment"]["src"], "site-proxy");
    assert_eq!(body["trace_id"], "contract-0001");
    assert_eq!(body["form_type"], "contact");
    assert_eq!(body["client_ip"], "127.0.0.1");
    assert_eq!(body["_enrichment"]["client_ip"], "127.0.0.1");
    assert_eq!(body["received_at"], body["_enrichment"]["received_at"]);
    assert_eq!(news.json()["form_type"], "newsletter");

    app.wait_detailed("two deliveries", |d| d["counts"]["delivered"] == 2)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submission_is_delivered_once_and_a_late_duplicate_gets_its_receipt() {
    let dash = Dashboard::start().await;
    let app = app_for(&dash, &[]).await;
    for i in 0..20 {
        post(
            &app,
            &format!("success-{i:04}"),
            json!({"email": format!("u{i}@example.com")}),
        )
        .await;
    }
    let d = app
        .wait_detailed("20 deliveries", |d| d["counts"]["delivered"] == 20)
        .await;
    assert_eq!(d["counts"]["pending"], 0);
    assert_eq!(d["delivery"]["mode"], "running");
    assert!(d["delivery"]["last_success_at"].is_string());
    let mut ids: Vec<String> = dash.requests().iter().map(|r| r.trace_id()).collect();
    ids.sort();
    assert_eq!(
        ids,
        (0..20)
            .map(|i| format!("success-{i:04}"))
            .collect::<Vec<_>>()
    );

    // The tombstone answers a repeat with the original receipt, and nothing is re-sent.
    let first_post_again = app
        .post_json(
            &json!({"email": "u3@example.com"}),
            &[("Idempotency-Key", "success-0003")],
        )
        .await;
    assert_eq!(first_post_again.status().as_u16(), 200);
    let receipt: Value = first_post_again.json().await.unwrap();
    assert_eq!(receipt["duplicate"], true);
    let (_tmp, store) = stored(app).await;
    assert_eq!(dash.count(), 20);
    let r = store.get("success-0003").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.payload),
        (Status::Delivered, 1, None)
    );
    assert!(r.delivered_at_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_attempt_is_retried_with_the_same_idempotency_key_until_it_succeeds() {
    let dash = Dashboard::start().await;
    dash.push_replies([Reply::status(503), Reply::status(500), Reply::status(429)]);
    let app = app_for(&dash, &[]).await;
    post(&app, "retry-0001", json!({"email": "a@example.com"})).await;
    let got = dash.wait_for_requests(4).await;
    assert!(got.iter().all(|r| r.trace_id() == "retry-0001"));
    app.wait_detailed("the delivery", |d| d["counts"]["delivered"] == 1)
        .await;
    let (_tmp, store) = stored(app).await;
    let r = store.get("retry-0001").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.last_status_code),
        (Status::Delivered, 4, Some(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_over_the_backoff() {
    let dash = Dashboard::start().await;
    // Without Retry-After the next attempt would come within the 20 ms backoff ceiling.
    dash.push_replies([Reply::status(503).retry_after("1")]);
    let app = app_for(&dash, &["--retry-cap", "10s"]).await;
    post(&app, "retry-after-01", json!({"email": "a@example.com"})).await;
    let got = dash.wait_for_requests(2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= std::time::Duration::from_millis(950),
        "retried after {gap:?}"
    );
    app.wait_detailed("the delivery", |d| d["counts"]["delivered"] == 1)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_a_dead_letter_at_once_keeping_its_status_and_a_kib_of_the_reply() {
    let dash = Dashboard::start().await;
    let reply = format!(
        "{{\"error\":\"invalid email\",\"pad\":\"{}\"}}",
        "x".repeat(3000)
    );
    dash.set_reply(Reply::status(422).body(reply.clone()));
    let app = app_for(&dash, &[]).await;
    post(&app, "dead-0001", json!({"email": "not-an-email"})).await;
    let d = app
        .wait_detailed("a dead letter", |d| d["counts"]["dead"] == 1)
        .await;
    assert_eq!(d["counts"]["pending"], 0);
    assert_eq!(dash.count(), 1, "a dead letter is not retried");
    let (_tmp, store) = stored(app).await;
    let r = store.get("dead-0001").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.last_status_code),
        (Status::Dead, 1, Some(422))
    );
    assert_eq!(r.last_error.as_deref(), Some(&reply[..1024]));
    assert!(
        r.payload.is_some(),
        "a dead letter keeps its payload for replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_into_a_dead_letter_after_max_attempts() {
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::status(503).body("maintenance"));
    let app = app_for(
        &dash,
        &["--max-attempts", "3", "--circuit-threshold", "100"],
    )
    .await;
    post(&app, "exhaust-0001", json!({"email": "a@example.com"})).await;
    app.wait_detailed("a dead letter", |d| d["counts"]["dead"] == 1)
        .await;
    let (_tmp, store) = stored(app).await;
    assert_eq!(dash.count(), 3);
    let r = store.get("exhaust-0001").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.last_status_code),
        (Status::Dead, 3, Some(503))
    );
    assert_eq!(r.last_error.as_deref(), Some("maintenance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::redirect(302, "/elsewhere"));
    let app = app_for(&dash, &["--circuit-threshold", "100"]).await;
    post(&app, "redirect-0001", json!({"email": "a@example.com"})).await;
    let got = dash.wait_for_requests(3).await;
    assert!(
        got.iter()
            .all(|r| r.method == "POST" && r.path == "/api/ingest"),
        "only POSTs to the route, never a GET to the Location: {:?}",
        got.iter().map(|r| (&r.method, &r.path)).collect::<Vec<_>>()
    );
    dash.set_reply(Reply::ok());
    app.wait_detailed("the delivery", |d| d["counts"]["delivered"] == 1)
        .await;
    let (_tmp, store) = stored(app).await;
    assert!(dash.requests().iter().all(|r| r.path == "/api/ingest"));
    assert!(store.get("redirect-0001").unwrap().unwrap().attempts >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_delivery_finish_and_persists_its_outcome() {
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::ok().delay(std::time::Duration::from_millis(700)));
    let app = app_for(&dash, &["--shutdown-timeout", "10s"]).await;
    post(&app, "shutdown-0001", json!({"email": "a@example.com"})).await;
    dash.wait_for_requests(1).await;
    let (_tmp, store) = stored(app).await; // stops while the dashboard is still answering
    let r = store.get("shutdown-0001").unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Delivered, 1));
    assert!(store.counts().unwrap().balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_after_the_idempotency_window() {
    let dash = Dashboard::start().await;
    let app = app_for(
        &dash,
        &["--idempotency-window", "300ms", "--purge-interval", "100ms"],
    )
    .await;
    for i in 0..5 {
        post(
            &app,
            &format!("purge-{i:04}"),
            json!({"email": "a@example.com"}),
        )
        .await;
    }
    let d = app
        .wait_detailed("all purged", |d| d["counts"]["purged"] == 5)
        .await;
    assert_eq!(
        (
            d["counts"]["delivered"].clone(),
            d["counts"]["accepted"].clone()
        ),
        (json!(0), json!(5))
    );
    let (_tmp, store) = stored(app).await;
    assert!(store.get("purge-0000").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_payload_cannot_be_read_is_quarantined_and_the_rest_delivered() {
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        // Arrange two stored records, one with a payload that is not JSON.
        let app = harness::spawn_app_in(&dir, &[]).await;
        post(&app, "bad-payload-01", json!({"email": "a@example.com"})).await;
        post(&app, "good-payload-1", json!({"email": "b@example.com"})).await;
        app.stop().await;
        let store = open_when_free(&dir).await;
        store
            .update("bad-payload-01", |r| {
                let mut n = r.clone();
                n.payload = Some("{not json".into());
                outbox::store::Change::Put(n)
            })
            .unwrap();
        store.sync().unwrap();
    }
    let url = dash.url();
    let app = harness::spawn_app_in(&dir, &["--dashboard-url", &url, "--ingest-key", KEY]).await;
    let d = app
        .wait_detailed("one delivered, one quarantined", |d| {
            d["counts"]["delivered"] == 1 && d["counts"]["quarantined"] == 1
        })
        .await;
    assert_eq!(d["counts"]["pending"], 0);
    assert_eq!(
        dash.requests()
            .iter()
            .map(|r| r.trace_id())
            .collect::<Vec<_>>(),
        ["good-payload-1"]
    );
    app.stop().await;
}
