//! `/metrics` on PostgreSQL: the record counts come from a sample paced by its own cost
//! (counting scans the whole shared table), so a scrape is cheap, and the figures follow a
//! change within the documented freshness: at most a second old while a read takes under
//! 50 ms, twenty times a read's time beyond.

use super::harness::metrics::scrape;
use super::harness::postgres::Postgres;
use super::harness::{free_port, spawn_on_postgres};
use super::service::{client, post, wait_ready};
use super::{open, record};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_counts_are_served_from_the_last_read_until_its_pace_allows_another() {
    let Some(pg) = Postgres::start("postgres sampled counts") else {
        return;
    };
    let store = open(&pg, Duration::from_secs(60)).await;
    store.submit(record("trace-sample-1", "{}")).await.unwrap();
    let (first, read_at) = store.sampled_counts().await.unwrap();
    assert_eq!(first.pending, 1);

    store.submit(record("trace-sample-2", "{}")).await.unwrap();
    let (again, at) = store.sampled_counts().await.unwrap();
    if at == read_at {
        // Within the pace: the last read's figures, not a new scan.
        assert_eq!(again, first);
        assert!(read_at.elapsed() < outbox::store::postgres::pace::FLOOR);
    }
    assert_eq!(store.counts().await.unwrap().pending, 2, "exact when asked");

    // Once the pace allows (a small table: the one-second floor), a read shows the change.
    tokio::time::sleep(outbox::store::postgres::pace::FLOOR).await;
    let (later, at) = store.sampled_counts().await.unwrap();
    assert!(at > read_at, "read again");
    assert_eq!(later.pending, 2);
    assert!(later.balanced(), "{later:?}");
}

/// `outbox_outbox_records` on `port`, summed over every status: every record ever accepted.
async fn records_in_metrics(port: u16) -> u64 {
    let text = scrape(&format!("http://127.0.0.1:{port}")).await;
    text.lines()
        .filter(|l| l.starts_with("outbox_outbox_records{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_new_posts_within_the_documented_freshness() {
    let Some(pg) = Postgres::start("outbox /metrics on PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("outbox.log");
    let _outbox = spawn_on_postgres(&pg.url(), port, &[], &log).await;
    wait_ready(port, 200, Duration::from_secs(5)).await;
    assert_eq!(records_in_metrics(port).await, 0);

    let c = client();
    for n in 0..3 {
        assert_eq!(post(&c, port, &format!("scrape-{n}")).await.status, 202);
    }
    let stored = Instant::now();
    // A second on a table this small (each read takes milliseconds), and room for a busy
    // machine.
    let within = Duration::from_millis(2500);
    while records_in_metrics(port).await != 3 {
        assert!(
            stored.elapsed() < within,
            "/metrics did not show the new posts within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("shown {:?} after the last 202", stored.elapsed());
}
