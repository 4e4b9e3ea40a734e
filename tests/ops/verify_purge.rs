//! `outbox verify` (and `--repair`) and `outbox purge`, through a running server and offline.

use crate::harness;
use crate::harness::ops::*;
use outbox::store::keys::time_key;
use outbox::store::maintenance::open_raw;
use serde_json::json;
use std::path::Path;

/// Breaks the store by hand the way a bug or a bad edit could: a missing due entry, a stray
/// queue entry, a wrong counter and an entry that does not decode.
fn break_store(dir: &Path, queued: &outbox::store::record::Record) {
    wait_released(dir);
    let db = open_raw(dir).unwrap();
    let due = db.open_tree("due").unwrap();
    assert!(due
        .remove(time_key(queued.next_attempt_at_ms, &queued.trace_id))
        .unwrap()
        .is_some());
    db.open_tree("queue")
        .unwrap()
        .insert(time_key(1_000, "ghost-trace-id"), &[])
        .unwrap();
    db.open_tree("counters")
        .unwrap()
        .insert("pending", &7u64.to_be_bytes())
        .unwrap();
    db.open_tree("entries")
        .unwrap()
        .insert("garbled-entry-01", &[1, 0xff, 0xfe])
        .unwrap();
    db.flush().unwrap();
    drop((due, db));
    wait_released(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_hand_broken_index_and_repair_fixes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let a = record("verify-rec-0001", json!({"n": 1}));
    seed(
        &dir,
        vec![a.clone(), record("verify-rec-0002", json!({"n": 2}))],
    );
    let clean = outbox(&dir, "verify", &["--json"]);
    assert_eq!(clean.code, 0, "{}", clean.stdout);
    assert!(clean.offline());
    break_store(&dir, &a);

    let found = outbox(&dir, "verify", &["--json"]);
    assert_eq!(found.code, 1, "{}", found.stdout);
    let problems = found.json()["problems"].to_string();
    for expect in [
        "verify-rec-0001 has no due index entry",
        "ghost-trace-id",
        "counter pending is 7",
        "garbled-entry-01 does not decode",
    ] {
        assert!(problems.contains(expect), "{expect:?} not in {problems}");
    }

    // The same problems through a running server, and the repair there.
    let app = harness::spawn_app_in(&dir, &[]).await;
    let live = outbox(&dir, "verify", &[]);
    assert_eq!(live.code, 1);
    assert!(live.via_this_process());
    assert!(live.stdout.contains("--repair"), "{}", live.stdout);
    let repair = outbox(&dir, "verify", &["--repair", "--json"]);
    assert_eq!(repair.code, 0, "{}", repair.stdout);
    assert_eq!(repair.json()["remaining"], json!([]));
    let again = outbox(&dir, "verify", &["--json"]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    let s = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(s["counts"]["pending"], 2);
    assert_eq!(s["counts"]["quarantined"], 1);
    assert_eq!(s["balanced"], true);
    stop(app).await;

    // Offline repair works the same.
    break_store(&dir, &a);
    let fixed = outbox(&dir, "verify", &["--repair"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stdout);
    assert!(fixed.offline());
    assert_eq!(outbox(&dir, "verify", &[]).code, 0);
}

/// Every key and value of every tree, lower-cased, as text.
fn every_tree_mentions(dir: &Path, needle: &str) -> Vec<String> {
    let db = open_raw(dir).unwrap();
    let mut hits = Vec::new();
    for name in db.tree_names() {
        for item in db.open_tree(&name).unwrap().iter() {
            let (k, v) = item.unwrap();
            for bytes in [&k, &v] {
                let text = String::from_utf8_lossy(bytes).to_lowercase();
                // The quarantine tree holds original bytes hex-encoded: decode those too.
                let hexed = hex::encode(needle.as_bytes());
                if text.contains(needle) || text.contains(&hexed) {
                    hits.push(format!("{}: {}", String::from_utf8_lossy(&name), text));
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_an_email_leaves_no_copy_in_any_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![
            record("erase-pending-1", json!({"email": "Jo.Doe@Example.com"})),
            record(
                "erase-dead-0001",
                json!({"message": "write to JO.DOE@EXAMPLE.COM"}),
            ),
            record("erase-noted-001", json!({"email": "other@example.com"})),
            record("erase-keep-0001", json!({"email": "keep@example.com"})),
            record("erase-garbled-1", json!({"x": 1})),
        ],
    );
    change(&dir, "erase-dead-0001", |r| make_dead(r, 422));
    change(&dir, "erase-noted-001", |r| {
        note(r, "merged with jo.doe@example.com")
    });
    {
        // A quarantined copy that still holds the address.
        wait_released(&dir);
        let db = open_raw(&dir).unwrap();
        let mut raw = vec![1u8, 0xff];
        raw.extend_from_slice(b"jo.doe@example.com");
        db.open_tree("entries")
            .unwrap()
            .insert("erase-garbled-1", raw)
            .unwrap();
        db.flush().unwrap();
        drop(db);
        wait_released(&dir);
        let store = outbox::store::Store::open(&dir).unwrap();
        store.quarantine("erase-garbled-1", "test").unwrap();
        store.sync().unwrap();
    }
    wait_released(&dir);
    assert!(!every_tree_mentions(&dir, "jo.doe@example.com").is_empty());

    let app = harness::spawn_app_in(&dir, &[]).await;
    let unconfirmed = outbox(&dir, "purge", &["--erase-email", "jo.doe@example.com"]);
    assert_eq!(
        unconfirmed.code, 2,
        "no prompt possible, no --yes: {}",
        unconfirmed.stderr
    );
    assert!(unconfirmed.stderr.contains("--yes"));
    let run = outbox(
        &dir,
        "purge",
        &["--erase-email", "Jo.Doe@example.COM", "--yes", "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.via_this_process());
    let r = run.json();
    assert_eq!(r["erased"], json!(["erase-dead-0001", "erase-pending-1"]));
    assert_eq!(r["quarantined_copies_erased"], 1);
    assert_eq!(r["audit_notes_scrubbed"], 1);
    stop(app).await;

    assert_eq!(
        every_tree_mentions(&dir, "jo.doe@example.com"),
        Vec::<String>::new()
    );
    wait_released(&dir);
    let s = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(s["balanced"], true, "{s}");
    assert_eq!(s["counts"]["pending"], 2, "the other records stay");
    assert_eq!(outbox(&dir, "verify", &[]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_delivered_tombstones_are_purged_offline_and_new_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![
            record("tomb-old-00001", json!({"a": 1})),
            record("tomb-new-00001", json!({"a": 2})),
        ],
    );
    let day = 86_400_000;
    change(&dir, "tomb-old-00001", |r| {
        make_delivered(r, outbox::time::now_ms() - 40 * day)
    });
    change(&dir, "tomb-new-00001", |r| {
        make_delivered(r, outbox::time::now_ms())
    });
    let dry = outbox(
        &dir,
        "purge",
        &["--older-than", "30d", "--dry-run", "--json"],
    );
    assert_eq!(dry.json()["tombstones_purged"], 1);
    let run = outbox(&dir, "purge", &["--older-than", "30d", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.offline());
    assert_eq!(run.json()["tombstones_purged"], 1);
    assert_eq!(outbox(&dir, "inspect", &["tomb-old-00001"]).code, 2);
    assert_eq!(outbox(&dir, "inspect", &["tomb-new-00001"]).code, 0);
    let s = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(
        (s["counts"]["purged"].as_u64(), s["balanced"].as_bool()),
        (Some(1), Some(true))
    );
}

#[test]
fn purging_tombstones_inside_the_idempotency_window_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(&dir, vec![record("tomb-fresh-0001", json!({"a": 1}))]);
    change(&dir, "tomb-fresh-0001", |r| {
        make_delivered(r, outbox::time::now_ms() - 3_600_000)
    });
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let refused = outbox(&dir, "purge", &["--before", &tomorrow, "--yes"]);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(
            "purge refused: 1 tombstone was delivered within the idempotency window (24h, since"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(
        outbox(&dir, "inspect", &["tomb-fresh-0001"]).code,
        0,
        "kept"
    );
    // A shorter window (as the service is configured) lets it go.
    let short = outbox_env(
        &dir,
        "purge",
        &["--before", &tomorrow, "--dry-run"],
        &[("OUTBOX_IDEMPOTENCY_WINDOW", "30m")],
    );
    assert_eq!(short.code, 0, "{}", short.stderr);
    assert!(!short.stderr.contains("warning"), "{}", short.stderr);
    let forced = outbox(&dir, "purge", &["--before", &tomorrow, "--yes", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        forced
            .stderr
            .contains("warning: 1 tombstone was delivered within"),
        "{}",
        forced.stderr
    );
    // A purge by date says what it purged, and nothing about erasure.
    assert_eq!(forced.stdout, "purged: 1 delivered tombstone\n");
    assert_eq!(
        outbox(&dir, "inspect", &["tomb-fresh-0001"]).code,
        2,
        "purged"
    );
}
