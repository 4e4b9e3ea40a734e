//! Erasing an address from the backups too: `outbox purge --erase-email` run against a
//! backup directory (what the README and the runbook tell the operator to do for each one)
//! leaves no trace of the address in any of its files, and the backup still restores.

use crate::harness::ops::*;
use serde_json::json;
use std::path::Path;

const ADDRESS: &str = "jo.doe@example.com";

/// Files under `dir` whose bytes hold `needle` (any letter case).
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let needle = needle.to_ascii_lowercase();
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_holding(&p, &needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            let lower = bytes.to_ascii_lowercase();
            if lower.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn erasing_from_each_backup_leaves_no_trace_and_the_backup_still_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![
            record(
                "erase-bk-jo-001",
                json!({"email": "Jo.Doe@Example.com", "message": "hi"}),
            ),
            record(
                "erase-bk-keep-1",
                json!({"email": "keep@example.com", "message": "hi"}),
            ),
        ],
    );
    let backups = tmp.path().join("backups");
    let backup = backups.join("outbox-20261206T230000Z-1");
    let b = backup.to_str().unwrap();
    let made = outbox(&dir, "backup", &[b]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(
        !files_holding(&backup, ADDRESS).is_empty(),
        "the backup holds it"
    );

    let live = outbox(&dir, "purge", &["--erase-email", ADDRESS, "--yes"]);
    assert_eq!(live.code, 0, "{}", live.stderr);

    // The runbook's procedure, for each backup directory.
    let run = outbox(
        &backup,
        "purge",
        &["--erase-email", ADDRESS, "--yes", "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["erased"], json!(["erase-bk-jo-001"]));
    assert!(run.stderr.contains("backup rewritten"), "{}", run.stderr);
    assert_eq!(
        files_holding(&backup, ADDRESS),
        Vec::<String>::new(),
        "no file of the backup holds the address"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("outbox-backup.json")).unwrap()).unwrap();
    assert!(manifest["erased_at"].is_string(), "{manifest}");
    assert_eq!(manifest["record_count"], 1, "{manifest}");

    // It restores (its manifest matches its records), without the address.
    let restored = tmp.path().join("restored");
    let r = outbox(&restored, "restore", &[b]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(outbox(&restored, "inspect", &["erase-bk-keep-1"]).code, 0);
    assert_eq!(outbox(&restored, "inspect", &["erase-bk-jo-001"]).code, 2);
    assert_eq!(outbox(&restored, "verify", &[]).code, 0);
    // Nothing is left beside the backup.
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["outbox-20261206T230000Z-1"]);
}
