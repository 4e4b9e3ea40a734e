//! The bounds on what waits in the browser: a copy older than outbox's idempotency window is
//! dropped with an event instead of being sent (it could be stored twice), and a full queue
//! (20 copies) keeps no more, which the page is told. Copies are written into the page's
//! IndexedDB as outbox.js keeps them.

use crate::proxy::refusal;
use crate::visitor::{last_event, Stage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_past_the_window_is_dropped_unsent_and_a_full_queue_keeps_no_more() {
    let Some(stage) = Stage::set(&[], None).await else {
        return;
    };
    let endpoint = format!("{}/api/collect", stage.proxy.base());
    stage.play(|v, page, p| async move {
        // A copy from a visit 25 hours ago, never sent: past outbox's 24 h window.
        v.0.goto(&page).await;
        let old = json!({"id": "expired-copy-0001", "url": endpoint, "body": "{}", "f": "contact",
            "at": 0, "until": 1, "tries": 3, "next": 0, "kept": 1});
        v.0.run(PUT_COPIES, json!([[old]])).await;
        v.0.goto(&page).await;
        let status = v.status_when(&["dropped"]).await;
        assert_eq!(status["traceId"], "expired-copy-0001", "the page is told: {status}");
        assert!(v.waiting().await.is_empty(), "and the copy is gone");

        // 20 copies waiting out a long Retry-After fill the queue: a failed send is not kept.
        let hold = json!(4_102_444_800_000u64); // 2100-01-01
        let copies: Vec<_> = (0..20)
            .map(|i| {
                json!({"id": format!("waiting-copy-{i:04}"), "url": endpoint,
                "body": "{\"a\":\"b\"}", "at": 0, "until": hold, "tries": 1,
                "next": hold, "hold": hold, "kept": 1})
            })
            .collect();
        v.0.run(PUT_COPIES, json!([copies])).await;
        p.queue([refusal(503, "outbox_full", "retry later", Some(60))]);
        v.submit("full@example.com", "No room left", 1).await;
        let queued = v.wait_for("queued", 1).await;
        let event = last_event(&queued, "queued");
        assert_eq!(
            (event["kept"].as_bool(), event["why"].as_str()),
            (Some(false), Some("full"))
        );
        assert_eq!(v.waiting().await.len(), 20, "no 21st copy");
    })
    .await;

    assert!(
        stage.proxy.posts_of("expired-copy-0001").is_empty(),
        "never sent"
    );
    assert_eq!(
        stage.proxy.posts().len(),
        1,
        "only the submission that was not kept"
    );
    assert_eq!(stage.outbox.accepted().await, 0);
    assert!(stage.outbox.records().await.is_empty());
}

/// Writes copies into the page's IndexedDB queue, as outbox.js keeps them.
const PUT_COPIES: &str = r#"
const [[copies], done] = arguments;
const open = indexedDB.open("outbox", 1);
open.onupgradeneeded = () => open.result.createObjectStore("q", { keyPath: "id" });
open.onsuccess = () => {
  const t = open.result.transaction("q", "readwrite");
  for (const c of copies) t.objectStore("q").put(c);
  t.oncomplete = () => { open.result.close(); done(null); };
};
"#;
