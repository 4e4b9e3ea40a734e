//! A real browser against the real service: headless Chromium loads the example page that
//! ships in `ops/site-example/` from another origin, with outbox.js from outbox itself (its
//! integrity value checked by the browser), and sends the form through the script (JSON, an
//! Idempotency-Key, so a CORS preflight first); then a page from an origin that is not allowed
//! tries to post and must not read the answer; and the page with the script loaded as an ES
//! module sends too.
//!
//! CORS, preflights and Subresource Integrity are browser behaviour that no HTTP client in a
//! test reproduces, so these need a browser (WebDriver in `support`).

use crate::harness::spawn_app;
use crate::support::{browser_tools, serve_page, serve_page_as_module, ChromeDriver, Session};
use crate::visitor::{last_event, last_id, site, with_browser, Visitor};
use outbox::store::Store;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_sends_through_the_script_and_other_origins_cannot_read_answers(
) {
    let Some(tools) = browser_tools().await else {
        return;
    };

    // Arrange: the page on one origin, the same page on a second origin, the service on a third.
    let (elsewhere, other_origin) = site().await;
    let (module_site, module_origin) = site().await;
    let (site, site_origin) = site().await;
    let allowed = format!("{site_origin},{module_origin}");
    let app = spawn_app(&["--cors-origins", &allowed]).await;
    serve_page(site, &app.base);
    serve_page(elsewhere, &app.base);
    serve_page_as_module(module_site, &app.base);
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;

    // Act
    let scenario = submit_from_both_origins(browser.clone(), site_origin, other_origin);
    let module = Visitor(browser.clone());
    let as_module = async move {
        let sent = scenario.await;
        // The same page with the script loaded as an ES module.
        module.0.goto(&format!("{module_origin}/")).await;
        module
            .submit("module@example.com", "Sent by the module", 1)
            .await;
        let got = module.wait_for("sent", 1).await;
        (sent, last_id(&got, "sent"))
    };
    let ((sent, refused), by_module) = with_browser(browser, as_module).await;

    // Assert: the submissions are stored, and nothing from the other origin is.
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(health["counts"]["accepted"], 2, "{health}");
    let tmp = app.stop().await;
    let store = Store::open(&tmp.as_ref().unwrap().path().join("data")).expect("store opens");
    let record = store
        .get(&sent)
        .unwrap()
        .expect("the page's submission is stored");
    let payload: Value = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["email"], "page@example.com", "{payload}");
    assert_eq!(payload["message"], "Hello from the page", "{payload}");
    assert_eq!(
        payload["via"], "form",
        "the pressed button is sent: {payload}"
    );
    assert_eq!(
        payload["trace_id"],
        sent.as_str(),
        "in the body too, as a beacon sends it"
    );
    assert_eq!(record.enrichment.form_type, "contact");
    assert!(
        payload.get("website").is_none(),
        "the empty honeypot field is not sent on: {payload}"
    );
    let record = store
        .get(&by_module)
        .unwrap()
        .expect("the module's submission is stored");
    let payload: Value = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["message"], "Sent by the module", "{payload}");
    for trace_id in &refused {
        assert!(store.get(trace_id).unwrap().is_none(), "{trace_id} stored");
    }
}

async fn submit_from_both_origins(
    browser: Session,
    site: String,
    other: String,
) -> (String, Vec<String>) {
    let v = Visitor(browser.clone());
    browser.goto(&format!("{site}/")).await;
    v.submit("page@example.com", "Hello from the page", 1).await;
    let sent = v.wait_for("sent", 1).await;
    let event = last_event(&sent, "sent");
    assert_eq!(event["status"], 202, "{sent}");
    let id = last_id(&sent, "sent");
    assert_eq!(
        event["receipt"]["trace_id"],
        id.as_str(),
        "the page read the receipt"
    );
    assert!(
        sent["status"]["text"].as_str().unwrap().contains(&id),
        "the page shows the reference: {sent}"
    );
    assert_eq!(sent["email"], "", "the form starts over: {sent}");
    assert!(sent["classes"].as_str().unwrap().contains("outbox-sent"));

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
    (id, refused.map(String::from).to_vec())
}

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
