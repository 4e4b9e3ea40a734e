//! Through Debian's PgBouncer (1.18) in transaction mode: it refuses the `options` startup
//! parameter, so the store is told to set `synchronous_commit` per transaction, and that
//! setting holds even where the server's default is `off`.

use super::harness::postgres::{PgBouncer, Postgres};
use super::{record, sql};
use outbox::store::postgres::{PgOptions, PgStore, PgStoreError};
use outbox::store::SubmitOutcome;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode_the_commit_level_is_set_per_transaction() {
    let Some(pg) = Postgres::start("postgres through pgbouncer") else {
        return;
    };
    let Some(bouncer) = PgBouncer::start("postgres through pgbouncer", &pg) else {
        return;
    };
    // The worst server default: commits that wait for nothing.
    let admin = sql(&pg).await;
    super::failures::set_system(&admin, "synchronous_commit", Some("off")).await;

    let err = PgStore::open(&PgOptions::new(bouncer.url()))
        .await
        .err()
        .expect("PgBouncer 1.18 refuses the startup option");
    assert!(
        matches!(err, PgStoreError::Config(ref m) if m.contains("sync_per_transaction")),
        "{err}"
    );

    let mut o = PgOptions::new(bouncer.url());
    o.sync_per_transaction = true;
    o.commit_timeout = Duration::from_secs(10);
    let store = PgStore::open(&o).await.expect("open through pgbouncer");
    let r = record("trace-bouncer-1", r#"{"x":1}"#);
    assert!(matches!(
        store.submit(r.clone()).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));
    assert!(matches!(
        store.submit(r).await.unwrap(),
        SubmitOutcome::Duplicate(_)
    ));

    // With a synchronous standby required, the group commit waits for it although the
    // server's default is off: the SET LOCAL is in force through the pooler.
    super::failures::set_system(&admin, "synchronous_standby_names", Some("missing_standby")).await;
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.submit(record("trace-bouncer-2", r#"{"x":2}"#)).await }
    });
    super::failures::cancel_the_wait(&admin).await;
    let err = pending.await.unwrap().expect_err("not acknowledged");
    assert!(matches!(err, PgStoreError::NotReplicated(_)), "{err:?}");
}
