//! Power loss during intake: the data directory lives on a FUSE filesystem that keeps only
//! what was fsynced or fdatasynced ([`powerfs`]). The real binary is killed with SIGKILL at
//! random moments (16 times) while clients post, then every write not yet synced is taken
//! back, as a power cut would; after each restart every trace ID that got a 2xx must be
//! stored, once.
//! (The SIGKILL test in crash.rs cannot see this: the kernel keeps a killed process's writes.)
//!
//! Needs root and `/dev/fuse`. Without them the test says SKIP loudly and passes, except under
//! CI (`CI` set), where it fails.

mod common;
mod powerfs;

use rand::Rng;
use std::collections::HashSet;
use std::time::Duration;

const CYCLES: usize = 16;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_random_moments_loses_no_acknowledged_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(fs) = mount_or_skip(&mnt) else {
        return;
    };
    let dir = mnt.join("data");
    let mut acked = HashSet::new();
    let mut log_cuts = 0;
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let after = Duration::from_millis(rng.gen_range(100..900));
        let prefix = format!("cut-{cycle:02}");
        acked.extend(
            common::post_then_kill(&dir, &[], CLIENTS, &prefix, after)
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
    common::assert_each_acked_stored_once(&dir, &acked);
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
    if std::env::var_os("CI").is_some() {
        panic!("the power-cut test must run in CI: {why}");
    }
    eprintln!("\n*** SKIP power_cut: {why} ***\n");
    None
}
