//! The example page when outbox refuses a post, or its answer is lost: a real Chromium, the
//! page from `ops/site-example/`, the real service behind a scripted proxy on its own origin.
//!
//! The proxy forwards each request to outbox unless the test queued something else for the
//! next POST: a canned refusal (outbox's JSON error, with the CORS headers a browser needs,
//! as nginx in front of outbox would pass it), a proxy's HTML error page, or "store, then lose
//! the answer" (forward to outbox, then close the connection without a reply: the post is
//! stored while the page sees a network error). For each, the page must say what happened,
//! keep the visitor's text after a refusal, and never turn a resend into a 409. And with
//! JavaScript off, the plain post still works: it is stored and its receipt shows in the frame.

use crate::harness::{spawn_app, TestApp};
use crate::proxy::{refusal, start_proxy, Act, Script};
use crate::support::{browser_tools, serve_page, ChromeDriver, Session};
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_form_and_show_the_error_and_a_resend_after_a_lost_answer_succeeds() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let site = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", site.local_addr().unwrap());
    let app = spawn_app(&["--cors-origins", &site_origin]).await;
    let script = Script::default();
    let proxy = start_proxy(app.addr, script.clone()).await;
    serve_page(site, &format!("http://{proxy}/api/collect"));
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;

    let scenario = tokio::spawn(scenarios(browser.clone(), site_origin, script, app));
    let outcome = scenario.await;
    browser.quit().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenarios(browser: Session, site: String, script: Script, app: TestApp) {
    browser.goto(&format!("{site}/")).await;
    let queue = |acts: Vec<Act>| script.lock().unwrap().extend(acts);

    // A refusal is answered at once (400) or after the page's own retries (429, 503: the
    // page tries three times); each leaves the form filled and shows outbox's message.
    let cases = [
        (
            vec![refusal(400, "invalid_json", "the body is not valid JSON")],
            "the body is not valid JSON",
        ),
        (
            vec![refusal(429, "rate_limited", "too many posts from your address"); 3],
            "too many posts",
        ),
        (
            vec![refusal(503, "outbox_full", "the outbox is full; retry later"); 3],
            "the outbox is full",
        ),
        (
            vec![
                Act::Answer(
                    502,
                    "text/html",
                    "<html><body>502 Bad Gateway</body></html>".into()
                );
                3
            ],
            "The server answered 502.",
        ),
    ];
    for (button, via) in [("button[type=submit]", "form"), ("#send-fetch", "fetch")] {
        for (acts, shown) in &cases {
            queue(acts.clone());
            let got = send(&browser, button, Some(via)).await;
            assert_eq!(got["result"], "error", "{via}, {shown}: {got}");
            let text = got["text"].as_str().unwrap();
            assert!(
                text.contains(shown),
                "{via}: the page shows the error: {got}"
            );
            assert!(!text.contains("undefined"), "{via}: {got}");
            assert_eq!(
                got["email"],
                format!("{via}@example.com"),
                "{via}: form kept: {got}"
            );
            assert_eq!(
                got["message"],
                format!("Hello by {via}"),
                "{via}: form kept: {got}"
            );
            assert!(
                script.lock().unwrap().is_empty(),
                "every scripted answer was used"
            );
        }
    }
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(
        health["counts"]["accepted"], 0,
        "no refusal stored anything"
    );

    // Stored, but the answer is lost: the page's own retry gets the original receipt (200).
    let (stored_before, dup_before) = (
        status_count(&app, "202").await,
        status_count(&app, "200").await,
    );
    queue(vec![Act::ForwardThenDrop]);
    let got = send(&browser, "button[type=submit]", Some("form")).await;
    assert_eq!(got["result"], "ok", "{got}");
    assert!(
        got["text"].as_str().unwrap().contains("(reference "),
        "{got}"
    );
    assert_eq!(
        got["email"], "",
        "the form starts over after a success: {got}"
    );
    assert_eq!(
        status_count(&app, "202").await,
        stored_before + 1,
        "stored once"
    );
    assert_eq!(
        status_count(&app, "200").await,
        dup_before + 1,
        "the retry got the receipt"
    );

    // Stored, and every answer lost: the page says so and keeps the text. Sent again as it
    // is, it gets the original receipt; edited, it is a new submission with a new trace ID.
    for (edit, resend_status) in [(false, "200"), (true, "202")] {
        queue(vec![Act::ForwardThenDrop; 3]);
        let lost = send(&browser, "#send-fetch", Some("fetch")).await;
        assert_eq!(lost["result"], "error", "{lost}");
        assert!(
            lost["text"].as_str().unwrap().contains("Could not reach"),
            "{lost}"
        );
        assert_eq!(lost["message"], "Hello by fetch", "form kept: {lost}");
        let before = status_count(&app, resend_status).await;
        if edit {
            browser.run(EDIT_MESSAGE, json!(null)).await;
        }
        let again = send(&browser, "#send-fetch", None).await;
        assert_eq!(again["result"], "ok", "edited: {edit}: {again}");
        let first_id = lost["idAfter"].as_str().unwrap();
        let reference = again["text"].as_str().unwrap();
        assert_eq!(
            reference.contains(first_id),
            !edit,
            "an unchanged resend keeps the trace ID, an edited one gets a new one: {again}"
        );
        assert_eq!(
            status_count(&app, resend_status).await,
            before + 1,
            "edited: {edit}"
        );
    }
    assert_eq!(status_count(&app, "409").await, 0, "no resend met a 409");

    // A 409 all the same (the ID was used elsewhere, say in another tab): the page takes a
    // new trace ID and sends once more.
    queue(vec![refusal(
        409,
        "idempotency_conflict",
        "trace ID used for a different payload",
    )]);
    let got = send(&browser, "button[type=submit]", Some("form")).await;
    assert_eq!(got["result"], "ok", "{got}");
    let used = got["traceId"].as_str().unwrap();
    assert!(
        !got["text"].as_str().unwrap().contains(used),
        "a new trace ID: {got}"
    );
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(
        health["counts"]["accepted"], 5,
        "the lost form post, the two lost fetch posts, the edited resend, the post after the 409: {health}"
    );
    app.stop().await;
}

