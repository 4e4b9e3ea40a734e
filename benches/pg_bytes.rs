//! Bytes per record in the PostgreSQL store over a record's life: the table (heap), its
//! indexes, its TOAST and maps, and the WAL written, after N submissions (pending), after
//! delivering them all (tombstones), after a VACUUM, and after the purge and a VACUUM.
//!
//! The records are the ~300-byte form of the intake benches, submitted by 64 concurrent
//! submitters (so group commits of realistic size), delivered as the delivery worker does
//! (a claim of up to [`BATCH`], then one settle writing each a tombstone without payload),
//! and purged with the store's own purge. Sizes are `pg_relation_size` (heap),
//! `pg_indexes_size` and `pg_table_size - pg_relation_size` (TOAST, free space and
//! visibility maps); WAL is the difference of `pg_current_wal_lsn()` across each step,
//! starting right after a CHECKPOINT, so the first change of each page after it carries a
//! full-page image as it would in production. The delivery's WAL is also split between the
//! claims and the settles.
//!
//! Run: `cargo bench --bench pg_bytes` (needs Debian's `postgresql`).
//! `OUTBOX_BENCH_RECORDS` sets N (default 100,000).

#[path = "support/form.rs"]
mod form;
#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/pg.rs"]
mod pg_bench;

use form::{record, BODY};
use outbox::store::{Change, Status, SubmitOutcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent submitters, as the intake benches' 64 connections.
const CLIENTS: u64 = 64;
/// Records per claim and settle while delivering, as the delivery worker's batches.
const BATCH: usize = 256;

/// The table's sizes now and the WAL position, in bytes.
struct Sizes {
    heap: i64,
    indexes: i64,
    toast_and_maps: i64,
    wal: i64,
}

async fn sizes(c: &tokio_postgres::Client) -> Sizes {
    let r = c
        .query_one(
            "SELECT pg_relation_size('outbox_records'), pg_indexes_size('outbox_records'), \
               pg_table_size('outbox_records') - pg_relation_size('outbox_records'), \
               pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .unwrap();
    Sizes {
        heap: r.get(0),
        indexes: r.get(1),
        toast_and_maps: r.get(2),
        wal: r.get(3),
    }
}

/// One line of the table: sizes per record, and the WAL written since `since` per record.
fn report(step: &str, n: u64, s: &Sizes, since: &Sizes, secs: f64) {
    let per = |b: i64| b as f64 / n as f64;
    println!(
        "{step:<28} heap {:>7.1}  indexes {:>6.1}  toast+maps {:>5.1}  total {:>7.1}  WAL {:>7.1}   ({:.1} s)",
        per(s.heap),
        per(s.indexes),
        per(s.toast_and_maps),
        per(s.heap + s.indexes + s.toast_and_maps),
        per(s.wal - since.wal),
        secs
    );
}

fn main() {
    let n = pg_bench::env_num("OUTBOX_BENCH_RECORDS", 100_000);
    pg_bench::run("pg_bytes bench", |store, client| async move {
        client.batch_execute("CHECKPOINT").await.unwrap();
        println!(
            "{n} records of a {}-byte form, PostgreSQL {}; bytes per record",
            BODY.len(),
            harness::postgres::bin_dir().unwrap().display()
        );
        let start = sizes(&client).await;

        let t = Instant::now();
        let seq = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (store, seq) = (store.clone(), seq.clone());
                tokio::spawn(async move {
                    loop {
                        let i = seq.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let out = store.submit(record(i)).await.unwrap();
                        assert!(matches!(out, SubmitOutcome::Stored(_)));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let submitted = sizes(&client).await;
        report(
            "after the submissions",
            n,
            &submitted,
            &start,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        let (mut delivered, mut claim_wal, mut settle_wal) = (0u64, 0i64, 0i64);
        loop {
            let now = outbox::time::now_ms();
            let before = sizes(&client).await.wal;
            let claimed = store.claim_due(now, BATCH).await.unwrap();
            let claimed_at = sizes(&client).await.wal;
            claim_wal += claimed_at - before;
            if claimed.records.is_empty() {
                break;
            }
            let ids: Vec<&str> = claimed
                .records
                .iter()
                .map(|r| r.trace_id.as_str())
                .collect();
            let out = store
                .settle(&ids, move |_, r| {
                    let mut d = r.clone();
                    d.status = Status::Delivered;
                    d.attempts += 1;
                    d.payload = None;
                    d.last_attempt_at_ms = Some(now);
                    d.last_status_code = Some(200);
                    d.delivered_at_ms = Some(now);
                    Change::Put(d)
                })
                .await
                .unwrap();
            delivered += out.len() as u64;
            settle_wal += sizes(&client).await.wal - claimed_at;
        }
        assert_eq!(delivered, n);
        let tombstones = sizes(&client).await;
        report(
            "after delivering (tombstones)",
            n,
            &tombstones,
            &submitted,
            t.elapsed().as_secs_f64(),
        );
        println!(
            "  of which claims (the lease written to each row) {:.1}, settles (the tombstone) {:.1}",
            claim_wal as f64 / n as f64,
            settle_wal as f64 / n as f64
        );

        let t = Instant::now();
        client.batch_execute("VACUUM outbox_records").await.unwrap();
        let vacuumed = sizes(&client).await;
        report(
            "after a VACUUM",
            n,
            &vacuumed,
            &tombstones,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        let purged = store
            .purge_delivered_before(i64::MAX, usize::MAX)
            .await
            .unwrap();
        assert_eq!(purged, n);
        let after_purge = sizes(&client).await;
        report(
            "after the purge",
            n,
            &after_purge,
            &vacuumed,
            t.elapsed().as_secs_f64(),
        );

        let t = Instant::now();
        client.batch_execute("VACUUM outbox_records").await.unwrap();
        let end = sizes(&client).await;
        report(
            "after the purge and a VACUUM",
            n,
            &end,
            &after_purge,
            t.elapsed().as_secs_f64(),
        );
        println!(
            "WAL over the whole life: {:.1} bytes per record",
            (end.wal - start.wal) as f64 / n as f64
        );
        let c = store.counts().await.unwrap();
        assert!(c.balanced() && c.purged == n, "{c:?}");
    });
}
