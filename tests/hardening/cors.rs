//! CORS: exact origins only, no CORS at all when none are configured, 403 for other origins.

use crate::harness::{spawn_app, spawn_app_raw, TestApp};
use serde_json::json;

const SITE: &str = "https://www.example.com";

async fn accepted(app: &TestApp) -> u64 {
    let (_, health) = app.get_json("/health/detailed").await;
    health["counts"]["accepted"]
        .as_u64()
        .expect("counts in health")
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/api/collect"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key,x-trace-id",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers_and_posts_pass() {
    let app = spawn_app(&[]).await;

    let pre = preflight(&app, SITE).await;
    assert!(header(&pre, "access-control-allow-origin").is_none());
    assert!(header(&pre, "access-control-allow-methods").is_none());
    let r = app
        .post_json(&json!({"email": "a@example.com"}), &[("origin", SITE)])
        .await;
    assert_eq!(r.status(), 202);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_eq!(accepted(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_allowed_origin_gets_a_full_preflight_and_can_read_the_receipt() {
    let app = spawn_app(&[
        "--cors-origins",
        "https://other.example.org, https://www.example.com",
    ])
    .await;

    let pre = preflight(&app, SITE).await;
    assert!(pre.status().is_success(), "preflight {}", pre.status());
    assert_eq!(header(&pre, "access-control-allow-origin"), Some(SITE));
    assert!(header(&pre, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let allowed = header(&pre, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["content-type", "idempotency-key", "x-trace-id"] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    assert_eq!(header(&pre, "access-control-max-age"), Some("7200"));

    let r = app
        .post_json(
            &json!({"email": "a@example.com"}),
            &[("origin", SITE), ("idempotency-key", "cors-test-0001")],
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(SITE));
    assert!(header(&r, "vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("origin"));
    assert_eq!(accepted(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn other_origins_including_near_misses_are_refused_with_403_and_nothing_is_stored() {
    let app = spawn_app(&["--cors-origins", SITE]).await;

    for origin in [
        "https://evil.example.net",
        "http://www.example.com",
        "https://www.example.com.evil.net",
        "https://www.example.com:8443",
        "https://WWW.EXAMPLE.COM",
        "null",
    ] {
        let pre = preflight(&app, origin).await;
        assert!(
            header(&pre, "access-control-allow-origin").is_none(),
            "{origin} preflight"
        );
        let r = app
            .post_json(&json!({"email": "a@example.com"}), &[("origin", origin)])
            .await;
        assert_eq!(r.status(), 403, "{origin}");
        assert!(header(&r, "access-control-allow-origin").is_none());
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "origin_not_allowed", "{origin}");
        assert!(body["message"].as_str().unwrap().contains("cors-origins"));
    }
    // Without Origin it is not a CORS request (curl, a server): it passes.
    let r = app.post_json(&json!({"email": "a@example.com"}), &[]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(accepted(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn with_cors_reject_off_other_origins_are_stored_without_cors_headers() {
    let app = spawn_app(&["--cors-origins", SITE, "--cors-reject", "false"]).await;

    let r = app
        .post_json(
            &json!({"email": "a@example.com"}),
            &[("origin", "https://evil.example.net")],
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_eq!(accepted(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limited_browser_can_read_the_429_and_its_retry_after() {
    let app = spawn_app_raw(&[
        "--cors-origins",
        SITE,
        "--rate-limit",
        "1/m",
        "--rate-burst",
        "1",
    ])
    .await;

    let body = json!({"email": "a@example.com"});
    assert_eq!(
        app.post_json(&body, &[("origin", SITE)]).await.status(),
        202
    );
    let r = app.post_json(&body, &[("origin", SITE)]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(SITE));
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    app.stop().await;
}
