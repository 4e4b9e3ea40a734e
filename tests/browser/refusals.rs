//! outbox.js when outbox refuses a post, or answers "later", or its answer is lost: a real
//! Chromium, the page from `ops/site-example/`, the real binary behind a scripted proxy on
//! its own origin (`proxy`), which forwards each request unless the test queued a canned
//! answer or "store, then lose the answer" for the next POST.
//!
//! Refusals (400, 413) are not sent again and leave the text in the form with outbox's reason;
//! a 503 waits out its Retry-After; a post stored while its answer was lost is sent again and
//! gets the original receipt (one record); an unchanged resend keeps its trace ID and an edited
//! one gets a new one. And with JavaScript off, the plain post still works.

use crate::harness::spawn_app;
use crate::proxy::{refusal, Act};
use crate::support::{browser_tools, serve_page, ChromeDriver, Session};
use crate::visitor::{last_event, last_id, payload, Stage};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_not_sent_again_and_keep_the_text_and_a_503_waits_for_its_retry_after() {
    let Some(stage) = Stage::set(&["--max-body", "2048"], None).await else {
        return;
    };
    let (bad, large, later) = stage
        .play(|v, page, p| async move {
            v.0.goto(&page).await;
            v.record().await;
            assert!(
                p.posts().is_empty(),
                "a page load with nothing waiting sends nothing"
            );
            // 400 (canned at the proxy) and 413 (outbox's own: the body is over --max-body).
            p.queue([refusal(
                400,
                "invalid_json",
                "the body is not valid JSON",
                None,
            )]);
            v.submit("bad@example.com", "Refused as bad", 1).await;
            let refused = v.wait_for("refused", 1).await;
            let event = last_event(&refused, "refused");
            assert_eq!(
                (event["status"].as_u64(), event["error"].as_str()),
                (Some(400), Some("invalid_json"))
            );
            assert_eq!(
                refused["message"], "Refused as bad",
                "the text stays: {refused}"
            );
            assert!(refused["classes"]
                .as_str()
                .unwrap()
                .contains("outbox-refused"));
            assert!(
                refused["status"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("the body is not valid JSON"),
                "the page tells why: {refused}"
            );
            let bad = last_id(&refused, "refused");

            let long = "x".repeat(3000);
            v.submit("large@example.com", &long, 1).await;
            let refused = v.wait_for("refused", 2).await;
            let event = last_event(&refused, "refused");
            assert_eq!(
                (event["status"].as_u64(), event["error"].as_str()),
                (Some(413), Some("body_too_large"))
            );
            assert_eq!(refused["message"], long.as_str(), "the text stays");
            let large = last_id(&refused, "refused");
            assert!(v.waiting().await.is_empty(), "a refusal is not kept");

            // A 503 with Retry-After: 3 s, then the copy goes again (outbox stores it).
            p.queue([refusal(503, "outbox_full", "the outbox is full", Some(3))]);
            v.submit("later@example.com", "Sent after the wait", 1)
                .await;
            let queued = v.wait_for("queued", 1).await;
            assert_eq!(last_event(&queued, "queued")["status"], 503, "{queued}");
            let sent = v.wait_for("sent", 1).await;
            let later = last_id(&sent, "sent");
            assert_eq!(later, last_id(&queued, "queued"), "the same trace ID");
            assert_eq!(
                last_event(&sent, "retrying")["traceId"],
                later.as_str(),
                "{sent}"
            );
            let refusals = sent["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "retrying");
            assert_eq!(refusals.count(), 1, "only the 503 was sent again: {sent}");
            (bad, large, later)
        })
        .await;

    assert_eq!(stage.proxy.posts_of(&bad).len(), 1, "400: sent once");
    assert_eq!(stage.proxy.posts_of(&large).len(), 1, "413: sent once");
    let posts = stage.proxy.posts_of(&later);
    assert_eq!(posts.len(), 2, "{posts:?}");
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_secs(3),
        "Retry-After: 3 honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(6), "and not much longer: {gap:?}");
    assert_eq!(stage.outbox.accepted().await, 1);
    let records = stage.outbox.records().await;
    assert_eq!(records.len(), 1, "only the 503's submission is stored");
    assert_eq!(records[0].trace_id, later);
    assert_eq!(payload(&records[0])["message"], "Sent after the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_stored_once_and_a_resend_keeps_its_trace_id_unless_the_text_was_edited() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let (lost, kept, edited, replaced) = stage
        .play(|v, page, p| async move {
            v.0.goto(&page).await;
            // Stored, but the answer is lost: sent again, outbox answers 200 with the receipt.
            p.queue([Act::ForwardThenDrop]);
            v.submit("lost@example.com", "Answer lost", 1).await;
            let sent = v.wait_for("sent", 1).await;
            let lost = last_id(&sent, "sent");
            assert_eq!(
                last_event(&sent, "sent")["status"],
                200,
                "a duplicate's receipt: {sent}"
            );
            assert_eq!(last_id(&sent, "queued"), lost);

            // A failure, then the visitor presses Send again without editing: the same trace ID.
            let later = || refusal(503, "outbox_full", "retry later", Some(30));
            p.queue([later()]);
            v.submit("same@example.com", "Unchanged", 1).await;
            let queued = v.wait_for("queued", 2).await;
            let kept = last_id(&queued, "queued");
            v.press_again().await;
            let sent = v.wait_for("sent", 2).await;
            assert_eq!(
                last_id(&sent, "sent"),
                kept,
                "an unchanged resend keeps its trace ID"
            );

            // A failure, then the visitor edits the text and presses Send: a new trace ID, and the
            // copy of the earlier text is not sent any more.
            p.queue([later()]);
            v.submit("edit@example.com", "Before the edit", 1).await;
            let queued = v.wait_for("queued", 3).await;
            let replaced = last_id(&queued, "queued");
            v.edit_message(" (edited)").await;
            v.press_again().await;
            let sent = v.wait_for("sent", 3).await;
            let edited = last_id(&sent, "sent");
            assert_ne!(edited, replaced, "an edited form gets a new trace ID");
            assert!(v.waiting().await.is_empty(), "nothing left waiting");
            (lost, kept, edited, replaced)
        })
        .await;

    assert_eq!(
        stage.proxy.posts_of(&lost).len(),
        2,
        "sent again after the lost answer"
    );
    assert_eq!(
        stage.proxy.posts_of(&replaced).len(),
        1,
        "the replaced copy went once"
    );
    assert_eq!(stage.outbox.accepted().await, 3);
    let records = stage.outbox.records().await;
    let ids: Vec<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    for id in [&lost, &kept, &edited] {
        assert!(ids.contains(&id.as_str()), "{id} stored: {ids:?}");
    }
    assert_eq!(records.len(), 3, "{ids:?}");
    let edited = records.iter().find(|r| r.trace_id == edited).unwrap();
    assert_eq!(payload(edited)["message"], "Before the edit (edited)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_plain_post_is_stored_and_its_answer_shows_in_the_frame() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let site = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", site.local_addr().unwrap());
    let app = spawn_app(&["--cors-origins", &site_origin]).await;
    serve_page(site, &app.base);
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
const scriptRan = window.outbox !== undefined;
const text = document.body.innerText;
form.querySelector("button[type=submit]").click();
done({ scriptRan, text });
"#;

const FRAME_TEXT: &str = r#"
const done = arguments[arguments.length - 1];
done(document.body ? document.body.innerText : "");
"#;
