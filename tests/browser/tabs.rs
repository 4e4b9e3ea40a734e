//! One submission, several pages: a double click, one waiting copy open in two tabs (one
//! send, the Web Lock's work, and both tabs told), and a tab closed while a copy waits (the
//! beacon stores it). A real Chromium, the real binary behind the scripted proxy, which counts
//! the posts; each test ends with outbox's store read back.

use crate::proxy::refusal;
use crate::visitor::{eventually, last_id, payload, Stage};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_and_one_waiting_submission_in_two_tabs_each_send_once() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let (clicked, waited) = stage
        .play(|v, page, p| async move {
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
            v.queue_empties(Duration::from_secs(10)).await;
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
        stage.proxy.posts_of(&clicked).len(),
        1,
        "the double click sent once"
    );
    let posts = stage.proxy.posts_of(&waited);
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
    assert_eq!(stage.outbox.accepted().await, 2);
    let records = stage.outbox.records().await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    ids.sort();
    let mut want = [clicked.as_str(), waited.as_str()];
    want.sort();
    assert_eq!(ids, want, "one record each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_with_a_submission_waiting_sends_it_by_beacon() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let id = stage
        .play(|v, page, p| async move {
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
        let posts = stage.proxy.posts_of(&id);
        async move { posts.iter().any(|p| p.key.is_none()) }
    };
    eventually("the beacon", beacon).await;
    let posts = stage.proxy.posts_of(&id);
    let sent = posts.iter().find(|p| p.key.is_none()).unwrap();
    assert!(
        sent.content_type.starts_with("text/plain"),
        "a beacon: {sent:?}"
    );
    eventually("the beacon stored", || async {
        stage.outbox.accepted().await == 1
    })
    .await;
    let records = stage.outbox.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].trace_id, id, "the trace ID in the beacon's body");
    let payload = payload(&records[0]);
    assert_eq!(payload["message"], "Closed the tab", "{payload}");
}
