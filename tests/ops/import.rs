//! `outbox import-legacy`: the old proxy's files become pending records, once.

use crate::harness;
use crate::harness::ops::*;
use std::path::{Path, PathBuf};

/// A writable copy of the sample files (as the old proxy left them).
fn legacy_copy(into: &Path) -> PathBuf {
    let src = harness::root().join("tests/fixtures/legacy-pending");
    let dst = into.join("pending_submissions");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

const TRUNCATED: &str = "20250116_020000_c0ffee00-0000-4000-8000-000000000000.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_legacy_files_twice_adds_nothing() {
    let app = harness::spawn_app(&[]).await;
    let dir = app.data_dir.clone();
    let tmp = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(tmp.path());
    let l = legacy.to_str().unwrap();

    let dry = outbox(&dir, "import-legacy", &[l, "--dry-run", "--json"]);
    assert_eq!(dry.json()["imported"].as_array().unwrap().len(), 3);
    assert_eq!(
        outbox(&dir, "inspect", &["--json"]).json()["counts"]["accepted"],
        0
    );

    let first = outbox(&dir, "import-legacy", &[l, "--json"]);
    assert_eq!(
        first.code, 1,
        "a bad file is a problem found: {}",
        first.stdout
    );
    assert!(first.via_this_process());
    let r = first.json();
    assert_eq!(r["imported"].as_array().unwrap().len(), 3);
    assert_eq!(r["failed"][0]["file"], TRUNCATED);
    assert!(r["failed"][0]["error"]
        .as_str()
        .unwrap()
        .contains("ends early"));

    // The old enrichment moved out of the payload; a file without a trace ID got one from
    // its content and its time from its name.
    let rec = outbox(
        &dir,
        "inspect",
        &["6f1c2a9e-3b7d-4c1a-9e55-0d2f8b7a1c33", "--json"],
    )
    .json();
    assert_eq!(rec["status"], "pending");
    assert_eq!(rec["enrichment"]["form_type"], "demo_request");
    assert_eq!(rec["enrichment"]["client_ip"], "203.0.113.24");
    assert_eq!(rec["enrichment"]["received_at"], "2025-01-14T09:30:12.418Z");
    assert!(
        rec["payload"].get("client_ip").is_none(),
        "{}",
        rec["payload"]
    );
    assert_eq!(rec["payload"]["company"], "Northwind Health");
    let manual = r["imported"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file"] == "20250115_171903_manual.json")
        .unwrap()["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(manual.starts_with("legacy-"), "{manual}");
    let m = outbox(&dir, "inspect", &[&manual, "--json"]).json();
    assert_eq!(m["enrichment"]["received_at"], "2025-01-15T17:19:03.000Z");

    // Queued as of the import: a months-old file does not look months overdue.
    let summary = outbox(&dir, "inspect", &["--json"]).json();
    assert!(
        summary["oldest_pending_age_secs"].as_i64().unwrap() < 3600,
        "{summary}"
    );

    let second = outbox(&dir, "import-legacy", &[l, "--json"]).json();
    assert_eq!(second["imported"].as_array().unwrap().len(), 0);
    assert_eq!(second["duplicates"].as_array().unwrap().len(), 3);
    let _data = stop(app).await;

    // Offline, a third time, moving the files: still nothing added.
    let third = outbox(&dir, "import-legacy", &[l, "--move"]);
    assert!(third.offline());
    assert!(
        third
            .stdout
            .contains("0 imported, 3 already stored, 1 skipped"),
        "{}",
        third.stdout
    );
    let s = outbox(&dir, "inspect", &["--json"]).json();
    assert_eq!(
        (
            s["counts"]["accepted"].as_u64(),
            s["counts"]["pending"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let left: Vec<_> = std::fs::read_dir(&legacy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        3,
        "the bad file, the README and imported/: {left:?}"
    );
    assert!(left.contains(&TRUNCATED.to_owned()));
    assert_eq!(
        std::fs::read_dir(legacy.join("imported")).unwrap().count(),
        3
    );
}

/// A migration imports before the new service ever ran: the data directory is created. The
/// imported records show the old proxy's date and the import time, each labelled.
#[test]
fn importing_into_a_new_data_directory_creates_it_and_shows_both_times() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = legacy_copy(tmp.path());
    let l = legacy.to_str().unwrap();
    let dir = tmp.path().join("new-data");

    let dry = outbox(&dir, "import-legacy", &[l, "--dry-run"]);
    assert_eq!(dry.code, 2, "{}", dry.stdout);
    assert!(
        dry.stderr.contains(&format!(
            "`outbox import-legacy DIR --data-dir {}`",
            dir.display()
        )),
        "says what to do: {}",
        dry.stderr
    );
    assert!(!dir.exists(), "a dry run creates nothing");

    let run = outbox(&dir, "import-legacy", &[l]);
    assert_eq!(run.code, 1, "the truncated file is skipped: {}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "created a new data directory at {}",
            dir.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("3 imported"), "{}", run.stdout);

    let rec = outbox(&dir, "inspect", &["6f1c2a9e", "--json"]).json();
    assert_eq!(rec["received_at"], "2025-01-14T09:30:12.418Z");
    let imported_at = rec["imported_at"].as_str().expect("imported_at");
    assert!(
        imported_at.starts_with(&chrono::Utc::now().format("%Y-").to_string()),
        "{rec}"
    );
    let listed = outbox_env(
        &dir,
        "inspect",
        &["--list", "--since", "10m"],
        &[("COLUMNS", "160")],
    );
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("6f1c2a9e"))
        .unwrap_or_else(|| panic!("{}", listed.stdout));
    assert!(
        row.contains("2025-01-14 09:30*"),
        "the year, and the mark: {row}"
    );
    assert!(
        listed
            .stdout
            .contains("* imported from the old proxy: RECEIVED is when the old proxy got it"),
        "{}",
        listed.stdout
    );
    let json = outbox(&dir, "inspect", &["--list", "--json"]).json();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|r| r["imported_at"].is_string()),
        "{json}"
    );
}
