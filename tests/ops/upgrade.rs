//! Upgrades: a data directory written by a release before store format 3 (records whole in
//! `entries`, no format mark) is read, delivered from and upgraded in place; a directory
//! marked by a newer release is refused by every entry point with exit code 2 and left as it is.

use crate::harness::ops::*;
use outbox::store::format::{stored_format, STORE_FORMAT};
use outbox::store::maintenance::open_raw;
use std::path::Path;

/// Writes golden values of the old formats into a fresh directory the way an old release
/// left them: records in `entries`, nothing in `bodies`, no `meta` mark.
fn old_release_dir(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/golden");
    let db = open_raw(dir).unwrap();
    let entries = db.open_tree("entries").unwrap();
    let mut expected = Vec::new();
    for name in ["v1-pending", "v1-dead", "v1-pending-imported"] {
        let value = std::fs::read(golden.join(format!("{name}.bin"))).unwrap();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let id = record["trace_id"].as_str().unwrap().to_owned();
        entries.insert(id.as_bytes(), value).unwrap();
        expected.push((id, record));
    }
    assert!(db.open_tree("meta").unwrap().is_empty());
    db.flush().unwrap();
    drop((entries, db));
    wait_released(dir);
    expected
}

#[test]
fn a_directory_from_before_format_3_is_read_and_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let expected = old_release_dir(&dir);
    // The old release's indexes and counters are rebuilt from its records.
    let repaired = outbox(&dir, "verify", &["--repair", "--json"]);
    assert!(
        repaired.code == 0 || repaired.code == 1,
        "{}",
        repaired.stderr
    );
    let clean = outbox(&dir, "verify", &["--json"]);
    assert_eq!(clean.code, 0, "{}\n{}", clean.stdout, clean.stderr);
    for (id, want) in &expected {
        let shown = outbox(&dir, "inspect", &[id, "--json"]);
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        let got = shown.json();
        let status = want["status"].as_str().unwrap().to_lowercase();
        assert_eq!(got["status"], status.as_str(), "{id}");
        let payload: serde_json::Value =
            serde_json::from_str(want["payload"].as_str().unwrap()).unwrap();
        assert_eq!(got["payload"], payload, "{id}: the payload is read whole");
    }
    // The dead record's next change (a replay) rewrites it in the current format: state in
    // `entries`, payload in `bodies`, read back whole.
    let dead = &expected[1];
    let replayed = outbox(&dir, "replay", &[&dead.0, "--json"]);
    assert_eq!(replayed.code, 0, "{}\n{}", replayed.stdout, replayed.stderr);
    let shown = outbox(&dir, "inspect", &[&dead.0, "--json"]).json();
    assert_eq!(shown["status"], "pending");
    let payload: serde_json::Value =
        serde_json::from_str(dead.1["payload"].as_str().unwrap()).unwrap();
    assert_eq!(shown["payload"], payload);
    wait_released(&dir);
    let db = open_raw(&dir).unwrap();
    assert_eq!(stored_format(&db).unwrap(), STORE_FORMAT);
    let value = db
        .open_tree("entries")
        .unwrap()
        .get(&dead.0)
        .unwrap()
        .unwrap();
    assert_eq!(value[0], outbox::store::record::FORMAT_V3);
    assert_eq!(db.open_tree("bodies").unwrap().len(), 1);
    drop(db);
    wait_released(&dir);
    let after = outbox(&dir, "verify", &["--json"]);
    assert_eq!(after.code, 0, "{}\n{}", after.stdout, after.stderr);
}

#[test]
fn a_directory_from_a_newer_release_is_refused_with_exit_2_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![record("newer-fmt-0001", serde_json::json!({"n": 1}))],
    );
    wait_released(&dir);
    {
        let db = open_raw(&dir).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", &(STORE_FORMAT + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    wait_released(&dir);
    for (sub, args) in [
        ("inspect", vec!["--json"]),
        ("verify", vec!["--json"]),
        ("serve", vec!["--listen", "127.0.0.1:0"]),
    ] {
        let run = outbox(&dir, sub, &args);
        assert_eq!(run.code, 2, "{sub}: {}", run.stderr);
        assert!(
            run.stderr.contains("newer outbox") && run.stderr.contains("restore a backup"),
            "{sub}: {}",
            run.stderr
        );
    }
    let db = open_raw(&dir).unwrap();
    assert_eq!(
        stored_format(&db).unwrap(),
        STORE_FORMAT + 1,
        "not marked down"
    );
    assert_eq!(
        db.open_tree("entries").unwrap().len(),
        1,
        "records untouched"
    );
}
