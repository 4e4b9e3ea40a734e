//! `ops/backup.sh` run by bash against a running `outbox serve`: two runs started together
//! both succeed into distinct, complete, private backups; pruning removes old complete backups
//! and old incomplete leftovers but never the newest complete one, and runs after a failed
//! backup too.

use crate::harness;
use crate::harness::{free_port, spawn_binary_async};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MANIFEST: &str = "outbox-backup.json";

fn script() -> PathBuf {
    harness::root().join("ops/backup.sh")
}

fn backup_sh(data: &Path, root: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(script())
        .env("OUTBOX_DATA_DIR", data)
        .env("OUTBOX_BACKUP_ROOT", root)
        .env("OUTBOX_BACKUP_KEEP_DAYS", "14")
        .env("OUTBOX_BIN", env!("CARGO_BIN_EXE_outbox"))
        .env_remove("OUTBOX_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A backup directory `name` in `root`, complete (with a manifest) or not, last changed
/// `age` ago (as `touch -d` reads it, e.g. "30 days ago").
fn fake_backup(root: &Path, name: &str, complete: bool, age: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    if complete {
        std::fs::write(d.join(MANIFEST), "{}").unwrap();
    }
    let touched = Command::new("touch")
        .args(["-d", age])
        .arg(&d)
        .status()
        .unwrap();
    assert!(touched.success());
    d
}

fn backups(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            assert_private(&e.path());
        } else {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }
}

#[tokio::test]
async fn two_runs_in_one_second_both_back_up_and_pruning_keeps_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, root) = (tmp.path().join("data"), tmp.path().join("backups"));
    let port = free_port();
    let _server = spawn_binary_async(&data, port, &[]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let r = client
            .post(format!("http://127.0.0.1:{port}/api/collect"))
            .json(&json!({"email": format!("b{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }

    std::fs::create_dir(&root).unwrap();
    let old_complete = fake_backup(&root, "outbox-20200101T000000Z", true, "30 days ago");
    let old_leftover = fake_backup(&root, "outbox-20200102T000000Z", false, "30 days ago");
    let recent_complete = fake_backup(&root, "outbox-20200103T000000Z", true, "3 days ago");
    let running = fake_backup(&root, "outbox-20200104T000000Z", false, "1 hour ago");

    // Two runs started together, well within one second of each other.
    let started = std::time::Instant::now();
    let (a, b) = (
        backup_sh(&data, &root).spawn().unwrap(),
        backup_sh(&data, &root).spawn().unwrap(),
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "first run: {}", text(&a));
    assert!(b.status.success(), "second run: {}", text(&b));
    eprintln!("two backup.sh runs took {:?}", started.elapsed());

    let new: Vec<String> = backups(&root)
        .into_iter()
        .filter(|n| !n.starts_with("outbox-2020"))
        .collect();
    assert_eq!(new.len(), 2, "two distinct backups: {new:?}");
    for name in &new {
        let dir = root.join(name);
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(m["record_count"], 5, "{name}: {m}");
        assert_eq!(m["method"], "snapshot of a running server");
        assert_private(&dir);
    }
    assert!(
        !old_complete.exists(),
        "a complete backup past KEEP_DAYS is pruned"
    );
    assert!(
        !old_leftover.exists(),
        "an incomplete leftover over a day old is pruned"
    );
    assert!(recent_complete.exists(), "a recent backup stays");
    assert!(
        running.exists(),
        "a recent incomplete directory may be a run in progress"
    );

    // A failed backup (no data directory there) exits non-zero, leaves nothing behind, and
    // still prunes; the newest complete backup stays even when it is old.
    let lone = tmp.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    let older = fake_backup(&lone, "outbox-20190101T000000Z", true, "40 days ago");
    let newest = fake_backup(&lone, "outbox-20190201T000000Z", true, "30 days ago");
    let leftover = fake_backup(&lone, "outbox-20190301T000000Z", false, "2 days ago");
    let failed = backup_sh(&tmp.path().join("no-such-data"), &lone)
        .output()
        .unwrap();
    assert!(!failed.status.success(), "{}", text(&failed));
    assert!(
        !older.exists(),
        "pruned after the failure: {}",
        text(&failed)
    );
    assert!(!leftover.exists(), "{}", text(&failed));
    assert!(newest.exists(), "the newest complete backup always stays");
    assert_eq!(
        backups(&lone),
        ["outbox-20190201T000000Z"],
        "the failed run removed its own incomplete directory"
    );
}

/// The script's own usage line names where the package installs it (Cargo.toml's
/// `[package.metadata.deb]` assets), so an operator who copies it into cron runs the file.
#[test]
fn the_header_names_the_path_the_package_installs() {
    let cargo: toml::Table =
        toml::from_str(&std::fs::read_to_string(harness::root().join("Cargo.toml")).unwrap())
            .unwrap();
    let installed = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a[0].as_str() == Some("ops/backup.sh"))
        .map(|a| format!("/{}", a[1].as_str().unwrap()))
        .expect("the package installs ops/backup.sh");
    let text = std::fs::read_to_string(script()).unwrap();
    let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
    let named: Vec<&&str> = header.iter().filter(|l| l.contains("backup.sh")).collect();
    assert!(!named.is_empty(), "{header:?}");
    for l in named {
        assert!(l.contains(&installed), "{l:?} should name {installed}");
    }
}
