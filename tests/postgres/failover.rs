//! Failover to a synchronous standby: the primary's machine is lost under steady submissions
//! (its postmaster SIGKILLed, or every server process frozen with its connections left open;
//! its data directory deleted either way), the standby is promoted, and a store given both
//! hosts with `target_session_attrs=read-write` carries on without being reopened. What it
//! acknowledged before and after is on the new primary and can be delivered there. With
//! `synchronous_commit = remote_apply`, an acknowledged record is readable on the standby.

use super::harness::postgres::Postgres;
use super::{delivered, record, sql};
use outbox::store::postgres::{PgOptions, PgStore, SyncCommit};
use outbox::store::SubmitOutcome;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Submitting tasks: enough to form groups in the committer.
const SUBMITTERS: usize = 8;

/// One submission's result: its trace ID and when it was acknowledged, or a refusal.
enum Outcome {
    Acked(String, Instant),
    Refused(Instant),
}

fn store_options(url: String) -> PgOptions {
    let mut o = PgOptions::new(url);
    o.lease = Duration::from_secs(60);
    o.commit_timeout = Duration::from_secs(5);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_is_lost_the_store_carries_on_on_the_promoted_standby() {
    failover_under_load(
        "postgres failover to a synchronous standby",
        Postgres::destroy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_vanishes_with_connections_open_the_store_carries_on() {
    failover_under_load(
        "postgres failover from a vanished primary",
        Postgres::vanish,
    )
    .await;
}

/// Submitters post without pause while `lose` takes the primary's machine away; the standby
/// is promoted a second later.
async fn failover_under_load(test: &str, lose: fn(&mut Postgres)) {
    let Some(mut primary) = Postgres::start(test) else {
        return;
    };
    let standby = primary.standby("outbox_standby");
    primary.require_sync_standby("outbox_standby");
    let url = Postgres::primary_url(&[&primary, &standby]);
    let store = PgStore::open(&store_options(url))
        .await
        .expect("open store");
    assert!(!store.durability().on_one_server());

    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("trace-failover-{t:02}-{n:06}");
                    n += 1;
                    match store.submit(record(&id, r#"{"x":1}"#)).await {
                        Ok(SubmitOutcome::Stored(_)) => {
                            out.push(Outcome::Acked(id, Instant::now()))
                        }
                        Ok(other) => panic!("{id}: {other:?}"),
                        Err(e) => {
                            assert!(e.is_unavailable(), "{id}: {e:?}");
                            out.push(Outcome::Refused(Instant::now()));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                out
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killing = Instant::now();
    tokio::task::block_in_place(|| lose(&mut primary));
    // Acknowledged before this point means acknowledged by the old primary.
    let lost = Instant::now();
    // No primary for a moment: nothing may be acknowledged now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The standby may accept writes before `promote` has seen it do so.
    let promoted = Instant::now();
    tokio::task::block_in_place(|| standby.promote());
    // Serving again by itself: submissions succeed within a few seconds of the promotion.
    let deadline = promoted + Duration::from_secs(15);
    while store
        .submit(record(
            &format!("trace-probe-{}", lost.elapsed().as_nanos()),
            "{}",
        ))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the store did not find the new primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut before, mut after, mut refused, mut back_at) = (Vec::new(), Vec::new(), 0, None);
    for s in submitters {
        for o in s.await.unwrap() {
            match o {
                Outcome::Acked(id, at) if at < lost => before.push(id),
                Outcome::Acked(id, at) => {
                    assert!(
                        at > promoted,
                        "{id} acknowledged while there was no primary"
                    );
                    back_at = Some(back_at.map_or(at, |b: Instant| b.min(at)));
                    after.push(id);
                }
                Outcome::Refused(at) => {
                    assert!(at > killing, "a refusal before the failover");
                    refused += 1;
                }
            }
        }
    }
    let back_at = back_at.expect("acknowledged after the failover");
    let without = back_at - killing;
    println!(
        "failover: {} acknowledged before, {} after, {refused} refused during the switch, \
         {:.2} s without a primary (promotion started {:.2} s after the loss, the first \
         acknowledgement {:.2} s after that)",
        before.len(),
        after.len(),
        without.as_secs_f64(),
        (promoted - killing).as_secs_f64(),
        (back_at - promoted).as_secs_f64()
    );
    assert!(!before.is_empty() && !after.is_empty() && refused > 0);

    // Everything acknowledged is on the new primary, read by a fresh store and claimable there.
    drop(store);
    let acked: Vec<String> = before.into_iter().chain(after).collect();
    let client = sql(&standby).await;
    assert_eq!(
        super::present(&client, &acked).await,
        acked.len(),
        "nothing acknowledged was lost"
    );
    let fresh = PgStore::open(&store_options(standby.url())).await.unwrap();
    let claimed = fresh.claim_due(i64::MAX, acked.len() + 10).await.unwrap();
    let ids: Vec<&str> = claimed
        .records
        .iter()
        .map(|r| r.trace_id.as_str())
        .collect();
    for id in &acked {
        assert!(
            ids.contains(&id.as_str()),
            "{id} can be claimed on the new primary"
        );
    }
    let settled = fresh
        .settle(&ids, delivered(outbox::time::now_ms()))
        .await
        .unwrap();
    assert!(settled.iter().all(|s| s.is_ok()), "{settled:?}");
    let c = fresh.counts().await.unwrap();
    assert!(c.balanced());
    assert_eq!(c.delivered as usize, ids.len());
    assert_eq!(c.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_remote_apply_an_acknowledged_record_is_readable_on_the_standby_at_once() {
    let Some(primary) = Postgres::start("postgres remote_apply on a synchronous standby") else {
        return;
    };
    let standby = primary.standby("outbox_standby");
    primary.require_sync_standby("outbox_standby");
    let mut o = store_options(primary.url());
    o.synchronous_commit = SyncCommit::RemoteApply;
    let store = PgStore::open(&o).await.expect("open store");
    let replica = Arc::new(sql(&standby).await);
    let read_back = replica
        .prepare("SELECT count(*) FROM outbox_records WHERE trace_id = $1")
        .await
        .unwrap();
    // Concurrent submitters, so groups of several posts are applied together too.
    let checks: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (store, replica, read_back) = (store.clone(), replica.clone(), read_back.clone());
            tokio::spawn(async move {
                for n in 0..50 {
                    let id = format!("trace-apply-{t:02}-{n:03}");
                    let got = store.submit(record(&id, r#"{"x":1}"#)).await.unwrap();
                    assert!(matches!(got, SubmitOutcome::Stored(_)), "{id}: {got:?}");
                    let row = replica.query_one(&read_back, &[&id]).await.unwrap();
                    assert_eq!(row.get::<_, i64>(0), 1, "{id} not yet on the standby");
                }
            })
        })
        .collect();
    for c in checks {
        c.await.unwrap();
    }
}
