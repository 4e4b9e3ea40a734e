//! `/metrics`, the honeypot and `--admin-listen`, through the real app.
//!
//! The metrics recorder is process-wide, so tests that read values take turns and compare
//! before and after instead of expecting absolute counts.

use crate::harness::metrics::{scrape, value};
use crate::harness::{spawn_app, spawn_app_raw, turn, TestApp};
use outbox::telemetry::metrics::{names_in, METRICS};
use serde_json::json;

async fn post(app: &TestApp, body: serde_json::Value) -> reqwest::Response {
    app.post_json(&body, &[]).await
}

#[tokio::test]
async fn metrics_report_requests_latency_commits_and_outbox_depth() {
    let _turn = turn().await;
    let app = spawn_app(&[]).await;
    let before = scrape(&app.base).await;
    let series = r#"outbox_http_requests_total{route="/api/collect",status="202"}"#;
    let refused = app.post_raw("application/json", b"[1]".to_vec(), &[]).await;
    assert_eq!(refused.status(), 400);

    for i in 0..3 {
        assert_eq!(
            post(&app, json!({"email": format!("{i}@example.com")}))
                .await
                .status(),
            202
        );
    }
    let text = scrape(&app.base).await;

    assert_eq!(value(&text, series) - value(&before, series), 3.0);
    assert_eq!(
        value(&text, r#"outbox_outbox_records{status="pending"}"#),
        3.0
    );
    assert_eq!(
        value(&text, r#"outbox_outbox_records{status="delivered"}"#),
        0.0
    );
    assert_eq!(value(&text, "outbox_store_syncing"), 1.0);
    assert!(value(&text, "outbox_data_dir_bytes") > 0.0);
    assert!(value(&text, "outbox_free_disk_bytes") > 0.0);
    assert!(text.contains("outbox_oldest_pending_age_seconds "));
    for histogram in [
        "outbox_intake_seconds",
        "outbox_commit_seconds",
        "outbox_commit_batch_size",
    ] {
        assert!(
            text.contains(&format!("{histogram}_bucket{{le=")),
            "{histogram} has buckets"
        );
        assert!(
            value(&text, &format!("{histogram}_count")) >= 3.0
                || histogram == "outbox_commit_batch_size"
        );
    }
    assert!(text.contains("# HELP outbox_intake_seconds"));
    // The three stored posts are timed; the refused one is not.
    let timed = "outbox_intake_seconds_count";
    assert_eq!(value(&text, timed) - value(&before, timed), 3.0);
    app.stop().await;
}

#[tokio::test]
async fn only_declared_names_are_exported_and_paths_do_not_become_labels() {
    let _turn = turn().await;
    let app = spawn_app(&[]).await;
    post(&app, json!({"email": "a@example.com"})).await;
    for p in [
        "/health-x1",
        "/health/../etc",
        "/api/collect/zz",
        "/metricsX",
    ] {
        app.client.get(app.url(p)).send().await.unwrap();
    }
    let text = scrape(&app.base).await;

    let declared: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
    for name in names_in(&text).iter().filter(|n| n.starts_with("outbox_")) {
        assert!(
            declared.contains(&name.as_str()),
            "{name} is exported but not in METRICS"
        );
    }
    for p in ["health-x1", "etc", "zz", "metricsX"] {
        assert!(!text.contains(p), "path {p} became a label");
    }
    assert!(text.contains(r#"outbox_http_requests_total{route="other",status="404"}"#));
    app.stop().await;
}

#[tokio::test]
async fn a_filled_honeypot_is_answered_like_a_post_but_not_stored_and_is_counted() {
    let _turn = turn().await;
    let app = spawn_app(&["--honeypot-field", "website"]).await;
    let before = value(&scrape(&app.base).await, "outbox_honeypot_total");

    let bot = post(
        &app,
        json!({"email": "bot@example.com", "website": "http://spam.example"}),
    )
    .await;
    assert_eq!(bot.status(), 202);
    let bot: serde_json::Value = bot.json().await.unwrap();
    let human = post(&app, json!({"email": "jo@example.com", "website": ""})).await;
    assert_eq!(human.status(), 202);
    let human: serde_json::Value = human.json().await.unwrap();

    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&bot),
        keys(&human),
        "a bot cannot tell the answers apart"
    );
    assert_eq!(bot["status"], "accepted");
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(
        health["counts"]["accepted"], 1,
        "only the human's post is stored"
    );
    assert_eq!(
        value(&scrape(&app.base).await, "outbox_honeypot_total") - before,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn refusals_are_counted_by_scope_and_reason() {
    let _turn = turn().await;
    let app = spawn_app_raw(&[
        "--rate-limit",
        "1/m",
        "--rate-burst",
        "2",
        "--max-pending",
        "1",
    ])
    .await;
    let limited = r#"outbox_rate_limited_total{scope="client"}"#;
    let full = r#"outbox_intake_refused_total{reason="outbox_full"}"#;
    let before = scrape(&app.base).await;

    assert_eq!(post(&app, json!({"n": "1"})).await.status(), 202);
    assert_eq!(post(&app, json!({"n": "2"})).await.status(), 503);
    assert_eq!(post(&app, json!({"n": "3"})).await.status(), 429);
    let text = scrape(&app.base).await;

    assert_eq!(value(&text, limited) - value(&before, limited), 1.0);
    assert_eq!(value(&text, full) - value(&before, full), 1.0);
    assert!(text.contains(r#"outbox_intake_refused_total{reason="disk_low"}"#));
    app.stop().await;
}

#[tokio::test]
async fn admin_listen_moves_health_and_metrics_off_the_public_address() {
    // It posts too: the other tests here count posts in the process-wide metrics.
    let _turn = turn().await;
    let app = spawn_app(&["--admin-listen", "127.0.0.1:0"]).await;
    let admin = format!("http://{}", app.admin_addr.expect("admin address bound"));

    for path in ["/metrics", "/health", "/health/ready", "/health/detailed"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            404,
            "public {path}"
        );
        let r = app
            .client
            .get(format!("{admin}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "admin {path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    assert_eq!(
        post(&app, json!({"email": "a@example.com"})).await.status(),
        202
    );
    let r = app
        .client
        .post(format!("{admin}/api/collect"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "intake is not served on the admin address");
    app.stop().await;
}
