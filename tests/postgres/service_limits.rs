//! `outbox serve` on PostgreSQL keeps the promises that are not about the disk: `max-pending`
//! refuses new records (from the sampled backlog, never a read per post) while a retry of a
//! stored one is still answered, and retention drops delivered payloads after
//! `payload-retention` and tombstones after the idempotency window.

use super::harness::dashboard::Dashboard;
use super::harness::postgres::Postgres;
use super::harness::{free_port, spawn_on_postgres};
use super::service::{client, detailed, post, wait_ready, KEY};
use super::sql;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_refuses_new_records_but_answers_a_retry_of_a_stored_one() {
    let Some(pg) = Postgres::start("outbox max-pending on PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("outbox.log");
    let _outbox = spawn_on_postgres(&pg.url(), port, &["--max-pending", "5"], &log).await;
    wait_ready(port, 200, Duration::from_secs(5)).await;
    let c = client();
    let mut statuses = Vec::new();
    for n in 0..8 {
        statuses.push(post(&c, port, &format!("limit-{n:04}")).await.status);
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 503, 503, 503]);
    // After the next sample, from the table: still full.
    wait_ready(port, 503, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(post(&c, port, "limit-new").await.status, 503);
    let retry = post(&c, port, "limit-0001").await;
    assert_eq!(retry.status, 200, "a retry of a stored post at the limit");
    let d = detailed(port).await;
    assert_eq!(d["counts"]["pending"], 5, "{d}");
    assert!(d["oldest_pending_age_seconds"].is_u64(), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_payloads_go_after_the_retention_and_tombstones_after_the_window() {
    let Some(pg) = Postgres::start("outbox retention on PostgreSQL") else {
        return;
    };
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let flags = [
        "--dashboard-url",
        &dash.url(),
        "--ingest-key",
        KEY,
        "--payload-retention",
        "1s",
        "--idempotency-window",
        "4s",
        "--purge-interval",
        "300ms",
    ];
    let log = tmp.path().join("outbox.log");
    let _outbox = spawn_on_postgres(&pg.url(), port, &flags, &log).await;
    let c = client();
    assert_eq!(post(&c, port, "retained-0001").await.status, 202);
    dash.wait_for_requests(1).await;
    let db = sql(&pg).await;
    let read = || async {
        db.query_opt(
            "SELECT payload IS NOT NULL, client_ip, audit::text FROM outbox_records \
             WHERE trace_id = 'retained-0001'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| {
            (
                r.get::<_, bool>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            )
        })
    };
    let started = Instant::now();
    // Delivered, its payload kept for the retention...
    let (kept, ip, _) = loop {
        let got = read().await.expect("stored");
        let status: String = db
            .query_one(
                "SELECT status FROM outbox_records WHERE trace_id = 'retained-0001'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if status == "delivered" {
            break got;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(kept && !ip.is_empty(), "payload kept at delivery");
    // ... then dropped, the drop noted ...
    let (kept, ip, audit) = loop {
        let got = read().await.expect("still a tombstone");
        if !got.0 {
            break got;
        }
        assert!(started.elapsed() < Duration::from_secs(4), "payload kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!kept && ip.is_empty());
    assert!(
        audit.contains("payload dropped (payload-retention)"),
        "{audit}"
    );
    // ... and the tombstone answers a late duplicate until the window ends, then goes.
    assert_eq!(post(&c, port, "retained-0001").await.status, 200);
    while read().await.is_some() {
        assert!(started.elapsed() < Duration::from_secs(8), "not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = detailed(port).await;
    assert_eq!(d["counts"]["purged"], 1, "{d}");
    assert_eq!(d["accounting_balanced"], true, "{d}");
}
