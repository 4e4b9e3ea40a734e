//! What one read of the PostgreSQL store's accounting counts costs on a large table, and what
//! a `/metrics` scrape costs with the paced sample (`PgStore::sampled_counts`).
//!
//! The table is filled in SQL (`generate_series`, the rows as the store writes them): N rows,
//! a tenth pending and the rest delivered tombstones inside the idempotency window, which is
//! what a busy site's table holds; then `VACUUM ANALYZE`, as autovacuum would have done.
//! `counts()` is timed [`READS`] times (it scans every row); a scrape is timed as the service
//! takes it, through `sampled_counts()`: the first reads, those within the pace are served
//! from the sample. The time is the server's scan; the client's build profile does not
//! matter, so `--profile dev` spares a release build.
//!
//! Run: `cargo bench --profile dev --bench pg_counts` (needs Debian's `postgresql`).
//! `OUTBOX_BENCH_RECORDS` sets N (default 500,000).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/pg.rs"]
mod pg_bench;

use outbox::store::postgres::pace;
use std::time::{Duration, Instant};

/// Reads of `counts()` timed.
const READS: usize = 9;

fn main() {
    let n = pg_bench::env_num("OUTBOX_BENCH_RECORDS", 500_000) as i64;
    pg_bench::run("pg_counts bench", |store, client| async move {
        let t = Instant::now();
        let now = outbox::time::now_ms();
        client
            .execute(
                "INSERT INTO outbox_records (trace_id, status, attempts, received_at_ms, \
                   received_at, due_at_ms, payload_hash, payload, client_ip, src, form_type, \
                   delivered_at_ms) \
                 SELECT 'trace-' || lpad(i::text, 10, '0'), \
                   CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'delivered' END, \
                   CASE WHEN i % 10 = 0 THEN 0 ELSE 1 END, $1 - i, 'received', $1 - i, \
                   sha256(i::text::bytea), \
                   CASE WHEN i % 10 = 0 THEN repeat('x', 300) END, '203.0.113.9', 'bench', \
                   'contact', CASE WHEN i % 10 = 0 THEN NULL ELSE $1 - i END \
                 FROM generate_series(1::bigint, $2::bigint) AS i",
                &[&now, &n],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO outbox_accepted (committer, value) VALUES (gen_random_uuid(), $1)",
                &[&n],
            )
            .await
            .unwrap();
        client.batch_execute("VACUUM ANALYZE").await.unwrap();
        let size: String = client
            .query_one(
                "SELECT pg_size_pretty(pg_total_relation_size('outbox_records'))",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        println!(
            "{n} rows ({size} with indexes), a tenth pending, filled in {:.1} s; {}",
            t.elapsed().as_secs_f64(),
            harness::postgres::bin_dir().unwrap().display()
        );

        let mut took = Vec::new();
        for _ in 0..READS {
            let t = Instant::now();
            let c = store.counts().await.unwrap();
            took.push(t.elapsed());
            assert!(c.balanced(), "{c:?}");
            assert_eq!(c.accepted, n as u64);
        }
        took.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = took[READS / 2];
        println!(
            "counts() (exact, a full scan): median {:.1} ms, min {:.1}, max {:.1} over {READS} reads",
            ms(median),
            ms(took[0]),
            ms(took[READS - 1])
        );
        println!(
            "paced: read again at most every {:.1} s at that cost ({}x the read, at least {:?})",
            pace::interval(median).as_secs_f64(),
            pace::PAUSE,
            pace::FLOOR
        );

        // Scrapes as the service takes them: one every 100 ms for 3 s.
        let (mut reads, mut served) = (Vec::new(), Vec::new());
        let mut last_read = None;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let t = Instant::now();
            let (_, at) = store.sampled_counts().await.unwrap();
            let d = t.elapsed();
            match last_read != Some(at) {
                true => reads.push(d),
                false => served.push(d),
            }
            last_read = Some(at);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
        println!(
            "scrapes every 100 ms for 3 s: {} read the table ({:.1} ms each), {} served from the sample ({:.3} ms each)",
            reads.len(),
            ms(mean(&reads)),
            served.len(),
            ms(mean(&served))
        );
    });
}