/// Fills the form (when `via` is given) and clicks `selector`; once the status line says
/// "ok" or "error", answers it with the form's trace ID before and after (after an error,
/// the one the page sent: it takes a new one when the content changed) and what the form
/// then holds.
const SEND: &str = r#"
const [[selector, via], done] = arguments;
const form = document.getElementById("contact");
const status = document.getElementById("status");
if (via) {
  form.elements.email.value = via + "@example.com";
  form.elements.message.value = "Hello by " + via;
}
status.dataset.result = "";
const traceId = form.elements.trace_id.value;
new MutationObserver((_, observer) => {
  if (["ok", "error"].includes(status.dataset.result)) {
    observer.disconnect();
    done({ traceId, idAfter: form.elements.trace_id.value,
           result: status.dataset.result, text: status.textContent,
           email: form.elements.email.value, message: form.elements.message.value });
  }
}).observe(status, { attributes: true, childList: true, subtree: true });
document.querySelector(selector).click();
"#;

const EDIT_MESSAGE: &str = r#"
const done = arguments[arguments.length - 1];
document.getElementById("contact").elements.message.value += " (edited)";
done(null);
"#;

async fn send(browser: &Session, selector: &str, via: Option<&str>) -> Value {
    browser.run(SEND, json!([selector, via])).await
}

/// `outbox_http_requests_total` for `/api/collect` and one status.
async fn status_count(app: &TestApp, status: &str) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap();
    let series =
        format!("outbox_http_requests_total{{route=\"/api/collect\",status=\"{status}\"}} ");
    text.text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_plain_post_is_stored_and_its_answer_shows_in_the_frame() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let site = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", site.local_addr().unwrap());
    let app = spawn_app(&["--cors-origins", &site_origin]).await;
    serve_page(site, &app.url("/api/collect"));
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session_with_javascript(&tools, false).await;

    let scenario = tokio::spawn(post_without_javascript(browser.clone(), site_origin));
    let outcome = scenario.await;
    browser.quit().await;
    drop(driver);
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    let receipt: Value = serde_json::from_str(&answer).expect("the frame shows JSON");
    assert_eq!(receipt["status"], "accepted", "{answer}");
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(health["counts"]["accepted"], 1, "{health}");
    let tmp = app.stop().await;
    let store = outbox::store::Store::open(&tmp.as_ref().unwrap().path().join("data")).unwrap();
    let id = receipt["trace_id"].as_str().unwrap();
    let record = store
        .get(id)
        .unwrap()
        .expect("the receipt's trace ID is stored");
    let payload: Value = serde_json::from_str(record.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["via"], "form", "{payload}");
    assert_eq!(payload["message"], "Hello without scripts", "{payload}");
}

/// Checks the page's hint, fills and submits the form as the browser does on its own, and
/// answers the text outbox's answer left in the frame.
async fn post_without_javascript(browser: Session, site: String) -> String {
    browser.goto(&format!("{site}/")).await;
    let page = browser.run(NO_SCRIPT_FILL_AND_SUBMIT, json!(null)).await;
    assert_eq!(page["scriptRan"], false, "the page's script is off: {page}");
    assert!(
        page["text"].as_str().unwrap().contains("JavaScript is off"),
        "the <noscript> hint shows: {page}"
    );
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    loop {
        browser.enter_frame(0).await;
        let text = browser.run(FRAME_TEXT, json!(null)).await;
        let text = text.as_str().unwrap_or("").to_owned();
        if !text.is_empty() {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer in the frame"
        );
        browser.goto_parent().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

const NO_SCRIPT_FILL_AND_SUBMIT: &str = r#"
const done = arguments[arguments.length - 1];
const form = document.getElementById("contact");
form.elements.email.value = "nojs@example.com";
form.elements.message.value = "Hello without scripts";
const scriptRan = form.elements.trace_id.value !== "";
const text = document.body.innerText;
form.querySelector("button[type=submit]").click();
done({ scriptRan, text });
"#;

const FRAME_TEXT: &str = r#"
const done = arguments[arguments.length - 1];
done(document.body ? document.body.innerText : "");
"#;
