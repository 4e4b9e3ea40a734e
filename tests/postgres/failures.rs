//! What PostgreSQL can do to an acknowledgement: a cancelled wait for the synchronous
//! standby, the server stopped (`-m immediate`) and started again, a server without fsync.

use super::harness::postgres::Postgres;
use super::{open, options, record, sql};
use outbox::store::postgres::{PgStore, PgStoreError};
use outbox::store::SubmitOutcome;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(60);

/// Sets a server setting for every new transaction (ALTER SYSTEM and a reload).
pub async fn set_system(client: &tokio_postgres::Client, setting: &str, value: Option<&str>) {
    let sql = match value {
        Some(v) => format!("ALTER SYSTEM SET {setting} = '{v}'"),
        None => format!("ALTER SYSTEM RESET {setting}"),
    };
    client.batch_execute(&sql).await.unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    // Backends read the reloaded file when they next start a command.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Applies the schema, then makes every commit wait for a synchronous standby that does not
/// exist; returns the operator's connection.
async fn require_a_missing_standby(pg: &Postgres) -> tokio_postgres::Client {
    let client = sql(pg).await;
    drop(open(pg, LEASE).await); // the schema, while commits need no standby
    set_system(
        &client,
        "synchronous_standby_names",
        Some("missing_standby"),
    )
    .await;
    client
}

/// Waits for a backend waiting for a synchronous standby and cancels its wait, as a
/// statement timeout or an operator's `pg_cancel_backend` would.
pub async fn cancel_the_wait(client: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            let pid: i32 = row.get(0);
            client
                .execute("SELECT pg_cancel_backend($1)", &[&pid])
                .await
                .unwrap();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no commit waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_wait_for_the_standby_was_cancelled_is_not_acknowledged() {
    let Some(pg) = Postgres::start("postgres cancelled synchronous replication wait") else {
        return;
    };
    let client = require_a_missing_standby(&pg).await;
    let store = open(&pg, LEASE).await;
    assert!(!store.durability().on_one_server());

    let r = record("trace-syncrep", r#"{"email":"a@example.com"}"#);
    let pending = tokio::spawn({
        let (store, r) = (store.clone(), r.clone());
        async move { store.submit(r).await }
    });
    cancel_the_wait(&client).await;
    let err = pending.await.unwrap().expect_err("not acknowledged");
    assert!(matches!(err, PgStoreError::NotReplicated(_)), "{err:?}");
    assert!(err.is_unavailable(), "answered 503");
    // PostgreSQL did commit it locally.
    let here = client
        .query_one(
            "SELECT count(*) FROM outbox_records WHERE trace_id = $1",
            &[&r.trace_id],
        )
        .await
        .unwrap();
    assert_eq!(here.get::<_, i64>(0), 1);

    // The client's retry is not told "already stored" while the original is not replicated.
    let retry = tokio::spawn({
        let (store, r) = (store.clone(), r.clone());
        async move { store.submit(r).await }
    });
    cancel_the_wait(&client).await;
    let err = retry.await.unwrap().expect_err("still not acknowledged");
    assert!(matches!(err, PgStoreError::NotReplicated(_)), "{err:?}");

    // Once commits are durable again (here: no standby required), the retry gets 200.
    set_system(&client, "synchronous_standby_names", None).await;
    assert!(matches!(
        store.submit(r.clone()).await.unwrap(),
        SubmitOutcome::Duplicate(receipt) if receipt == r.receipt()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_is_a_bounded_error_and_the_store_carries_on_when_it_is_back() {
    let Some(mut pg) = Postgres::start("postgres stopped and started") else {
        return;
    };
    let store = open(&pg, LEASE).await;
    let before = record("trace-before-stop", r#"{"x":1}"#);
    assert!(matches!(
        store.submit(before.clone()).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));

    pg.stop_immediate();
    let started = Instant::now();
    let err = store
        .submit(record("trace-during-stop", r#"{"x":2}"#))
        .await
        .expect_err("nothing is acknowledged while PostgreSQL is down");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        started.elapsed()
    );
    assert!(store.claim_due(i64::MAX, 10).await.is_err());
    assert!(store.counts().await.unwrap_err().is_unavailable());

    pg.run();
    let after = record("trace-after-start", r#"{"x":3}"#);
    assert!(matches!(
        store.submit(after).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));
    assert!(
        store.get(&before.trace_id).await.unwrap().is_some(),
        "acknowledged before the stop, kept"
    );
    let c = store.counts().await.unwrap();
    assert!(c.balanced());
    assert_eq!(c.accepted, 2, "the post during the outage was not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_fsync_is_refused_with_the_fix() {
    let Some(pg) = Postgres::start("postgres fsync off") else {
        return;
    };
    set_system(&sql(&pg).await, "fsync", Some("off")).await;
    let err = PgStore::open(&options(&pg, LEASE))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("fsync = on"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_waits_too_long_is_answered_unavailable_in_bounded_time() {
    let Some(pg) = Postgres::start("postgres commit timeout") else {
        return;
    };
    let client = require_a_missing_standby(&pg).await;
    let mut o = options(&pg, LEASE);
    o.commit_timeout = Duration::from_secs(1);
    let store = PgStore::open(&o).await.unwrap();

    // The standby never answers: the commit waits, the client does not.
    let started = Instant::now();
    let err = store
        .submit(record("trace-slow-commit", r#"{"x":1}"#))
        .await
        .expect_err("not acknowledged");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );

    set_system(&client, "synchronous_standby_names", None).await;
    assert!(matches!(
        store
            .submit(record("trace-after-slow", r#"{"x":2}"#))
            .await
            .unwrap(),
        SubmitOutcome::Stored(_)
    ));
}

/// Submitters post without pause while `outage` takes PostgreSQL down and brings it back:
/// every submission acknowledged (202 or 200) is in the table afterwards, every other one
/// was refused as unavailable, and the store serves again without a restart.
async fn nothing_acknowledged_is_lost_across(test: &str, outage: fn(&mut Postgres)) {
    let Some(mut pg) = Postgres::start(test) else {
        return;
    };
    let store = open(&pg, LEASE).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitters: Vec<_> = (0..16)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), 0);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("trace-load-{t:02}-{n:06}");
                    n += 1;
                    match store.submit(record(&id, r#"{"x":1}"#)).await {
                        Ok(SubmitOutcome::Stored(_)) => acked.push(id),
                        Ok(other) => panic!("{id}: {other:?}"),
                        Err(e) => {
                            assert!(e.is_unavailable(), "{id}: {e:?}");
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage(&mut pg);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.run();
    // Serving again by itself: a fresh submission is stored within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .submit(record(
            &format!("trace-probe-{}", Instant::now().elapsed().as_nanos()),
            "{}",
        ))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for s in submitters {
        let (a, r) = s.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    println!(
        "{} acknowledged, {refused} refused during the outage",
        acked.len()
    );
    assert!(refused > 0, "the outage was noticed");
    let client = sql(&pg).await;
    assert_eq!(
        super::present(&client, &acked).await,
        acked.len(),
        "every acknowledged submission survived"
    );
    assert!(store.counts().await.unwrap().balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_postgres_stops_immediately_under_load() {
    nothing_acknowledged_is_lost_across("postgres stop -m immediate under load", |pg| {
        pg.stop_immediate()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_postmaster_is_killed_under_load() {
    nothing_acknowledged_is_lost_across("postgres postmaster SIGKILL under load", |pg| {
        pg.kill_postmaster()
    })
    .await;
}

/// A settle that fails because PostgreSQL is down keeps the instance's claims: once it is
/// back, the same records can be settled (or released) by this instance, instead of waiting
/// for their lease to run out and being refused as another instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_that_fails_while_postgres_is_down_can_be_repeated_when_it_is_back() {
    let Some(mut pg) = Postgres::start("postgres down during a settle") else {
        return;
    };
    let store = open(&pg, LEASE).await;
    for id in ["trace-settle-a", "trace-settle-b"] {
        store.submit(record(id, r#"{"x":1}"#)).await.unwrap();
    }
    let claimed = store.claim_due(i64::MAX, 10).await.unwrap();
    assert_eq!(claimed.records.len(), 2);

    pg.stop_immediate();
    let now = outbox::time::now_ms();
    let err = store
        .settle(&["trace-settle-a"], super::delivered(now))
        .await
        .expect_err("no settle while PostgreSQL is down");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(store.release(&["trace-settle-b"]).await.is_err());
    assert!(store.is_claimed("trace-settle-a") && store.is_claimed("trace-settle-b"));

    pg.run();
    let settled = store
        .settle(&["trace-settle-a"], super::delivered(now))
        .await
        .unwrap();
    assert!(
        matches!(settled[..], [Ok(outbox::store::Updated::Put(_))]),
        "the claim was kept across the failed settle: {settled:?}"
    );
    store.release(&["trace-settle-b"]).await.unwrap();
    let again = store.claim_due(i64::MAX, 10).await.unwrap();
    let ids: Vec<&str> = again.records.iter().map(|r| r.trace_id.as_str()).collect();
    assert_eq!(
        ids,
        ["trace-settle-b"],
        "released at once, not after the lease"
    );
}
