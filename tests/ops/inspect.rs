//! `outbox inspect`, `replay` and `edit`, through a running server and on a stopped directory.

use crate::harness;
use crate::harness::ops::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_summary_list_and_record_via_the_server_and_offline() {
    let app = harness::spawn_app(&[]).await;
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
    let table = outbox_env(
        &dir,
        "inspect",
        &["--list", "--status", "pending"],
        &[("COLUMNS", "100")],
    );
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);
    assert!(
        table.stdout.lines().all(|l| l.chars().count() <= 100),
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
    let app = harness::spawn_app_in(&dir, &[]).await;
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
        make_delivered(r, outbox::time::now_ms())
    });

    let app = harness::spawn_app_in(&dir, &[]).await;
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

    let app = harness::spawn_app_in(&dir, &[]).await;
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
    assert!(
        bad.stderr.contains("not valid JSON")
            && bad
                .stderr
                .contains("saved unchanged, so the edit is given up"),
        "the editor reopened on the invalid text, which came back unchanged: {}",
        bad.stderr
    );
}

const UUID_A: &str = "01a22eeb-accc-77b2-ab2a-000000000001";
const UUID_B: &str = "01a22eeb-accc-77b2-ab2a-000000000002";
const UUID_C: &str = "01a22eeb-accc-77b2-ab2a-ffff00000003";

#[test]
fn the_list_shows_status_codes_and_errors_at_the_terminal_width_and_says_when_it_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let long_error =
        "HTTP 422: {\"error\": \"validation\", \"detail\": \"email must be an address\"}";
    seed(
        &dir,
        [UUID_A, UUID_B, UUID_C]
            .iter()
            .map(|id| record(id, json!({"email": "x"})))
            .collect(),
    );
    change(&dir, UUID_C, |r| {
        make_dead(r, 422);
        r.last_error = Some(long_error.into());
    });
    let cols = |n: &str, args: &[&str]| outbox_env(&dir, "inspect", args, &[("COLUMNS", n)]);

    let dead = cols("160", &["--list", "--status", "dead"]);
    assert_eq!(dead.code, 0, "{}", dead.stderr);
    let row = dead.stdout.lines().nth(1).unwrap();
    assert!(
        row.starts_with(UUID_C),
        "the whole ID fits at 160 columns: {row}"
    );
    assert!(row.contains(" 422 "), "the status code: {row}");
    assert!(
        row.contains("HTTP 422: {\"error\": \"validation\""),
        "the error's start: {row}"
    );
    assert!(row.chars().count() <= 160, "{row}");
    let json = outbox(&dir, "inspect", &["--list", "--status", "dead", "--json"]).json();
    assert_eq!(json[0]["status_code"], 422);
    assert_eq!(json[0]["last_error"], long_error);

    let cut = cols("100", &["--list", "--limit", "2"]);
    assert_eq!(
        cut.stdout.lines().last(),
        Some("2 of 3 shown (newest first); --limit 3 shows all"),
        "{}",
        cut.stdout
    );
    let cut_json = outbox(&dir, "inspect", &["--list", "--limit", "2", "--json"]);
    assert_eq!(cut_json.json().as_array().unwrap().len(), 2);
    assert!(
        cut_json.stderr.contains("2 of 3 shown"),
        "{}",
        cut_json.stderr
    );
    let whole = cols("100", &["--list"]);
    assert!(!whole.stdout.contains(" shown"), "{}", whole.stdout);

    // Narrow: IDs are cut, and the cut form (with its ~) still finds a unique record.
    let narrow = cols("70", &["--list", "--status", "dead"]);
    let shown_id = narrow
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        shown_id.ends_with('~') && shown_id.len() < UUID_C.len(),
        "{}",
        narrow.stdout
    );
    let found = outbox(&dir, "inspect", &[&shown_id, "--json"]);
    assert_eq!(
        found.code, 2,
        "the cut form is shared by three IDs: {}",
        found.stdout
    );
    for id in [UUID_A, UUID_B, UUID_C] {
        assert!(
            found.stderr.contains(id),
            "the candidates are listed: {}",
            found.stderr
        );
    }
    let unique = outbox(&dir, "inspect", &["01a22eeb-accc-77b2-ab2a-ff", "--json"]);
    assert_eq!(unique.code, 0, "{}", unique.stderr);
    assert_eq!(unique.json()["trace_id"], UUID_C);
    let replay = outbox(&dir, "replay", &["01a22eeb-accc-77b2-ab2a-ff", "--json"]);
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert_eq!(replay.json()["replayed"], json!([UUID_C]));
    let ambiguous = outbox(&dir, "replay", &["01a22eeb"]);
    assert_eq!(ambiguous.code, 2, "{}", ambiguous.stdout);
    assert!(
        ambiguous.stderr.contains("more than one trace ID"),
        "{}",
        ambiguous.stderr
    );
}

