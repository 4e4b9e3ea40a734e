//! `outbox inspect`, `replay` and `edit`, through a running server and on a stopped directory.

mod common;
mod ops_helpers;

use ops_helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_summary_list_and_record_via_the_server_and_offline() {
    let app = common::spawn_app(&[]).await;
    post_accepted(
        &app,
        "inspect-key",
        3,
        |_| json!({"email": "a@example.com", "message": "hello"}),
    )
    .await;
    let dir = app.data_dir.clone();
    assert!(dir.join("admin.sock").exists());

    let summary = outbox(&dir, "inspect", &["--json"]);
    assert_eq!(summary.code, 0, "{}", summary.stderr);
    assert!(summary.via_this_process(), "{}", summary.stderr);
    let s = summary.json();
    for key in ["pending", "in_flight", "delivered", "dead", "quarantined"] {
        assert!(s["counts"][key].is_u64(), "counts.{key} in {s}");
    }
    assert_eq!(s["counts"]["pending"], 3);
    assert!(s["delivery"]["mode"].is_string(), "{s}");

    let list = outbox(&dir, "inspect", &["--list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let table = outbox(&dir, "inspect", &["--list", "--status", "pending"]);
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);
    assert!(
        table.stdout.lines().all(|l| l.chars().count() <= 80),
        "{}",
        table.stdout
    );
    let none = outbox(&dir, "inspect", &["--list", "--json", "--status", "dead"]).json();
    assert_eq!(none.as_array().unwrap().len(), 0);

    let rec = outbox(&dir, "inspect", &["inspect-key-0001", "--json"]).json();
    assert_eq!(rec["trace_id"], "inspect-key-0001");
    assert_eq!(rec["status"], "pending");
    assert_eq!(rec["attempts"], 0);
    assert_eq!(rec["payload"]["message"], "hello");
    let missing = outbox(&dir, "inspect", &["no-such-trace-id"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no record with trace ID"),
        "{}",
        missing.stderr
    );

    let _tmp = stop(app).await;
    {
        assert!(
            !dir.join("admin.sock").exists(),
            "the socket is removed at shutdown"
        );
        let off = outbox(&dir, "inspect", &["--json"]);
        assert_eq!(off.code, 0, "{}", off.stderr);
        assert!(off.offline(), "{}", off.stderr);
        assert_eq!(off.json()["counts"]["pending"], 3);
        assert!(off.json()["delivery"].is_null());
        let rec = outbox(&dir, "inspect", &["inspect-key-0002"]);
        assert!(
            rec.stdout.contains("\"message\": \"hello\""),
            "{}",
            rec.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_means_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, vec![record("stale-sock-01", json!({"a": 1}))]);
    // A server killed with SIGKILL leaves its socket file behind with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(dir.join("admin.sock")).unwrap());
    let run = outbox(&dir, "inspect", &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.offline());
    // A server started later replaces the stale file.
    let app = common::spawn_app_in(&dir, &[]).await;
    assert!(outbox(&dir, "inspect", &[]).via_this_process());
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_requeues_dead_letters_at_attempt_zero_and_guards_delivered_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![
            record("replay-dead-422", json!({"email": "x@example.com"})),
            record("replay-dead-500", json!({"email": "y@example.com"})),
            record("replay-delivered", json!({"email": "z@example.com"})),
        ],
    );
    change(&dir, "replay-dead-422", |r| make_dead(r, 422));
    change(&dir, "replay-dead-500", |r| make_dead(r, 500));
    change(&dir, "replay-delivered", |r| {
        make_delivered(r, outbox::store::now_ms())
    });

    let app = common::spawn_app_in(&dir, &[]).await;
    let dry = outbox(
        &dir,
        "replay",
        &["--dead", "--status-code", "422", "--dry-run", "--json"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.via_this_process());
    assert_eq!(dry.json()["replayed"], json!(["replay-dead-422"]));
    let still = outbox(&dir, "inspect", &["replay-dead-422", "--json"]).json();
    assert_eq!(still["status"], "dead", "a dry run changes nothing");

    let done = outbox(
        &dir,
        "replay",
        &["--dead", "--status-code", "422", "--json"],
    );
    assert_eq!(done.json()["replayed"], json!(["replay-dead-422"]));
    let r = outbox(&dir, "inspect", &["replay-dead-422", "--json"]).json();
    assert_eq!(
        (r["status"].as_str(), r["attempts"].as_u64()),
        (Some("pending"), Some(0))
    );
    assert_eq!(r["trace_id"], "replay-dead-422");

    let refused = outbox(&dir, "replay", &["replay-delivered"]);
    assert_eq!(refused.code, 1, "refusals are problems: {}", refused.stdout);
    assert!(refused.stdout.contains("--force"), "{}", refused.stdout);
    let forced = outbox(&dir, "replay", &["replay-delivered", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stdout);
    stop(app).await;

    let off = outbox(&dir, "replay", &["replay-dead-500", "--json"]);
    assert!(off.offline());
    assert_eq!(off.json()["replayed"], json!(["replay-dead-500"]));
    let s = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(
        (
            s["counts"]["pending"].as_u64(),
            s["counts"]["dead"].as_u64()
        ),
        (Some(3), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_corrects_a_dead_letter_and_keeps_an_audit_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![record("edit-dead-0001", json!({"email": "bad address"}))],
    );
    change(&dir, "edit-dead-0001", |r| make_dead(r, 422));
    let before = outbox(&dir, "inspect", &["edit-dead-0001", "--json"]).json();

    let app = common::spawn_app_in(&dir, &[]).await;
    let file = tmp.path().join("fixed.json");
    std::fs::write(&file, r#"{"email": "good@example.com"}"#).unwrap();
    let run = outbox(
        &dir,
        "edit",
        &[
            "edit-dead-0001",
            "--payload",
            file.to_str().unwrap(),
            "--note",
            "typo in address",
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.via_this_process());
    let r = run.json();
    assert_eq!(r["payload"], json!({"email": "good@example.com"}));
    assert_eq!(r["status"], "dead", "editing does not replay");
    assert_eq!(
        r["audit"][0]["previous_payload_sha256"],
        before["payload_sha256"]
    );
    assert_eq!(r["audit"][0]["note"], "typo in address");
    stop(app).await;

    // Offline, through $EDITOR (any command that edits the file in place).
    let run = outbox_env(
        &dir,
        "edit",
        &["edit-dead-0001"],
        &[("EDITOR", "sed -i s/good@/better@/"), ("VISUAL", "")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.offline());
    let r = outbox(&dir, "inspect", &["edit-dead-0001", "--json"]).json();
    assert_eq!(r["payload"]["email"], "better@example.com");
    assert_eq!(r["audit"].as_array().unwrap().len(), 2);
    let bad = outbox_env(
        &dir,
        "edit",
        &["edit-dead-0001"],
        &[("EDITOR", "sed -i s/}//"), ("VISUAL", "")],
    );
    assert_eq!(bad.code, 2, "invalid JSON is refused: {}", bad.stderr);
}
