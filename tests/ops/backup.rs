//! `outbox backup` and `outbox restore`: a consistent snapshot of a running server under
//! write load, a copy of a stopped directory, and a restore that checks the manifest.

use crate::harness;
use crate::harness::ops::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("outbox-backup.json")).unwrap()).unwrap()
}

fn all_trace_ids(dir: &Path) -> HashSet<String> {
    let rows = outbox(dir, "inspect", &["--list", "--limit", "1000000", "--json"]).json();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Four clients posting distinct submissions (`Idempotency-Key` `{prefix}-{client}-{n}`) to
/// `app` until stopped, keeping the keys answered 202.
struct Writers {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(app: &Arc<harness::TestApp>, prefix: &str) -> Writers {
        let w = Writers {
            acked: Arc::default(),
            refused: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..4)
            .map(|c| {
                let (app, acked, refused, stop) = (
                    app.clone(),
                    w.acked.clone(),
                    w.refused.clone(),
                    w.stop.clone(),
                );
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{prefix}-{c}-{i:06}");
                        let r = app
                            .post_json(
                                &json!({"email": "load@example.com", "n": i}),
                                &[("Idempotency-Key", &key)],
                            )
                            .await;
                        match r.status().as_u16() {
                            202 => acked.lock().unwrap().push(key),
                            _ => _ = refused.fetch_add(1, Ordering::Relaxed),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Writers { tasks, ..w }
    }

    /// Stops them; returns how many posts were not answered 202.
    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.refused.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_holds_every_submission_acknowledged_before_it_began() {
    let app = Arc::new(harness::spawn_app(&[]).await);
    let writers = Writers::start(&app, "load");
    let acked = writers.acked.clone();
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("backup");
    let (dir, d) = (app.data_dir.clone(), dest.clone());
    let run = tokio::task::spawn_blocking(move || {
        outbox(&dir, "backup", &[d.to_str().unwrap(), "--json"])
    })
    .await
    .unwrap();
    let acked_during = acked.lock().unwrap().len() - before.len();
    let refused = writers.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.via_this_process(), "{}", run.stderr);
    assert_eq!(refused, 0, "intake answers 202 all through a backup");
    assert!(acked_during > 0, "writes went on while the backup ran");
    let m = manifest(&dest);
    assert_eq!(run.json(), m);
    assert_eq!(m["method"], "snapshot of a running server");

    let restored = harness::spawn_app_in(&dest, &[]).await;
    let ids = all_trace_ids(&dest);
    let missing: Vec<_> = before.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup but not in it: {missing:?}"
    );
    assert_eq!(ids.len() as u64, m["record_count"].as_u64().unwrap());
    assert_eq!(
        m["counts"]["pending"].as_u64().unwrap(),
        m["record_count"].as_u64().unwrap()
    );
    assert_eq!(
        outbox(&dest, "verify", &[]).code,
        0,
        "the snapshot is consistent"
    );
    stop(restored).await;
    let app = Arc::try_unwrap(app).ok().expect("writers are done");
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_directory_is_copied_and_restore_checks_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        (0..20)
            .map(|i| record(&format!("backup-rec-{i:04}"), json!({"n": i})))
            .collect(),
    );
    let dest = tmp.path().join("copy");
    let run = outbox(&dir, "backup", &[dest.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.offline());
    assert_eq!(manifest(&dest)["record_count"], 20);
    assert_eq!(manifest(&dest)["method"], "copy of a stopped directory");
    let again = outbox(&dir, "backup", &[dest.to_str().unwrap()]);
    assert_eq!(again.code, 2, "a non-empty destination is refused");

    // Restore into a new directory: same records.
    let target = tmp.path().join("restored");
    let src = dest.to_str().unwrap();
    let r = outbox(&target, "restore", &[src]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(all_trace_ids(&target), all_trace_ids(&dir));

    // A non-empty target needs --force, and its old contents are moved aside.
    let refused = outbox(&dir, "restore", &[src]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);

    // A server running on the target is refused; so is one still starting, which holds the
    // directory before its admin socket answers.
    let refused_while_busy = || {
        let busy = outbox(&target, "restore", &[src, "--force"]);
        assert_eq!(busy.code, 2);
        assert!(
            busy.stderr.contains("stop it before restoring"),
            "{}",
            busy.stderr
        );
    };
    let app = harness::spawn_app_in(&target, &[]).await;
    refused_while_busy();
    stop(app).await;
    let starting = outbox::store::Store::open(&target).unwrap();
    refused_while_busy();
    drop(starting);

    // A damaged backup is refused before anything is replaced.
    let original = manifest(&dest);
    let mut m = original.clone();
    m["records_sha256"] = json!("0".repeat(64));
    std::fs::write(dest.join("outbox-backup.json"), m.to_string()).unwrap();
    let damaged = outbox(&target, "restore", &[src, "--force"]);
    assert_eq!(damaged.code, 2);
    assert!(
        damaged.stderr.contains("does not match its manifest"),
        "{}",
        damaged.stderr
    );
    assert_eq!(all_trace_ids(&target).len(), 20, "the target is untouched");

    // With the manifest intact again, --force replaces the target and keeps the old one.
    std::fs::write(dest.join("outbox-backup.json"), original.to_string()).unwrap();
    let forced = outbox(&target, "restore", &[src, "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        forced.stdout.contains("previous contents are in"),
        "{}",
        forced.stdout
    );
    assert_eq!(all_trace_ids(&target).len(), 20);
}

/// Stores 12,000 records of ~1.5 KB in `dir` (in concurrent group commits), then drains
/// them: all but the first 100 are delivered and their tombstones purged. Returns the 100.
/// Big enough that sled's 8 MiB segment, the least a store opened again takes, is small
/// beside the peak.
async fn drained_store(dir: &Path) -> Vec<String> {
    let padding = "x".repeat(1500);
    let ids: Vec<String> = (0..12_000).map(|i| format!("compact-{i:06}")).collect();
    let store = outbox::store::Store::open(dir).unwrap();
    let submits = ids.iter().map(|id| {
        store.submit(record(
            id,
            json!({"email": format!("{id}@example.com"), "note": padding}),
        ))
    });
    for r in futures_util::future::join_all(submits).await {
        r.unwrap();
    }
    let gone: Vec<&str> = ids[100..].iter().map(String::as_str).collect();
    for chunk in gone.chunks(500) {
        store
            .update_many(chunk, |_, _| outbox::store::Change::Purge)
            .unwrap();
    }
    store.sync().unwrap();
    drop(store);
    wait_released(dir);
    ids[..100].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_gives_space_back_after_a_drain_and_keeps_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let kept = drained_store(&dir).await;
    let peak = harness::dir_bytes(&dir);

    let run = outbox(&dir, "compact", &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.offline(), "{}", run.stderr);
    let after = harness::dir_bytes(&dir);
    assert!(
        after * 4 <= peak,
        "the directory should shrink to a quarter or less: {peak} -> {after} bytes"
    );
    assert_eq!(all_trace_ids(&dir), kept.into_iter().collect());
    let verify = outbox(&dir, "verify", &[]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "nothing is left beside the data directory");
    assert!(
        !dir.join(".compacting").exists(),
        "the copy's place is gone"
    );
    println!("compact: {peak} -> {after} bytes; {}", run.stdout.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_of_a_running_server_under_intake_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let kept = drained_store(&dir).await;
    let app = Arc::new(harness::spawn_app_in(&dir, &[]).await);
    let writers = Writers::start(&app, "during");
    let acked = writers.acked.clone();
    let acked_count = || acked.lock().unwrap().len();
    while acked_count() < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = acked_count();
    let d = dir.clone();
    let run = tokio::task::spawn_blocking(move || outbox(&d, "compact", &["--json"]))
        .await
        .unwrap();
    let acked_during = acked_count() - before;
    // Intake goes on on the compacted store.
    let after_swap = acked_count();
    while acked_count() < after_swap + 100 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = writers.stop().await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.via_this_process(), "{}", run.stderr);
    assert_eq!(refused, 0, "intake answers 202 all through a compaction");
    assert!(acked_during > 0, "writes went on while the compaction ran");
    let r = run.json();
    assert_eq!(r["swapped"], true, "{r}");
    let (peak, compacted) = (
        r["bytes_before"].as_u64().unwrap(),
        r["bytes_after"].as_u64().unwrap(),
    );
    assert!(
        compacted * 4 <= peak,
        "the directory should shrink to a quarter or less: {peak} -> {compacted} bytes"
    );
    assert!(!dir.join(".compacting").exists(), "the old log is deleted");
    let verify = outbox(&dir, "verify", &[]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    let app = Arc::try_unwrap(app).ok().expect("writers are done");
    stop(app).await;

    // From disk, after a restart: every acknowledged trace ID is there, once.
    let rows = outbox(&dir, "inspect", &["--list", "--limit", "1000000", "--json"]).json();
    let listed: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap().to_owned())
        .collect();
    let ids: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(ids.len(), listed.len(), "no trace ID is listed twice");
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let want: HashSet<String> = acked.union(&kept.into_iter().collect()).cloned().collect();
    let missing: Vec<_> = want.difference(&ids).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert_eq!(ids, want, "nothing but what was stored");
    assert_eq!(outbox(&dir, "verify", &[]).code, 0);
    println!(
        "online compact: {peak} -> {compacted} bytes, {acked_during} acknowledged during it, \
         writers held off {} ms",
        r["writers_held_ms"]
    );
}
