//! Intake limits apply to new records only, through the real binary: at `--max-pending`,
//! `--max-outbox-bytes` or `--min-free-disk`, a retry of a stored submission still gets its
//! original receipt (`200`, `"duplicate": true`), a different payload under a stored trace ID
//! still gets `409`, and only a new submission gets the limit's `503`.

use crate::harness;
use crate::harness::{free_port, spawn_binary_async};
use serde_json::{json, Value};
use std::path::Path;

async fn post(port: u16, id: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("idempotency-key", id)
        .json(body)
        .send()
        .await
        .expect("outbox answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON answer"))
}

/// Posts `n` new submissions, checks each is stored, returns their receipts by trace ID.
async fn fill(port: u16, n: usize) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("cap-fill-{i:04}");
        let body = json!({"email": format!("u{i}@example.com"), "message": "hello"});
        let (s, receipt) = post(port, &id, &body).await;
        assert_eq!(s, 202, "{receipt}");
        out.push((id, body, receipt));
    }
    out
}

/// At a limit: a retry of each stored post is its duplicate with the original receipt, a
/// changed payload under a stored ID conflicts, and a new post is refused with `code`.
async fn check_at_limit(port: u16, stored: &[(String, Value, Value)], code: &str) {
    for (id, body, receipt) in stored {
        let (s, again) = post(port, id, body).await;
        assert_eq!(s, 200, "retry of {id} at the {code} limit: {again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["trace_id"], receipt["trace_id"]);
        assert_eq!(
            again["received_at"], receipt["received_at"],
            "the original receipt"
        );
    }
    let (id, _, _) = &stored[0];
    let (s, v) = post(port, id, &json!({"email": "someone-else@example.com"})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("idempotency_conflict")),
        "{v}"
    );
    let (s, v) = post(port, "cap-new-0001", &json!({"email": "new@example.com"})).await;
    assert_eq!((s, v["error"].as_str()), (503, Some(code)), "{v}");
}

async fn pending(port: u16) -> u64 {
    let v: Value = reqwest::get(format!("http://127.0.0.1:{port}/health/detailed"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["counts"]["pending"].as_u64().expect("pending count")
}

async fn serve(dir: &Path, extra: &[&str]) -> (harness::KillOnDrop, u16) {
    let port = free_port();
    (spawn_binary_async(dir, port, extra).await, port)
}

#[tokio::test]
async fn a_stored_submission_is_answered_as_a_duplicate_at_every_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    // --max-pending: three stored fill the outbox (no dashboard, so they stay pending).
    let (server, port) = serve(&dir, &["--max-pending", "3"]).await;
    let stored = fill(port, 3).await;
    check_at_limit(port, &stored, "outbox_full").await;
    assert_eq!(pending(port).await, 3, "nothing was added at the cap");
    drop(server);

    // --max-outbox-bytes below what the directory already holds.
    let (server, port) = serve(&dir, &["--max-outbox-bytes", "1KiB"]).await;
    check_at_limit(port, &stored, "outbox_full").await;
    drop(server);

    // --min-free-disk above any disk's free space.
    let (server, port) = serve(&dir, &["--min-free-disk", "1000000TiB"]).await;
    check_at_limit(port, &stored, "disk_low").await;
    assert_eq!(pending(port).await, 3);
    drop(server);
}
