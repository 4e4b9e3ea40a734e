//! Rate limits, security headers, slow clients and the connection bound, over real TCP.

use crate::harness::{
    raw_exchange, settings_from_args, spawn_app, spawn_app_raw, status_of, TestApp,
};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn post_as(app: &TestApp, xff: Option<&str>) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
    app.post_json(&json!({"email": "a@example.com"}), &headers)
        .await
}

async fn accepted(app: &TestApp) -> u64 {
    let (_, health) = app.get_json("/health/detailed").await;
    health["counts"]["accepted"]
        .as_u64()
        .expect("counts in health")
}

#[test]
fn the_default_limit_is_ten_per_second_with_a_burst_of_twenty() {
    let s = settings_from_args(&[]);
    assert_eq!(s.limits.rate_limit, Some((10, Duration::from_secs(1))));
    assert_eq!(s.limits.rate_burst, 20);
    assert_eq!(s.limits.global_rate_limit, None);
}

#[tokio::test]
async fn a_client_over_its_burst_gets_429_with_retry_after_and_health_stays_exempt() {
    let app = spawn_app_raw(&["--rate-limit", "1/m", "--rate-burst", "3"]).await;

    for i in 0..3 {
        assert_eq!(post_as(&app, None).await.status(), 202, "post {i}");
    }
    let r = post_as(&app, None).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].is_string());

    for path in ["/health", "/health/ready", "/health/detailed", "/metrics"] {
        for _ in 0..10 {
            let r = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path} must not be rate limited");
        }
    }
    assert_eq!(accepted(&app).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_apart_by_forwarded_address() {
    // The test client connects from loopback, which is a trusted proxy by default.
    let app = spawn_app_raw(&["--rate-limit", "1/m", "--rate-burst", "1"]).await;

    assert_eq!(post_as(&app, Some("198.51.100.1")).await.status(), 202);
    assert_eq!(post_as(&app, Some("198.51.100.1")).await.status(), 429);
    assert_eq!(post_as(&app, Some("198.51.100.2")).await.status(), 202);
    // The rightmost untrusted hop is the client: a forged leftmost entry changes nothing.
    assert_eq!(
        post_as(&app, Some("203.0.113.50, 198.51.100.2"))
            .await
            .status(),
        429
    );
    app.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_cannot_dodge_the_limit() {
    let app = spawn_app_raw(&[
        "--rate-limit",
        "1/m",
        "--rate-burst",
        "1",
        "--trusted-proxies",
        "",
    ])
    .await;

    assert_eq!(post_as(&app, Some("198.51.100.1")).await.status(), 202);
    assert_eq!(post_as(&app, Some("198.51.100.2")).await.status(), 429);
    assert_eq!(post_as(&app, None).await.status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn the_global_limit_bounds_all_clients_together() {
    let app = spawn_app_raw(&["--rate-limit", "off", "--global-rate-limit", "2/m"]).await;

    assert_eq!(post_as(&app, Some("198.51.100.1")).await.status(), 202);
    assert_eq!(post_as(&app, Some("198.51.100.2")).await.status(), 202);
    let r = post_as(&app, Some("198.51.100.3")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app_raw(&["--rate-limit", "1/m", "--rate-burst", "1"]).await;

    let mut responses = vec![
        app.client.get(app.url("/health")).send().await.unwrap(),
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        app.client
            .get(app.url("/no/such/path"))
            .send()
            .await
            .unwrap(),
        post_as(&app, None).await,
        post_as(&app, None).await,
    ];
    responses.push(app.post_raw("text/html", b"<b>x</b>".to_vec(), &[]).await);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 404, 202, 429, 429]);
    for r in &responses {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.status());
        assert_eq!(h["referrer-policy"], "no-referrer", "{}", r.status());
        assert_eq!(h["cache-control"], "no-store", "{}", r.status());
    }
    app.stop().await;
}

#[tokio::test]
async fn headers_that_trickle_in_are_cut_off() {
    let app = spawn_app(&["--body-timeout", "1s"]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /api/collect HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    // Keep sending a header line every 100 ms, for up to 20 s, until the server hangs up.
    let mut cut = false;
    let mut buf = [0u8; 512];
    for i in 0..200 {
        if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    matches!(status_of(&text), 408 | 400),
                    "unexpected answer {text}"
                );
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "a connection trickling headers for 20 s was never closed"
    );
    assert_eq!(app.get_json("/health").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let app = spawn_app(&["--body-timeout", "1s"]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was kept open: {read:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_nothing_is_stored() {
    let app = spawn_app(&["--body-timeout", "1s"]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /api/collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(text.contains("body_timeout"));
    assert_eq!(accepted(&app).await, 0);
    app.stop().await;
}

/// Opens a keep-alive connection and completes one request on it, so it is surely accepted.
async fn held_connection(app: &TestApp) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    s
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let app = spawn_app(&["--max-connections", "2"]).await;
    let first = held_connection(&app).await;
    let _second = held_connection(&app).await;

    let waiting = tokio::spawn(raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    // While two connections are open the third is not served (a slow machine only makes
    // this wait longer, never shorter).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while two were open"
    );

    drop(first);
    let (status, _) = waiting.await.unwrap();
    assert_eq!(status, 200, "served once a slot was free");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_completes_with_idle_keep_alive_connections_open() {
    let app = spawn_app(&[]).await;
    let _idle = held_connection(&app).await;
    let _idle2 = held_connection(&app).await;
    // stop() waits for the app task and asserts it ended cleanly.
    tokio::time::timeout(Duration::from_secs(60), app.stop())
        .await
        .expect("shutdown finished");
}
