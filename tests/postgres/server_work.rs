//! What the store asks of the server, kept cheap: the sampler's probe reads the backlog (a
//! scan of every pending row) at most once a second, and after a long read only after a pause
//! twenty times as long, in a task of its own so a slow count never fails the probe; the group
//! commit's statement is prepared once per connection.

use super::{fresh_database, record, shared_cluster};
use outbox::store::postgres::{PgOptions, PgStore};
use outbox::store::SubmitOutcome;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_read_again_only_after_a_pause_and_its_last_figures_kept_between() {
    let Some(pg) = shared_cluster("postgres probe backlog pause") else {
        return;
    };
    let url = fresh_database(&pg, "probe_backlog_pause").await;
    let store = PgStore::open(&PgOptions::new(url)).await.unwrap();

    let first = store.probe().await.unwrap();
    assert!(first.backlog_read, "the first probe reads the backlog");
    assert_eq!((first.queued, first.oldest_queued_ms), (0, None));

    let r = record("trace-probe-1", r#"{"x":1}"#);
    let received = r.received_at_ms;
    store.submit(r).await.unwrap();
    let soon = store.probe().await.unwrap();
    assert!(!soon.backlog_read, "not read again within the second");
    assert_eq!(
        (soon.queued, soon.oldest_queued_ms),
        (0, None),
        "the last read's figures, not new ones"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = store.probe().await.unwrap();
    assert!(later.backlog_read, "read again after a second");
    assert_eq!((later.queued, later.oldest_queued_ms), (1, Some(received)));
}

/// A backlog count that takes longer than the probe's bound (a huge backlog; here the table
/// locked by another session) does not fail the probe: PostgreSQL answers, so the instance
/// stays reachable and ready, with the last figures; the count reports when it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_count_slower_than_the_probe_bound_leaves_the_probe_answering() {
    let Some(pg) = shared_cluster("postgres slow backlog count") else {
        return;
    };
    let url = fresh_database(&pg, "probe_slow_backlog").await;
    let store = PgStore::open(&PgOptions::new(url.clone())).await.unwrap();
    assert!(store.probe().await.unwrap().backlog_read);
    let r = record("trace-slow-count", r#"{"x":1}"#);
    let received = r.received_at_ms;
    store.submit(r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (mut locker, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE outbox_records IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let during = store
        .probe()
        .await
        .expect("the probe answers while the count waits");
    let took = started.elapsed();
    assert!(!during.backlog_read, "the count cannot have finished");
    assert_eq!(during.queued, 0, "the last figures");
    assert!(took < Duration::from_secs(3), "the probe took {took:?}");
    // Still waiting: a second probe starts no second count, and answers too.
    assert!(!store.probe().await.unwrap().backlog_read);
    tx.commit().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = store.probe().await.unwrap();
        if p.backlog_read {
            assert_eq!((p.queued, p.oldest_queued_ms), (1, Some(received)));
            break;
        }
        assert!(Instant::now() < deadline, "the count never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The group commit's statement is prepared once per connection; one whose cached plan no
/// longer fits the table (a column's type changed under it) fails its group once on that
/// connection and is prepared again for the next group, never failing every group after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_group_statement_gone_stale_fails_once_per_connection_then_is_prepared_again() {
    let Some(pg) = shared_cluster("postgres prepared statement gone stale") else {
        return;
    };
    let url = fresh_database(&pg, "prepared_gone_stale").await;
    let mut o = PgOptions::new(url.clone());
    o.pool_size = 2;
    let store = PgStore::open(&o).await.unwrap();
    // Prepared on every connection the committers use.
    for i in 0..8 {
        let r = record(&format!("trace-stale-a{i}"), r#"{"x":1}"#);
        assert!(matches!(
            store.submit(r).await.unwrap(),
            SubmitOutcome::Stored(_)
        ));
    }
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // The returned column's type changes: a cached plan must not change its result type.
    admin
        .batch_execute(
            "ALTER TABLE outbox_records ALTER COLUMN trace_id TYPE varchar(200) COLLATE \"C\"",
        )
        .await
        .unwrap();
    let mut failed = 0;
    for i in 0..12 {
        match store
            .submit(record(&format!("trace-stale-b{i}"), r#"{"x":1}"#))
            .await
        {
            Ok(SubmitOutcome::Stored(_)) => {}
            Ok(other) => panic!("a new record is stored, not {other:?}"),
            Err(_) => failed += 1,
        }
    }
    assert!(
        failed <= 2,
        "{failed} groups failed: at most one per pooled connection"
    );
    let r = record("trace-stale-last", r#"{"x":1}"#);
    assert!(matches!(
        store.submit(r).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));
}
