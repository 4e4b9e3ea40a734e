//! What `outbox top` and `outbox inspect` cost on the PostgreSQL store as the table grows:
//! the summary's figures (the counters, the oldest queued receipt time, the next attempt)
//! read in one statement ([`PgStore::queue_figures`]: one scan on the server, one row back),
//! against the way they were read before: the counters, then every record shipped to the
//! client a page of 1,000 at a time (as `ops::Shared::scan` pages) to find the two times.
//! Both must give the same figures; each is timed over five rounds.
//!
//! The table is filled with one `INSERT ... SELECT FROM generate_series` (a 300-byte form;
//! 5 in 7 pending, 1 in 5 delivered tombstones, the rest dead letters), which is quicker
//! than submitting and gives the same rows.
//!
//! Run: `cargo bench --bench pg_summary` (needs Debian's `postgresql`).
//! `OUTBOX_BENCH_RECORDS` sets the number of rows (default 200,000).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/pg.rs"]
mod pg_bench;

use outbox::store::postgres::PgStore;
use std::time::{Duration, Instant};

/// Rows per page of the former read, as `ops::Shared::scan` reads them.
const PAGE: usize = 1000;
const ROUNDS: usize = 5;

/// The rows: a realistic form (about 300 bytes of JSON), its hash as the store computes it.
const FILL: &str = "INSERT INTO outbox_records (trace_id, status, attempts, received_at_ms, \
     received_at, due_at_ms, payload_hash, payload, client_ip, user_agent, src, form_type, \
     delivered_at_ms, dead_at_ms) \
   SELECT 'trace-' || lpad(g::text, 9, '0'), s, (s <> 'pending')::int, t + g, \
     to_char(to_timestamp((t + g) / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
     t + 3 * g, sha256(convert_to(p, 'UTF8')), CASE WHEN s = 'delivered' THEN NULL ELSE p END, \
     '203.0.113.9', 'bench', 'site', 'contact', \
     CASE WHEN s = 'delivered' THEN t + g END, CASE WHEN s = 'dead' THEN t + g END \
   FROM (SELECT g, 1700000000000::bigint AS t, \
       CASE WHEN g % 5 = 0 THEN 'delivered' WHEN g % 7 = 0 THEN 'dead' ELSE 'pending' END AS s, \
       '{\"email\":\"user' || g || '@example.org\",\"message\":\"' || repeat('m', 240) || '\"}' AS p \
     FROM generate_series(1, $1::bigint) g) x";

/// The figures both ways must agree on: counts, oldest queued, next attempt.
type Figures = (outbox::store::Counts, Option<i64>, Option<i64>);

/// The summary's figures as they were read before: the counters, then every record.
async fn paged(store: &PgStore) -> (Figures, u64) {
    let counts = store.counts().await.unwrap();
    let (mut oldest, mut next, mut shipped) = (None::<i64>, None::<i64>, 0u64);
    let mut after: Option<String> = None;
    loop {
        let page = store.page(after.as_deref(), PAGE).await.unwrap();
        shipped += page.len() as u64;
        let full = page.len() == PAGE;
        after = page.last().map(|r| r.trace_id.clone());
        for r in page.iter().filter(|r| r.status.is_queued()) {
            oldest = Some(oldest.map_or(r.received_at_ms, |t| t.min(r.received_at_ms)));
            next = Some(next.map_or(r.next_attempt_at_ms, |t| t.min(r.next_attempt_at_ms)));
        }
        if !full {
            return ((counts, oldest, next), shipped);
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n = pg_bench::env_num("OUTBOX_BENCH_RECORDS", 200_000) as i64;
    pg_bench::run("pg_summary bench", |store, client| async move {
        client.execute(FILL, &[&n]).await.unwrap();
        client
            .batch_execute("VACUUM ANALYZE outbox_records")
            .await
            .unwrap();
        println!("{n} rows in outbox_records; milliseconds per read of the summary's figures");
        let (mut one, mut before) = (Vec::new(), Vec::new());
        let mut shipped = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let f = store.queue_figures().await.unwrap();
            one.push(ms(t.elapsed()));
            let t = Instant::now();
            let (old, rows) = paged(&store).await;
            before.push(ms(t.elapsed()));
            shipped = rows;
            assert_eq!((f.counts, f.oldest_queued_ms, f.next_attempt_ms), old);
        }
        println!("one statement (1 row back):      {}", one.join("  "));
        println!(
            "counters, then every record ({shipped} rows back, pages of {PAGE}): {}",
            before.join("  ")
        );
    });
}
