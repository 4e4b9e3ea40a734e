//! `outbox top` without a terminal: one plain snapshot of a running server.

mod common;
mod ops_helpers;

use ops_helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_prints_one_snapshot_when_stdout_is_not_a_terminal() {
    let app = common::spawn_app(&[]).await;
    for i in 0..2 {
        let key = format!("top-key-{i:05}");
        let r = app
            .post_json(&json!({"n": i}), &[("Idempotency-Key", &key)])
            .await;
        assert_eq!(r.status(), 202);
    }
    let dir = app.data_dir.clone();
    let run = outbox(&dir, "top", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("server pid {}", std::process::id())),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("pending 2"), "{}", run.stdout);
    assert!(run.stdout.contains("delivery   off"), "{}", run.stdout);
    assert!(run.stdout.lines().all(|l| l.chars().count() <= 80));
    let _tmp = stop(app).await;

    let stopped = outbox(&dir, "top", &[]);
    assert_eq!(stopped.code, 2);
    assert!(
        stopped.stderr.contains("needs a running server"),
        "{}",
        stopped.stderr
    );
}
