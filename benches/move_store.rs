//! `outbox move-store` through the binary: how long moving a store of N records takes, from
//! a data directory into PostgreSQL (a throwaway local cluster, fsync on), a rerun that finds
//! everything there, and back into a new data directory. Each figure includes the check that
//! reads both sides again and compares every record's hash.
//!
//! Run: `cargo bench --bench move_store` (needs Debian's `postgresql`).
//! `OUTBOX_BENCH_RECORDS` sets N (default 100,000): 70% delivered tombstones, 20% pending
//! with a retry state, 10% dead letters, as a store inside its idempotency window holds.

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::ops::{outbox, record, wait_released};
use harness::postgres::Postgres;
use outbox::store::{Status, Store};
use serde_json::json;
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("OUTBOX_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let Some(pg) = Postgres::start("move-store bench") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = Store::open(&dir).unwrap();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let id = format!(
            "{:032x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        );
        let mut r = record(
            &id,
            json!({"name": "Maria Lopez", "email": format!("m{i}@example.com"), "message": "We would like a demo for our support team of about forty agents."}),
        );
        match i % 10 {
            0..=6 => {
                r.status = Status::Delivered;
                r.payload = None;
                r.attempts = 1;
                r.delivered_at_ms = Some(r.received_at_ms + 40);
            }
            7 | 8 => {
                r.attempts = 3;
                r.next_attempt_at_ms += 600_000;
                r.last_error = Some("dashboard answered 503".into());
                r.last_status_code = Some(503);
            }
            _ => {
                r.status = Status::Dead;
                r.attempts = 1;
                r.last_status_code = Some(400);
                r.dead_at_ms = Some(r.received_at_ms + 40);
            }
        }
        batch.push(r);
        if batch.len() == 1000 {
            store.put_moved(&std::mem::take(&mut batch)).unwrap();
        }
    }
    store.put_moved(&batch).unwrap();
    store.set_moved_counters(0, 0).unwrap();
    drop(store);
    wait_released(&dir);
    let url = pg.url();
    let timed = |what: &str, dir: &std::path::Path, to: &str| {
        let started = Instant::now();
        let run = outbox(dir, "move-store", &["--to", to, "--store-url", &url]);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
        println!(
            "{what}: {n} records in {secs:.2} s ({:.0} records/s)",
            n as f64 / secs
        );
    };
    println!("move-store, {n} records (70% tombstones, 20% pending, 10% dead)");
    timed("data directory -> PostgreSQL", &dir, "postgres");
    timed("rerun, everything there already", &dir, "postgres");
    timed(
        "PostgreSQL -> new data directory",
        &tmp.path().join("back"),
        "embedded",
    );
}
