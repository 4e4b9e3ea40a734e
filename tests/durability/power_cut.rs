//! Power loss during intake: the data directory lives on a FUSE filesystem that keeps only
//! what was fsynced or fdatasynced ([`powerfs`]). The real binary is killed with SIGKILL at
//! random moments (16 times) while clients post, then every write not yet synced is taken
//! back, as a power cut would; after each restart every trace ID that got a 2xx must be
//! stored, once. A second run does the same with delivery on: after every cut, each trace ID
//! the dashboard received is one the store still holds (the worker sends only durable
//! records), the accounting balances, and in the end every acknowledged one is delivered.
//! A third run starts `outbox compact` against the server before each cut.
//! (The SIGKILL test in `crash` cannot see this: the kernel keeps a killed process's writes.)
//!
//! Needs root and `/dev/fuse`. Without them the test says SKIP loudly and passes, except under
//! CI (`CI` set), where it fails.

use crate::harness;
use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::tools;
use crate::kill;
use crate::powerfs;
use rand::Rng;
use std::collections::HashSet;
use std::time::Duration;

const CYCLES: usize = 16;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_random_moments_loses_no_acknowledged_submission() {
    let Some(m) = mounted_data_dir() else {
        return;
    };
    let (fs, dir) = (&m.fs, m.dir.clone());
    let mut acked = HashSet::new();
    let mut log_cuts = 0;
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let after = Duration::from_millis(rng.gen_range(100..900));
        let prefix = format!("cut-{cycle:02}");
        acked.extend(
            kill::post_then_kill(&dir, &[], CLIENTS, &prefix, after)
                .await
                .0,
        );
        let cut = fs.cut();
        if cut.changed.iter().any(|p| p == "data/db") {
            log_cuts += 1;
        }
        println!(
            "cycle {cycle}: {} acknowledged so far; the cut took back writes to {:?}",
            acked.len(),
            cut.changed
        );
    }
    assert!(
        acked.len() > CYCLES * 10,
        "the load should get through between cuts ({})",
        acked.len()
    );
    // Otherwise the harness proved nothing: the cuts must have caught unsynced log writes.
    assert!(
        log_cuts > 0,
        "no cut found unsynced writes in sled's log; the harness is not exercised"
    );
    assert!(fs.syncs() > 0);
    kill::assert_each_acked_stored_once(&dir, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_while_delivering_lose_nothing_and_the_dashboard_gets_only_stored_records() {
    let Some(m) = mounted_data_dir() else {
        return;
    };
    let (fs, dir) = (&m.fs, m.dir.clone());
    let dash = Dashboard::start().await;
    // A little latency keeps deliveries in flight when the cut lands.
    dash.set_reply(Reply::ok().delay(Duration::from_millis(2)));
    let url = dash.url();
    let flags = [
        "--dashboard-url",
        &url,
        "--ingest-key",
        "power-cut-ingest-key-0123456789",
        "--delivery-concurrency",
        "16",
    ];
    let mut acked = HashSet::new();
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let after = Duration::from_millis(rng.gen_range(100..900));
        let prefix = format!("dcut-{cycle:02}");
        acked.extend(
            kill::post_then_kill(&dir, &flags, CLIENTS, &prefix, after)
                .await
                .0,
        );
        fs.cut();
        let received: HashSet<String> = dash.requests().iter().map(|r| r.trace_id()).collect();
        let store = outbox::store::Store::open(&dir).expect("the store opens after a cut");
        let unknown: Vec<&String> = received
            .iter()
            .filter(|id| store.get(id).unwrap().is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "cycle {cycle}: the dashboard got {} records the store does not hold, e.g. {:?}",
            unknown.len(),
            &unknown[..unknown.len().min(5)]
        );
        let counts = store.counts().unwrap();
        assert!(counts.balanced(), "cycle {cycle}: {counts:?}");
        println!(
            "cycle {cycle}: {} acknowledged, {} received by the dashboard, {counts:?}",
            acked.len(),
            received.len()
        );
    }
    assert!(
        acked.len() > CYCLES * 10,
        "load got through ({})",
        acked.len()
    );
    assert!(
        dash.count() > CYCLES * 10,
        "deliveries ran between the cuts ({})",
        dash.count()
    );
    // A last run without a cut delivers the rest, with the same Idempotency-Key.
    let port = harness::free_port();
    let last = harness::spawn_binary_async(&dir, port, &flags).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = dash.requests().iter().map(|r| r.trace_id()).collect();
        let missing = acked.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} acknowledged submissions never reached the dashboard",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every delivery, first or repeated, names its record in the key and in the body.
    assert!(dash
        .requests()
        .iter()
        .all(|r| r.json()["trace_id"].as_str() == Some(r.trace_id().as_str())));
    drop(last);
}

