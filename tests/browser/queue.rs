//! outbox.js keeps what it could not send: a real Chromium on the example page, the real
//! `outbox` binary delivering to a stub dashboard, and for some a scripted proxy between them.
//! Each test ends with outbox's store read back, not only the page.
//!
//! - offline at submit (Chromium's own network emulation), reloaded while offline, back
//!   online: stored once, delivered once;
//! - outbox down (connection refused), then started: accepted once;
//! - a double click, and one waiting submission open in two tabs: one send, one record;
//! - the tab closed with a submission waiting: the beacon stores it;
//! - storage blocked: the direct send works, and a failed one is reported as not kept.

use crate::proxy::{refusal, start_proxy};
use crate::support::{browser_tools, serve_page, serve_page_with_script_from, ChromeDriver};
use crate::visitor::{eventually, last_event, last_id, payload, with_browser, Outbox, Visitor};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;

/// A listener for the site's pages, and its origin.
pub async fn site() -> (TcpListener, String) {
    let site = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", site.local_addr().unwrap());
    (site, origin)
}

/// Waits until the browser's queue is empty (removal follows the page's "sent").
async fn queue_empties(v: &Visitor) {
    let mut left = Vec::new();
    for _ in 0..40 {
        left = v.waiting().await;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("copies are still waiting in the browser: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_at_submit_then_reloaded_offline_is_stored_and_delivered_once_when_back_online() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let (site, origin) = site().await;
    let outbox = Outbox::started(&origin, &[]).await;
    serve_page(site, &outbox.base());
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;
    let v = Visitor(browser.clone());
    let page = format!("{origin}/");
    let id = with_browser(browser, async move {
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
        // The next successful load of the page sends what waits (or the earlier page, kept in
        // the back-forward cache, does when the browser is back online: either way once).
        v.0.goto(&page).await;
        queue_empties_within(&v, Duration::from_secs(10)).await;
        id
    })
    .await;

    assert_eq!(outbox.accepted().await, 1);
    assert_eq!(outbox.delivered(&id).await, 1, "delivered once");
    let records = outbox.records().await;
    assert_eq!(records.len(), 1, "stored once");
    assert_eq!(records[0].trace_id, id);
    assert_eq!(payload(&records[0])["message"], "Sent from a train");
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
        queue_empties(&v).await;
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
async fn a_double_click_and_one_waiting_submission_in_two_tabs_each_send_once() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let (site, origin) = site().await;
    let outbox = Outbox::started(&origin, &[]).await;
    let proxy = start_proxy(([127, 0, 0, 1], outbox.port).into()).await;
    serve_page(site, &proxy.base());
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;
    let v = Visitor(browser.clone());
    let page = format!("{origin}/");
    let p = proxy.clone();
    let (clicked, waited) = with_browser(browser, async move {
        v.0.goto(&page).await;
        v.submit("double@example.com", "Clicked twice", 2).await;
        let sent = v.wait_for("sent", 1).await;
        let clicked = last_id(&sent, "sent");

        // A 503 with Retry-After: the copy waits 2 s; a second tab opens the site meanwhile.
        p.queue([refusal(503, "outbox_full", "retry later", Some(2))]);
        v.submit("tabs@example.com", "Open in two tabs", 1).await;
        let queued = v.wait_for("queued", 1).await;
        let waited = last_id(&queued, "queued");
        let first = v.0.tab().await;
        let second = v.0.new_tab().await;
        v.0.switch_to(&second).await;
        v.0.goto(&page).await;
        v.record().await;
        assert_eq!(v.waiting().await.len(), 1, "the second tab sees the copy");
        queue_empties_within(&v, Duration::from_secs(10)).await;
        v.0.switch_to(&first).await;
        let sent = v.wait_for("sent", 2).await;
        assert_eq!(
            sent["email"], "",
            "the first tab's form starts over: {sent}"
        );
        // Time for a second send, if either tab were to make one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (clicked, waited)
    })
    .await;

    assert_eq!(
        proxy.posts_of(&clicked).len(),
        1,
        "the double click sent once"
    );
    let posts = proxy.posts_of(&waited);
    assert_eq!(
        posts.len(),
        2,
        "the 503, then one send from one of the tabs: {posts:?}"
    );
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After honoured: {gap:?}"
    );
    assert_eq!(outbox.accepted().await, 2);
    let records = outbox.records().await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    ids.sort();
    let mut want = [clicked.as_str(), waited.as_str()];
    want.sort();
    assert_eq!(ids, want, "one record each");
}

/// Waits until the queue is empty, for up to `limit`.
async fn queue_empties_within(v: &Visitor, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !v.waiting().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_with_a_submission_waiting_sends_it_by_beacon() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let (site, origin) = site().await;
    let outbox = Outbox::started(&origin, &[]).await;
    let proxy = start_proxy(([127, 0, 0, 1], outbox.port).into()).await;
    serve_page(site, &proxy.base());
    let driver = ChromeDriver::start(&tools);
    let browser = driver.new_session(&tools).await;
    let v = Visitor(browser.clone());
    let page = format!("{origin}/");
    let p = proxy.clone();
    let id = with_browser(browser, async move {
        v.0.goto(&page).await;
        // The next try would be in a minute; the visitor closes the tab long before.
        p.queue([refusal(503, "outbox_full", "retry later", Some(60))]);
        v.submit("leaving@example.com", "Closed the tab", 1).await;
        let queued = v.wait_for("queued", 1).await;
        let id = last_id(&queued, "queued");
        let other = v.0.new_tab().await;
        v.0.close_tab().await;
        v.0.switch_to(&other).await;
        id
    })
    .await;

    let beacon = || {
        let posts = proxy.posts_of(&id);
        async move { posts.iter().any(|p| p.key.is_none()) }
    };
    eventually("the beacon", beacon).await;
    let posts = proxy.posts_of(&id);
    let sent = posts.iter().find(|p| p.key.is_none()).unwrap();
    assert!(
        sent.content_type.starts_with("text/plain"),
        "a beacon: {sent:?}"
    );
    eventually("the beacon stored", || async {
        outbox.accepted().await == 1
    })
    .await;
    let records = outbox.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].trace_id, id, "the trace ID in the beacon's body");
    let payload = payload(&records[0]);
    assert_eq!(payload["message"], "Closed the tab", "{payload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_blocked_the_direct_send_works_and_a_failed_one_is_reported_as_not_kept() {
    let Some(tools) = browser_tools().await else {
        return;
    };
    let (site, origin) = site().await;
    let outbox = Outbox::started(&origin, &[]).await;
    let proxy = start_proxy(([127, 0, 0, 1], outbox.port).into()).await;
    serve_page(site, &proxy.base());
    let driver = ChromeDriver::start(&tools);
    // "Block all cookies" blocks every kind of site storage too.
    let blocked = json!({"profile.default_content_setting_values.cookies": 2});
    let browser = driver.new_session_with_prefs(&tools, blocked).await;
    let v = Visitor(browser.clone());
    let page = format!("{origin}/");
    let p = proxy.clone();
    let (direct, failed) = with_browser(browser, async move {
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

    assert_eq!(outbox.accepted().await, 2);
    let records = outbox.records().await;
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
