//! The disk settings and a full disk, through the real binary: a `min-free-disk` that can
//! never be met, or is not met now, is said at start (log and `/health/detailed`); and the
//! runbook's disk-full recovery on a small tmpfs, end to end.

use crate::harness::{free_port, log_lines, spawn_binary_logged};
use std::path::Path;

/// Total and available bytes of the filesystem holding `path`.
fn filesystem(path: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    let f = st.fragment_size() as u64;
    (st.blocks() as u64 * f, st.blocks_available() as u64 * f)
}

async fn detailed(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/health/detailed"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Starts a server with `min_free` and returns its start-up warning (log) and health warnings.
async fn start_with(min_free: u64) -> (Vec<serde_json::Value>, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("log");
    let port = free_port();
    let min = min_free.to_string();
    let child = spawn_binary_logged(&data, port, &["--min-free-disk", &min], &log).await;
    let d = detailed(port).await;
    drop(child);
    (log_lines(&log, "min-free-disk cannot be met"), d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_free_disk_larger_than_the_filesystem_is_said_at_start() {
    let (total, _) = filesystem(&std::env::temp_dir());
    let (logged, d) = start_with(total + (1 << 30)).await;
    assert_eq!(logged.len(), 1, "one warning at start");
    let line = &logged[0];
    assert_eq!(line["level"], "WARN");
    assert!(
        line["why"]
            .as_str()
            .unwrap()
            .contains("larger than the whole filesystem"),
        "{line}"
    );
    let warnings = d["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("min-free-disk can never be met")),
        "{d}"
    );
    assert_eq!(d["reasons"], serde_json::json!(["disk_low"]), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_free_disk_not_met_now_is_said_at_start() {
    let (total, free) = filesystem(&std::env::temp_dir());
    assert!(
        free + (64 << 20) < total,
        "this test needs a filesystem with something on it"
    );
    let (logged, d) = start_with(free + (32 << 20)).await;
    assert_eq!(logged.len(), 1, "one warning at start");
    assert!(
        logged[0]["why"].as_str().unwrap().contains("not met now"),
        "{}",
        logged[0]
    );
    let warnings = d["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("min-free-disk is not met now")),
        "{d}"
    );
    // A setting that is met says nothing.
    let (logged, d) = start_with(1 << 20).await;
    assert!(logged.is_empty(), "{logged:?}");
    assert!(!d["warnings"].to_string().contains("min-free-disk"), "{d}");
}
