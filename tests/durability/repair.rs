//! `outbox verify --repair` killed with SIGKILL at random moments while it rebuilds the
//! indexes of a store of some thousands of records: the next open finishes the rebuild, and
//! every pending record is then delivered to the stub dashboard.

use crate::harness::dashboard::Dashboard;
use crate::harness::ops::{record, wait_released};
use crate::harness::{bin, spawn_app_in};
use outbox::store::maintenance::open_raw;
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Enough that a rebuild outlasts sled's background flush (every 500 ms), which writes a
/// half-done rebuild to disk where a kill finds it, and few enough to deliver in seconds.
const RECORDS: usize = 12_000;
/// Kills until two fell inside a rebuild (a kill that did leaves the rebuild's mark), at
/// most this many: the rebuild is about a third of a repair's time.
const MAX_KILLS: usize = 12;

/// Makes the `dead` counter disagree with the records, so that `--repair` rebuilds (records
/// and indexes stay as they are). Returns whether the last run was cut off inside a rebuild
/// (its mark is still in `meta`).
fn miscount(dir: &Path) -> bool {
    wait_released(dir);
    let db = open_raw(dir).unwrap();
    let cut_in_rebuild = db
        .open_tree("meta")
        .unwrap()
        .get("rebuilding")
        .unwrap()
        .is_some();
    db.open_tree("counters")
        .unwrap()
        .insert("dead", &3u64.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    wait_released(dir);
    cut_in_rebuild
}

/// `outbox verify --repair` on the stopped `dir`, killed after `after` (or run to its end).
fn repair(dir: &Path, after: Option<Duration>) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["verify", "--repair", "--data-dir"])
        .arg(dir)
        .env_remove("OUTBOX_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run outbox verify");
    if let Some(after) = after {
        std::thread::sleep(after);
        let _ = child.kill();
    }
    child.wait().unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_killed_while_it_rebuilds_loses_no_pending_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let ids: Vec<String> = (0..RECORDS)
        .map(|i| format!("repair-kill-{i:05}"))
        .collect();
    {
        let store = outbox::store::Store::open(&dir).unwrap();
        for chunk in ids.chunks(1000) {
            let posts = chunk
                .iter()
                .map(|id| store.submit(record(id, json!({"n": id}))));
            for r in futures_util::future::join_all(posts).await {
                r.unwrap();
            }
        }
    }

    // A whole repair, timed: the kills fall within its length.
    tokio::task::block_in_place(|| miscount(&dir));
    let whole = tokio::task::block_in_place(|| repair(&dir, None));
    let (mut kills, mut cut_in_rebuild) = (0, 0);
    while kills < MAX_KILLS && cut_in_rebuild < 2 {
        kills += 1;
        // A repair opens the store, checks it, rebuilds, and checks again.
        let at = whole.mul_f64(rand::thread_rng().gen_range(0.3..0.85));
        tokio::task::block_in_place(|| {
            repair(&dir, Some(at));
            cut_in_rebuild += usize::from(miscount(&dir));
        });
    }
    eprintln!(
        "a whole repair took {whole:?}; {cut_in_rebuild} of {kills} kills fell inside the rebuild"
    );

    let dashboard = Dashboard::start().await;
    let url = dashboard.url();
    let app = spawn_app_in(
        &dir,
        &[
            "--dashboard-url",
            &url,
            "--ingest-key",
            "repair-kill-ingest-key",
        ],
    )
    .await;
    let all: HashSet<String> = ids.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let got: HashSet<String> = dashboard.requests().iter().map(|r| r.trace_id()).collect();
        let missing: Vec<&String> = all.difference(&got).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        missing, 0,
        "pending records never delivered after the kills"
    );
    app.stop().await;
    assert!(cut_in_rebuild > 0, "no kill fell inside a rebuild");
}
