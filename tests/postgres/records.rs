//! What the conformance suite cannot show with one store: changes to records that another
//! instance is delivering, the accounting kept by several instances' group commits, verify
//! finding rows broken behind the store's back, the quarantine table, the purge's limit, an
//! erasure waiting for a delivery, and reads on a server that vanished.

use super::harness::postgres::Postgres;
use super::record;
use outbox::store::postgres::{PgOptions, PgStore};
use outbox::store::{Change, Record, Status, SubmitOutcome, Updated};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn open_on(url: &str, lease: Duration) -> Arc<PgStore> {
    let mut o = PgOptions::new(url);
    o.lease = lease;
    PgStore::open(&o).await.expect("open the store")
}

/// Two stores (instances) on a fresh database of the shared cluster.
async fn two(pg: &Postgres, db: &str, lease: Duration) -> (Arc<PgStore>, Arc<PgStore>) {
    let url = super::fresh_database(pg, db).await;
    (open_on(&url, lease).await, open_on(&url, lease).await)
}

/// A plain client on `url`, for checks and for breaking rows behind the store's back.
async fn client_on(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

fn edit(r: &Record) -> Change {
    let mut n = r.clone();
    n.payload = Some(r#"{"x":"edited"}"#.into());
    Change::Put(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_record_another_instance_delivers_is_refused_and_a_lapsed_owner_is_fenced_out()
{
    let Some(pg) = super::shared_cluster("postgres busy across instances") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (a, b) = two(&pg, "records_busy", lease).await;
    a.submit(record("trace-busy", r#"{"x":1}"#)).await.unwrap();
    assert_eq!(a.claim_due(i64::MAX, 10).await.unwrap().records.len(), 1);

    let out = b.update("trace-busy", edit).await.unwrap();
    assert!(
        matches!(&out, Updated::Busy(r) if r.status == Status::InFlight),
        "{out:?}"
    );
    let out = b.update("trace-busy", |_| Change::Purge).await.unwrap();
    assert!(matches!(out, Updated::Busy(_)), "an erasure waits too");
    assert_eq!(
        b.get("trace-busy")
            .await
            .unwrap()
            .unwrap()
            .payload
            .as_deref(),
        Some(r#"{"x":1}"#)
    );

    // a's lease runs out (a stalled): the edit goes through and ends the lease, so a's late
    // outcome is refused.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert!(matches!(
        b.update("trace-busy", edit).await.unwrap(),
        Updated::Put(_)
    ));
    let late = a
        .settle(&["trace-busy"], super::delivered(outbox::time::now_ms()))
        .await
        .unwrap();
    assert!(matches!(late[..], [Ok(Updated::Busy(_))]), "{late:?}");
    let r = b.get("trace-busy").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.payload.as_deref()),
        (Status::Pending, Some(r#"{"x":"edited"}"#))
    );
    let c = b.counts().await.unwrap();
    assert!(c.balanced() && c.pending == 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_counts_the_rows_every_instance_inserted_and_nothing_twice() {
    let Some(pg) = super::shared_cluster("postgres accepted counter") else {
        return;
    };
    let (a, b) = two(&pg, "records_accepted", Duration::from_secs(60)).await;
    // Every key posted to both instances at once: each is stored once.
    let posts = (0..300).flat_map(|i| {
        let r = record(&format!("trace-acc-{i}"), r#"{"x":1}"#);
        let (a, b, r2) = (a.clone(), b.clone(), r.clone());
        [
            tokio::spawn(async move { a.submit(r).await.unwrap() }),
            tokio::spawn(async move { b.submit(r2).await.unwrap() }),
        ]
    });
    let mut stored = 0;
    for p in posts.collect::<Vec<_>>() {
        stored += matches!(p.await.unwrap(), SubmitOutcome::Stored(_)) as u64;
    }
    assert_eq!(stored, 300);
    let c = a.counts().await.unwrap();
    assert_eq!((c.accepted, c.pending), (300, 300), "{c:?}");
    // A claim takes what it asked for, however many are due.
    assert_eq!(a.claim_due(i64::MAX, 7).await.unwrap().records.len(), 7);
    let c = a.counts().await.unwrap();
    assert_eq!((c.accepted, c.pending, c.in_flight), (300, 293, 7), "{c:?}");
    let client = client_on(&pg.url().replace("/postgres?", "/records_accepted?")).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM outbox_accepted", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        rows <= 5,
        "one counter row per committer (two per instance) and the migration's: {rows}"
    );
    // A record that vanishes behind the store's back breaks the identity: it is a check.
    client
        .execute(
            "DELETE FROM outbox_records WHERE trace_id = 'trace-acc-7'",
            &[],
        )
        .await
        .unwrap();
    let c = b.counts().await.unwrap();
    assert!(!c.balanced(), "{c:?}");
    let v = b.verify().await.unwrap();
    assert_eq!(v.records, 299);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("accounting identity broken")),
        "{:?}",
        v.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_every_row_in_pages_and_names_each_broken_one_and_quarantine_keeps_it_whole() {
    let Some(pg) = super::shared_cluster("postgres verify") else {
        return;
    };
    let url = super::fresh_database(&pg, "records_verify").await;
    let s = open_on(&url, Duration::from_secs(60)).await;
    let posts: Vec<_> = (0..2500)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.submit(record(&format!("trace-v-{i:04}"), r#"{"x":1}"#))
                    .await
            })
        })
        .collect();
    for p in posts {
        p.await.unwrap().unwrap();
    }
    let v = s.verify().await.unwrap();
    assert_eq!((v.records, v.problems.len()), (2500, 0), "{:?}", v.problems);

    let client = client_on(&url).await;
    client
        .batch_execute(
            "UPDATE outbox_records SET claim_token = gen_random_uuid() WHERE trace_id = 'trace-v-0001'; \
             UPDATE outbox_records SET status = 'dead' WHERE trace_id = 'trace-v-1500'; \
             UPDATE outbox_records SET audit = '{\"not\": \"a list\"}' WHERE trace_id = 'trace-v-2499'",
        )
        .await
        .unwrap();
    let v = s.verify().await.unwrap();
    assert_eq!(v.records, 2500);
    let named = |id: &str, what: &str| {
        v.problems
            .iter()
            .any(|p| p.contains(id) && p.contains(what))
    };
    assert!(named("trace-v-0001", "half a lease"), "{:?}", v.problems);
    assert!(
        named("trace-v-1500", "dead-letter time"),
        "{:?}",
        v.problems
    );
    assert!(named("trace-v-2499", "makes no record"), "{:?}", v.problems);
    assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
    let listed = s.page(Some("trace-v-2497"), 10).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|r| r.trace_id.as_str()).collect();
    assert_eq!(
        ids,
        ["trace-v-2498"],
        "a row that makes no record is not listed"
    );

    s.quarantine("trace-v-2499", "audit is not a list")
        .await
        .unwrap();
    let q = client
        .query_one(
            "SELECT reason, record->>'trace_id', record->'audit', record->>'payload', \
             quarantined_at_ms > 0 FROM outbox_quarantine",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(q.get::<_, String>(0), "audit is not a list");
    assert_eq!(q.get::<_, String>(1), "trace-v-2499");
    assert_eq!(
        q.get::<_, serde_json::Value>(2),
        serde_json::json!({"not": "a list"}),
        "the row kept as it was"
    );
    assert_eq!(q.get::<_, String>(3), r#"{"x":1}"#);
    assert!(q.get::<_, bool>(4));
    let c = s.counts().await.unwrap();
    assert_eq!(
        (c.accepted, c.pending + c.dead, c.quarantined),
        (2500, 2499, 1)
    );
    assert!(c.balanced(), "{c:?}");
    let v = s.verify().await.unwrap();
    assert_eq!((v.records, v.problems.len()), (2499, 2), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_removes_at_most_its_limit() {
    let Some(pg) = super::shared_cluster("postgres purge limit") else {
        return;
    };
    let url = super::fresh_database(&pg, "records_purge_limit").await;
    let s = open_on(&url, Duration::from_secs(60)).await;
    for i in 0..5 {
        let id = format!("trace-pl-{i}");
        s.submit(record(&id, r#"{"x":1}"#)).await.unwrap();
        s.claim_due(i64::MAX, 1).await.unwrap();
        s.settle(&[id.as_str()], super::delivered(1_000 + i))
            .await
            .unwrap();
    }
    assert_eq!(s.purge_delivered_before(10_000, 2).await.unwrap(), 2);
    assert!(
        s.get("trace-pl-0").await.unwrap().is_none()
            && s.get("trace-pl-1").await.unwrap().is_none(),
        "oldest delivery first"
    );
    assert_eq!(s.purge_delivered_before(10_000, 0).await.unwrap(), 0);
    assert_eq!(
        s.purge_delivered_before(10_000, usize::MAX).await.unwrap(),
        3
    );
    let c = s.counts().await.unwrap();
    assert_eq!((c.accepted, c.delivered, c.purged), (5, 0, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_waits_for_a_delivery_of_the_record_to_end_then_removes_it() {
    let Some(pg) = super::shared_cluster("postgres erasure waits") else {
        return;
    };
    let (a, b) = two(&pg, "records_erase_wait", Duration::from_secs(60)).await;
    a.submit(record("trace-ew", r#"{"email":"Zoe@Example.org"}"#))
        .await
        .unwrap();
    assert_eq!(a.claim_due(i64::MAX, 1).await.unwrap().records.len(), 1);
    let owner = a.clone();
    let attempt = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The attempt failed: back to pending, still mentioning the address.
        owner
            .settle(&["trace-ew"], |_, r| {
                let mut n = r.clone();
                n.attempts += 1;
                Change::Put(n)
            })
            .await
            .unwrap()
    });
    let started = Instant::now();
    let erased = b.erase_address("zoe@example.ORG").await.unwrap();
    assert!(matches!(attempt.await.unwrap()[..], [Ok(Updated::Put(_))]));
    assert_eq!(erased, ["trace-ew"]);
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited");
    assert!(b.get("trace-ew").await.unwrap().is_none());
    let c = b.counts().await.unwrap();
    assert_eq!((c.accepted, c.purged), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_server_that_vanished_are_unavailable_within_the_read_timeout() {
    let Some(mut pg) = Postgres::start("postgres reads on a vanished server") else {
        return;
    };
    let mut o = PgOptions::new(pg.url());
    o.read_timeout = Duration::from_secs(2);
    let s = PgStore::open(&o).await.unwrap();
    s.submit(record("trace-gone", r#"{"x":1}"#)).await.unwrap();
    assert_eq!(s.counts().await.unwrap().pending, 1);

    pg.vanish();
    // An open connection that gets no answer, then new ones whose startup gets none.
    for _ in 0..2 {
        let started = Instant::now();
        let e = s
            .counts()
            .await
            .expect_err("no answer from a frozen server");
        assert!(e.is_unavailable(), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "counts ended after {:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let e = s.get("trace-gone").await.expect_err("no answer");
    assert!(e.is_unavailable(), "{e}");
    let e = s.page(None, 10).await.expect_err("no answer");
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(24));
}
