//! The sampler's probe of PostgreSQL: the backlog (a scan of every pending row) is read at
//! most once a second, and after a long read only after a pause twenty times as long.

use super::{fresh_database, record, shared_cluster};
use outbox::store::postgres::{PgOptions, PgStore};
use std::time::Duration;

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
