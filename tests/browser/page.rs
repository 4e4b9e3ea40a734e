//! A real browser against the real service: headless Chromium loads the example page that
//! ships in `ops/site-example/` from another origin and submits it the three ways a site does
//! (fetch with JSON and an Idempotency-Key, a plain urlencoded form post, `navigator.sendBeacon`);
//! then a page from an origin that is not allowed tries to post and must not read the answer.
//!
//! CORS, preflights and beacons are browser behaviour that no HTTP client in a test reproduces,
//! so these need a browser (WebDriver in `support`; `refusals` covers the
//! page's answers to refusals and lost answers).

use crate::harness;
use crate::harness::spawn_app;
use crate::support::{browser_tools, serve_page, ChromeDriver, Session, PATIENCE};
use outbox::store::Store;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_submits_three_ways_and_other_origins_cannot_read_answers() {
    let Some(tools) = browser_tools().await else {
        return;
    };

    // Arrange: the page on one origin, the same page on a second origin, the service on a third.
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", site.local_addr().unwrap());
    let other_origin = format!("http://{}", elsewhere.local_addr().unwrap());
    let app = spawn_app(&["--cors-origins", &site_origin]).await;
    serve_page(site, &app.url("/api/collect"));
    serve_page(elsewhere, &app.url("/api/collect"));
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;

    // Act: run the scenario, then always end the browser session, even when it failed.
    let scenario = tokio::spawn(submit_from_both_origins(
        browser.clone(),
        site_origin,
        other_origin,
    ));
    let outcome = scenario.await;
    browser.quit().await;
    drop(driver);
    let sent = match outcome {
        Ok(sent) => sent,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    // Assert: the three submissions are stored, and nothing from the other origin is.
    wait_for_accepted(&app, 3).await;
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(health["counts"]["accepted"], 3, "{health}");
    let refused = metric_value(&app, "/api/collect", "403").await;
    assert_eq!(
        refused, 1,
        "the text/plain post from the other origin reached the service and was refused"
    );
    let tmp = app.stop().await;
    let store = Store::open(&tmp.as_ref().unwrap().path().join("data")).expect("store opens");
    for (via, trace_id) in [
        ("fetch", &sent.fetch),
        ("form", &sent.form),
        ("beacon", &sent.beacon),
    ] {
        let record = store
            .get(trace_id)
            .unwrap()
            .unwrap_or_else(|| panic!("the {via} submission {trace_id} is not stored"));
        let payload: Value = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload["via"], via, "{payload}");
        assert_eq!(payload["email"], format!("{via}@example.com"), "{payload}");
        assert_eq!(payload["message"], format!("Hello by {via}"), "{payload}");
        assert_eq!(record.enrichment.form_type, "contact");
        assert!(
            payload.get("website").is_none(),
            "the empty honeypot field is not sent on: {payload}"
        );
    }
    for trace_id in &sent.refused {
        assert!(store.get(trace_id).unwrap().is_none(), "{trace_id} stored");
    }
}

/// The trace IDs the page used.
struct Sent {
    fetch: String,
    form: String,
    beacon: String,
    /// Posts from the origin that is not allowed.
    refused: Vec<String>,
}

async fn submit_from_both_origins(browser: Session, site: String, other: String) -> Sent {
    browser.goto(&format!("{site}/")).await;

    let fetch = fill_and_click(&browser, "fetch", "#send-fetch", WAIT_FOR_STATUS).await;
    assert_eq!(fetch["result"], "ok", "{fetch}");
    let fetch_id = fetch["traceId"].as_str().unwrap().to_owned();
    assert!(
        fetch["text"].as_str().unwrap().contains(&fetch_id),
        "the page read the receipt of its fetch: {fetch}"
    );

    let form = fill_and_click(&browser, "form", "button[type=submit]", WAIT_FOR_STATUS).await;
    assert_eq!(form["result"], "ok", "{form}");
    assert!(
        form["text"]
            .as_str()
            .unwrap()
            .contains(form["traceId"].as_str().unwrap()),
        "the page read the receipt of its plain form post: {form}"
    );

    let beacon = fill_and_click(&browser, "beacon", "#send-beacon", NO_WAIT).await;
    assert_eq!(
        beacon["result"], "ok",
        "the browser queued the beacon: {beacon}"
    );

    // The same page served from an origin the service does not allow.
    browser.goto(&format!("{other}/")).await;
    let refused = ["elsewhere-json-0001", "elsewhere-text-0001"];
    let outcomes = browser.run(FETCH_FROM_ELSEWHERE, json!(refused)).await;
    assert_eq!(
        outcomes,
        json!(["rejected TypeError", "rejected TypeError"]),
        "fetch from an origin that is not allowed must reject \
         (JSON: the preflight is refused; text/plain: 403 without CORS headers)"
    );

    let id = |v: &Value| v["traceId"].as_str().unwrap().to_owned();
    Sent {
        fetch: fetch_id,
        form: id(&form),
        beacon: id(&beacon),
        refused: refused.map(String::from).to_vec(),
    }
}

/// Fills the form as a person would and clicks the `selector` button; the wait script appended
/// to it calls `finish()` once the page has answered. Answers the trace ID the form carried and
/// the page's status line.
const FILL_AND_CLICK: &str = r#"
const [[via, selector], done] = arguments;
const form = document.getElementById("contact");
const status = document.getElementById("status");
form.elements.email.value = via + "@example.com";
form.elements.message.value = "Hello by " + via;
const traceId = form.elements.trace_id.value;
const finish = () => done({ traceId, result: status.dataset.result, text: status.textContent });
"#;

/// fetch and the plain form (sent by the page's script when JavaScript is on): the page shows
/// "ok" or "error" in its status line once the answer is in.
const WAIT_FOR_STATUS: &str = r#"
new MutationObserver((_, observer) => {
  if (["ok", "error"].includes(status.dataset.result)) { observer.disconnect(); finish(); }
}).observe(status, { attributes: true, childList: true, subtree: true });
document.querySelector(selector).click();
"#;

/// sendBeacon: queued synchronously; the service is asked later whether it arrived.
const NO_WAIT: &str = r#"
document.querySelector(selector).click();
finish();
"#;

/// Two posts from the wrong origin: one that needs a preflight, one that does not.
const FETCH_FROM_ELSEWHERE: &str = r#"
const [[jsonKey, textKey], done] = arguments;
const endpoint = document.getElementById("contact").action;
const outcome = (p) => p.then((r) => `resolved ${r.status}`, (e) => `rejected ${e.name}`);
Promise.all([
  outcome(fetch(endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": jsonKey },
    body: JSON.stringify({ email: "x@example.com", message: "from elsewhere" }),
  })),
  outcome(fetch(endpoint, {
    method: "POST",
    headers: { "Content-Type": "text/plain" },
    body: JSON.stringify({ email: "x@example.com", message: "from elsewhere", trace_id: textKey }),
  })),
]).then(done);
"#;

/// Waits until the service counts `n` accepted submissions (the beacon has no answer to wait on).
async fn wait_for_accepted(app: &harness::TestApp, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, health) = app.get_json("/health/detailed").await;
        if health["counts"]["accepted"].as_u64() >= Some(n) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `outbox_http_requests_total` for one route and status, from `/metrics`.
async fn metric_value(app: &harness::TestApp, route: &str, status: &str) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("outbox_http_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn fill_and_click(browser: &Session, via: &str, selector: &str, wait: &str) -> Value {
    browser
        .run(&format!("{FILL_AND_CLICK}{wait}"), json!([via, selector]))
        .await
}
