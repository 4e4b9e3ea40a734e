//! outbox.js keeps what it could not send: a real Chromium on the example page, the real
//! `outbox` binary delivering to a stub dashboard, and for some a scripted proxy between them.
//! Each test ends with outbox's store read back, not only the page.
//!
//! - offline at submit (Chromium's own network emulation), reloaded while offline, back
//!   online: stored once, delivered once;
//! - a copy left waiting (a 503) is sent by the next page load;
//! - outbox down (connection refused), then started: accepted once;
//! - storage blocked: the direct send works, and a failed one is reported as not kept;
//! - no IndexedDB (hidden before the page's first script): the copy is kept in localStorage
//!   and sent on the next load.

use crate::proxy::refusal;
use crate::support::{browser_tools, serve_page_with_script_from, ChromeDriver};
use crate::visitor::{last_event, last_id, payload, site, with_browser, Outbox, Stage, Visitor};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_at_submit_then_reloaded_offline_is_stored_and_delivered_once_when_back_online() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let id = stage
        .play(|v, page, _| async move {
            v.0.goto(&page).await;
            v.0.set_offline(true).await;
            v.submit("train@example.com", "Sent from a train", 1).await;
            let queued = v.wait_for("queued", 1).await;
            let id = last_id(&queued, "queued");
            assert_eq!(last_event(&queued, "queued")["kept"], true, "{queued}");
            assert_eq!(
                last_event(&queued, "queued")["status"],
                0,
                "network error: {queued}"
            );
            assert_eq!(
                queued["message"], "Sent from a train",
                "text kept: {queued}"
            );
            assert!(queued["classes"]
                .as_str()
                .unwrap()
                .contains("outbox-queued"));
            let waiting = v.waiting().await;
            assert_eq!(waiting.len(), 1, "{waiting:?}");
            assert_eq!(waiting[0]["id"], id.as_str());

            // Reloaded while offline: the browser's error page; nothing runs.
            v.0.try_goto(&page).await;
            let shown = v.0.run(PAGE_SHOWN, json!(null)).await;
            assert_eq!(shown["form"], false, "the browser's error page: {shown}");
            v.0.set_offline(false).await;
            // Back online, the page is loaded again (Chromium also reloads its error page by
            // itself) and what waited goes out. Chromium's emulation does not hold back what
            // the browser sends as the page goes (the beacon), so the copy may reach outbox
            // then; either way it is stored once and leaves the browser (below).
            v.0.goto(&page).await;
            v.queue_empties(Duration::from_secs(10)).await;
            id
        })
        .await;

    assert_eq!(stage.outbox.accepted().await, 1);
    assert_eq!(stage.outbox.delivered(&id).await, 1, "delivered once");
    let records = stage.outbox.records().await;
    assert_eq!(records.len(), 1, "stored once");
    assert_eq!(records[0].trace_id, id);
    assert_eq!(payload(&records[0])["message"], "Sent from a train");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_left_waiting_is_sent_by_the_next_page_load() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let id = stage
        .play(|v, page, p| async move {
            v.0.goto(&page).await;
            p.queue([refusal(503, "outbox_full", "retry later", Some(2))]);
            v.submit("next@example.com", "Sent by the next page", 1)
                .await;
            let queued = v.wait_for("queued", 1).await;
            let id = last_id(&queued, "queued");
            // The visitor goes on to another page of the site at once.
            v.0.goto(&page).await;
            let sent = v.status_when(&["sent"]).await;
            assert_eq!(sent["traceId"], id.as_str(), "the new page sent it: {sent}");
            v.queue_empties(Duration::from_secs(2)).await;
            id
        })
        .await;

    let records = stage.outbox.records().await;
    assert_eq!(records.len(), 1, "stored once");
    assert_eq!(records[0].trace_id, id);
    assert_eq!(payload(&records[0])["message"], "Sent by the next page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_made_while_outbox_is_down_is_accepted_once_it_starts() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let (site, origin) = site().await;
    let mut outbox = Outbox::unstarted().await;
    // outbox cannot serve the script while it is down: the site serves its own copy.
    serve_page_with_script_from(site, &outbox.base(), &origin);
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;
    let v = Visitor(browser.clone());
    let page = format!("{origin}/");
    let (outbox, id) = with_browser(browser, async move {
        v.0.goto(&page).await;
        v.submit("down@example.com", "While outbox restarts", 1)
            .await;
        let queued = v.wait_for("queued", 1).await;
        let id = last_id(&queued, "queued");
        assert_eq!(
            last_event(&queued, "queued")["status"],
            0,
            "refused: {queued}"
        );
        assert_eq!(last_event(&queued, "queued")["kept"], true, "{queued}");

        tokio::time::sleep(Duration::from_millis(1500)).await;
        outbox.start(&origin, &[]).await;
        let sent = v.wait_for("sent", 1).await;
        assert_eq!(last_id(&sent, "sent"), id, "{sent}");
        assert_eq!(sent["email"], "", "the form starts over once sent: {sent}");
        v.queue_empties(Duration::from_secs(2)).await;
        (outbox, id)
    })
    .await;

    assert_eq!(outbox.accepted().await, 1);
    let records = outbox.records().await;
    assert_eq!(records.len(), 1, "accepted once");
    assert_eq!(records[0].trace_id, id);
    assert_eq!(payload(&records[0])["message"], "While outbox restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_blocked_the_direct_send_works_and_a_failed_one_is_reported_as_not_kept() {
    // "Block all cookies" blocks every kind of site storage too.
    let blocked = json!({"profile.default_content_setting_values.cookies": 2});
    let Some(stage) = Stage::set(&[], Some(blocked)).await else {
        return;
    };
    let (direct, failed) = stage
        .play(|v, page, p| async move {
            v.0.goto(&page).await;
            let storage = v.0.run(STORAGE_STATE, json!(null)).await;
            assert_eq!(
                storage,
                json!(["blocked", "blocked"]),
                "the test blocks storage"
            );

            v.submit("direct@example.com", "No storage here", 1).await;
            let sent = v.wait_for("sent", 1).await;
            let direct = last_id(&sent, "sent");

            p.queue([refusal(503, "store_unavailable", "retry later", Some(1))]);
            v.submit("unkept@example.com", "Cannot be kept", 1).await;
            let queued = v.wait_for("queued", 1).await;
            let event = &last_event(&queued, "queued");
            assert_eq!(event["kept"], false, "reported as not kept: {queued}");
            assert_eq!(event["why"], "unavailable", "{queued}");
            assert!(
                queued["status"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("cannot keep"),
                "the page says so: {queued}"
            );
            // While the page stays open it still sends again.
            let sent = v.wait_for("sent", 2).await;
            (direct, last_id(&sent, "sent"))
        })
        .await;

    assert_eq!(stage.outbox.accepted().await, 2);
    let records = stage.outbox.records().await;
    let ids: Vec<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    assert!(
        ids.contains(&direct.as_str()) && ids.contains(&failed.as_str()),
        "{ids:?}"
    );
    assert_eq!(records.len(), 2);
}

/// Whether IndexedDB and localStorage can be used on the page.
const STORAGE_STATE: &str = r#"
const done = arguments[arguments.length - 1];
let ls;
try { localStorage.setItem("probe", "1"); ls = "usable"; } catch (e) { ls = "blocked"; }
try {
  const open = indexedDB.open("probe", 1);
  open.onsuccess = () => done(["usable", ls]);
  open.onerror = () => done(["blocked", ls]);
} catch (e) { done(["blocked", ls]); }
"#;

/// Where the tab is, and whether it shows the form.
const PAGE_SHOWN: &str = r#"
const done = arguments[arguments.length - 1];
done({ url: location.href, form: document.getElementById("contact") !== null });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_only_local_storage_exists_a_copy_is_kept_there_and_sent_on_the_next_load() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let id= stage.play(|v, page, _| async move {
        // A browser without IndexedDB, from the first script of every page on.
        let hide =
            json!({"source": "Object.defineProperty(window, 'indexedDB', {value: undefined});"});
        v.0.cdp("Page.addScriptToEvaluateOnNewDocument", hide).await;
        v.0.goto(&page).await;
        v.0.set_offline(true).await;
        v.submit("local@example.com", "Kept in localStorage", 1)
            .await;
        let queued = v.wait_for("queued", 1).await;
        assert_eq!(last_event(&queued, "queued")["kept"], true, "{queued}");
        let id = last_id(&queued, "queued");
        let kept = v.0.run(LOCAL_QUEUE, json!(null)).await;
        assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
        assert_eq!(kept[0]["id"], id.as_str());

        v.0.try_goto(&page).await;
        v.0.set_offline(false).await;
        v.0.goto(&page).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while v.0.run(LOCAL_QUEUE, json!(null)).await != json!([]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the copy is still waiting"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    })
    .await;

    let records = stage.outbox.records().await;
    assert_eq!(records.len(), 1, "stored once");
    assert_eq!(records[0].trace_id, id);
    assert_eq!(payload(&records[0])["message"], "Kept in localStorage");
}

/// The copies outbox.js keeps in localStorage.
const LOCAL_QUEUE: &str = r#"
const done = arguments[arguments.length - 1];
done(JSON.parse(localStorage.getItem("outbox-queue") || "[]"));
"#;