/// Power cuts while `outbox compact` runs against the server under intake: whichever step of
/// the copy and swap a cut lands in, the store opens afterwards with every acknowledged
/// submission, once, and without the copy's directory. Before each cycle a drained backlog
/// (stored, then purged) leaves dead space, so that each compaction has space to give back
/// and swaps its copy in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_during_compaction_lose_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(m) = mounted_data_dir() else {
        return;
    };
    let (fs, dir) = (&m.fs, m.dir.clone());
    let mut acked = HashSet::new();
    let mut rng = rand::thread_rng();
    let (swapped, unfinished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for cycle in 0..CYCLES {
        drained_backlog(&dir, cycle).await;
        let start = Duration::from_millis(rng.gen_range(50..400));
        // Every fourth cut comes late enough for a compaction to finish even on a slow
        // machine, so that cuts also land after swaps.
        let late = if cycle % 4 == 3 { 3000 } else { 0 };
        let after = start + Duration::from_millis(late + rng.gen_range(20..1500));
        let prefix = format!("ccut-{cycle:02}");
        let (d, swapped_, unfinished_) = (dir.clone(), swapped.clone(), unfinished.clone());
        let compact = move || {
            std::thread::sleep(start);
            let run = crate::harness::ops::outbox(&d, "compact", &["--json"]);
            match run.code {
                0 if run.json()["swapped"] == true => swapped_.fetch_add(1, Ordering::Relaxed),
                0 => 0,
                _ => unfinished_.fetch_add(1, Ordering::Relaxed),
            };
        };
        // Two clients: the records kept, copied whole each time, grow slower.
        acked.extend(
            kill::post_then_kill_during(&dir, &[], 2, &prefix, after, compact)
                .await
                .0,
        );
        let cut = fs.cut();
        kill::assert_each_acked_stored_once(&dir, &acked);
        assert!(
            !dir.join(".compacting").exists(),
            "cycle {cycle}: the open removes a half-made copy"
        );
        println!(
            "cycle {cycle}: {} acknowledged so far; the cut took back writes to {:?}",
            acked.len(),
            cut.changed
        );
    }
    let (swapped, unfinished) = (
        swapped.load(Ordering::Relaxed),
        unfinished.load(Ordering::Relaxed),
    );
    println!(
        "of {CYCLES} compactions, {swapped} swapped in their copy and {unfinished} were cut short"
    );
    assert!(
        acked.len() > CYCLES * 10,
        "load got through ({})",
        acked.len()
    );
    assert!(
        swapped > 0 && unfinished > 0,
        "cuts should land both during and after compactions ({swapped} swapped, {unfinished} cut short)"
    );
}

/// Stores 3,000 forms of 4 KB in the stopped store in `dir` and purges them: dead space.
async fn drained_backlog(dir: &std::path::Path, cycle: usize) {
    let store = outbox::store::Store::open(dir).expect("the store opens");
    let ids: Vec<String> = (0..3000)
        .map(|i| format!("junk-{cycle:02}-{i:05}"))
        .collect();
    let note = "x".repeat(4000);
    let submits = ids.iter().map(|id| {
        store.submit(harness::ops::record(
            id,
            serde_json::json!({"email": "junk@example.com", "note": note}),
        ))
    });
    for r in futures_util::future::join_all(submits).await {
        r.unwrap();
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in ids.chunks(500) {
        store
            .update_many(chunk, |_, _| outbox::store::Change::Purge)
            .unwrap();
    }
    store.sync().unwrap();
}

/// The harness itself, through the kernel: what was synced survives a cut, the rest does not,
/// and a read after the cut sees the old bytes (no page cache serves the lost ones).
#[test]
fn the_mount_keeps_synced_writes_and_forgets_the_rest_at_a_cut() {
    use std::io::{Seek, SeekFrom, Write};
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = mount_or_skip(tmp.path()) else {
        return;
    };
    let path = tmp.path().join("log");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"synced part|").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"lost tail").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"SYNCED").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"SYNCED part|lost tail");
    let never_synced = tmp.path().join("conf");
    std::fs::write(&never_synced, b"written, closed, never synced").unwrap();
    drop(f);
    let cut = fs.cut();
    assert_eq!(cut.changed, ["conf", "log"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"synced part|");
    assert_eq!(std::fs::read(&never_synced).unwrap(), b"");

    // An exchange swaps the two names in one step; the file it pushed out, unlinked after,
    // still takes a sync through the handle open on it, as compaction's old log does.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::write(&a, b"first").unwrap();
    std::fs::write(&b, b"second").unwrap();
    let open_a = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    nix::fcntl::renameat2(None, &a, None, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"second");
    assert_eq!(std::fs::read(&b).unwrap(), b"first");
    std::fs::remove_file(&b).unwrap();
    (&open_a).write_all(b", still there").unwrap();
    open_a.sync_all().unwrap();
    assert!(!b.exists());
}

/// A fresh mount and the path of a data directory on it (not created). Fields drop in
/// order: the mount goes before the temporary directory it sits in.
struct Mount {
    fs: powerfs::Mounted,
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn mounted_data_dir() -> Option<Mount> {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = mount_or_skip(&mnt)?;
    Some(Mount {
        fs,
        dir: mnt.join("data"),
        _tmp: tmp,
    })
}

fn mount_or_skip(at: &std::path::Path) -> Option<powerfs::Mounted> {
    let why = if !std::path::Path::new("/dev/fuse").exists() {
        "/dev/fuse is missing".to_owned()
    } else {
        match powerfs::Mounted::mount(at) {
            Ok(m) => return Some(m),
            Err(e) => format!("the FUSE mount failed ({e}); it needs root and /dev/fuse"),
        }
    };
    tools::runnable("the power-cut test", Some(why));
    None
}