#[test]
fn replay_filters_without_dead_say_to_add_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let run = outbox(&tmp.path().join("data"), "replay", &["--since", "1h"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("add --dead"), "{}", run.stderr);
    assert!(!run.stderr.contains("<TRACE_IDS>"), "{}", run.stderr);
}

/// The editor leaves invalid JSON: it opens again on that text with the error on top, and
/// the second, valid, save is stored. The hint keeps the --data-dir.
#[test]
fn edit_reopens_the_editor_on_invalid_json_with_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![record("reedit-dead-0001", json!({"email": "bad"}))],
    );
    change(&dir, "reedit-dead-0001", |r| make_dead(r, 422));
    let script = tmp.path().join("editor.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
n=$(cat "$T/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$T/count"
cp "$1" "$T/seen.$n"
if [ $n = 1 ]; then printf '{"email": "fixed@example.com",}' > "$1"
else printf '{"email": "fixed@example.com"}\n' > "$1"; fi
"#,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = tmp.path().to_str().unwrap();
    let run = outbox_env(
        &dir,
        "edit",
        &["reedit-dead"],
        &[
            ("EDITOR", script.to_str().unwrap()),
            ("VISUAL", ""),
            ("T", t),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let second = std::fs::read_to_string(tmp.path().join("seen.2")).unwrap();
    assert!(
        second.starts_with("# ERROR: the payload is not valid JSON"),
        "{second}"
    );
    assert!(
        second.contains(r#"{"email": "fixed@example.com",}"#),
        "the operator's text is kept: {second}"
    );
    assert!(
        run.stdout.contains(&format!(
            "`outbox replay reedit-dead-0001 --data-dir {}`",
            dir.display()
        )),
        "{}",
        run.stdout
    );
    let r = outbox(&dir, "inspect", &["reedit-dead-0001", "--json"]).json();
    assert_eq!(r["payload"], json!({"email": "fixed@example.com"}));

    // Emptied: nothing edited, nothing lost.
    let empty = outbox_env(
        &dir,
        "edit",
        &["reedit-dead-0001"],
        &[("EDITOR", "truncate -s 0"), ("VISUAL", "")],
    );
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert!(
        empty.stderr.contains("empty payload; nothing edited"),
        "{}",
        empty.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_being_delivered_shows_in_flight_and_replay_and_edit_are_refused() {
    let dash = harness::dashboard::Dashboard::start().await;
    // The dashboard holds the delivery long enough for the operator's commands.
    dash.set_reply(harness::dashboard::Reply::ok().delay(std::time::Duration::from_secs(4)));
    let url = dash.url();
    let app = harness::spawn_app(&[
        "--dashboard-url",
        &url,
        "--ingest-key",
        "inflight-ingest-key-0123456789",
    ])
    .await;
    let answer = app
        .post_json(
            &json!({"email": "a@example.com"}),
            &[("Idempotency-Key", "inflight-0001")],
        )
        .await;
    assert_eq!(answer.status(), 202);
    dash.wait_for_requests(1).await;
    let dir = app.data_dir.clone();

    let shown = outbox(&dir, "inspect", &["inflight-0001", "--json"]);
    assert!(shown.via_this_process());
    assert_eq!(shown.json()["status"], "in_flight");
    let replay = outbox(&dir, "replay", &["inflight-0001", "--force", "--json"]);
    assert_eq!(replay.code, 1, "{}", replay.stdout);
    assert_eq!(
        replay.json()["refused"][0]["reason"],
        "being delivered right now; retry when the attempt ends"
    );
    let edit = outbox_env(
        &dir,
        "edit",
        &["inflight-0001"],
        &[("EDITOR", "sed -i s/a@/b@/"), ("VISUAL", "")],
    );
    assert_eq!(edit.code, 2, "{}", edit.stderr);
    assert!(
        edit.stderr.contains("being delivered right now"),
        "{}",
        edit.stderr
    );
    let summary = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(summary["counts"]["in_flight"], 1, "{summary}");
    let listed = outbox(
        &dir,
        "inspect",
        &["--list", "--status", "in_flight", "--json"],
    )
    .json();
    assert_eq!(listed[0]["trace_id"], "inflight-0001", "{listed}");

    // Once the attempt ends the record is delivered as it was sent, once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = outbox(&dir, "inspect", &["inflight-0001", "--json"]).json();
        if r["status"] == "delivered" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(dash.count(), 1);
    assert_eq!(dash.requests()[0].json()["email"], "a@example.com");
    app.stop().await;
}
