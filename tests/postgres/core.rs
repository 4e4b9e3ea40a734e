//! Idempotency across instances, group commit, leases and fencing, the purge, the schema.

use super::harness::postgres::Postgres;
use super::{delivered, open, record, sql};
use outbox::store::postgres::{schema, PgStore, PgStoreError};
use outbox::store::{Status, SubmitOutcome, Updated};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_on_two_instances_is_stored_once_then_200_with_the_original_receipt_or_409() {
    let Some(pg) = Postgres::start("postgres idempotency across instances") else {
        return;
    };
    let (a, b) = (open(&pg, LEASE).await, open(&pg, LEASE).await);
    let first = record("trace-idem-1", r#"{"email":"a@example.com"}"#);
    let SubmitOutcome::Stored(receipt) = a.submit(first.clone()).await.unwrap() else {
        panic!("first post is stored");
    };

    // The client's retry lands on the other instance: a new receipt time, same payload.
    let retry = record("trace-idem-1", r#"{ "email" : "a@example.com" }"#);
    assert_ne!(retry.enrichment.received_at, receipt.received_at);
    assert_eq!(
        b.submit(retry).await.unwrap(),
        SubmitOutcome::Duplicate(receipt.clone()),
        "200 with the original receipt"
    );
    let other = record("trace-idem-1", r#"{"email":"someone-else@example.com"}"#);
    assert_eq!(
        b.submit(other).await.unwrap(),
        SubmitOutcome::Conflict(receipt.clone()),
        "409 for another payload"
    );
    // Still a duplicate once delivered: the tombstone keeps the hash for the window.
    let claimed = a.claim_due(i64::MAX, 10).await.unwrap();
    assert_eq!(claimed.records.len(), 1);
    a.settle(&["trace-idem-1"], delivered(outbox::time::now_ms()))
        .await
        .unwrap();
    assert_eq!(
        b.submit(first.clone()).await.unwrap(),
        SubmitOutcome::Duplicate(receipt)
    );
    // A third instance asking for remote_apply (each new connection checks that the server
    // took the startup option) shares the same window.
    let mut o = super::options(&pg, LEASE);
    o.synchronous_commit = outbox::store::postgres::SyncCommit::RemoteApply;
    let c = PgStore::open(&o).await.unwrap();
    assert!(
        c.durability().on_one_server(),
        "no synchronous standby here"
    );
    assert!(matches!(
        c.submit(first.clone()).await.unwrap(),
        SubmitOutcome::Duplicate(_)
    ));
    let tomb = b.get("trace-idem-1").await.unwrap().unwrap();
    assert_eq!(
        (
            tomb.status,
            tomb.payload,
            tomb.enrichment.client_ip.as_str()
        ),
        (Status::Delivered, None, "")
    );
    let c = b.counts().await.unwrap();
    assert_eq!((c.accepted, c.delivered), (1, 1));
    assert!(c.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_group_committed_and_each_stored_once() {
    let Some(pg) = Postgres::start("postgres group commit") else {
        return;
    };
    let (a, b) = (open(&pg, LEASE).await, open(&pg, LEASE).await);
    let client = sql(&pg).await;
    let commits = || async {
        let row = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let before = commits().await;
    // 400 distinct posts, each sent to both instances at once (a client retrying on the
    // other instance while the first attempt is still running).
    const N: usize = 400;
    let mut tasks = Vec::new();
    for i in 0..N {
        let r = record(&format!("trace-group-{i:04}"), &format!(r#"{{"n":{i}}}"#));
        for s in [a.clone(), b.clone()] {
            let r = r.clone();
            tasks.push(tokio::spawn(async move { s.submit(r).await }));
        }
    }
    let mut stored = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            SubmitOutcome::Stored(r) => *stored.entry(r.trace_id).or_default() += 1,
            SubmitOutcome::Duplicate(_) => {}
            SubmitOutcome::Conflict(r) => panic!("{} is not a conflict", r.trace_id),
        }
    }
    assert_eq!(stored.len(), N, "every post stored");
    assert!(stored.values().all(|n| *n == 1), "and each once");
    // Statistics are flushed when a backend's transaction ends; give them a moment.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let used = commits().await - before;
    println!("{} submissions took {used} commits", 2 * N);
    assert!(
        (used as usize) < N / 2,
        "{used} commits for {} submissions: they were not grouped",
        2 * N
    );
    let c = a.counts().await.unwrap();
    assert_eq!((c.accepted, c.pending), (N as u64, N as u64));
    assert!(c.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_late_owners_outcome_is_refused() {
    let Some(pg) = Postgres::start("postgres lease fencing") else {
        return;
    };
    let lease = Duration::from_millis(800);
    let (a, b) = (open(&pg, lease).await, open(&pg, lease).await);
    a.submit(record("trace-lease-1", r#"{"x":1}"#))
        .await
        .unwrap();
    let now = outbox::time::now_ms();

    let by_a = a.claim_due(now, 10).await.unwrap();
    assert_eq!(by_a.records.len(), 1);
    assert!(
        b.claim_due(now, 10).await.unwrap().records.is_empty(),
        "a live lease is not claimed twice"
    );
    let c = b.counts().await.unwrap();
    assert_eq!((c.pending, c.in_flight), (0, 1));
    assert!(c.balanced());
    assert_eq!(
        b.get("trace-lease-1").await.unwrap().unwrap().status,
        Status::InFlight
    );

    // A is slow; its lease runs out and B takes the record.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let by_b = b.claim_due(outbox::time::now_ms(), 10).await.unwrap();
    assert_eq!(by_b.records.len(), 1, "an expired lease is claimed again");
    assert_eq!(by_b.records[0].trace_id, "trace-lease-1");

    // B's outcome first, then A's late one: A's is refused, B's stands.
    let at_b = outbox::time::now_ms();
    let out = b.settle(&["trace-lease-1"], delivered(at_b)).await.unwrap();
    assert!(matches!(&out[0], Ok(Updated::Put(r)) if r.status == Status::Delivered));
    let late = a
        .settle(&["trace-lease-1"], |_, r| {
            let mut n = r.clone();
            n.status = Status::Dead;
            outbox::store::Change::Put(n)
        })
        .await
        .unwrap();
    assert!(
        matches!(&late[0], Ok(Updated::Busy(r)) if r.status == Status::Delivered),
        "{late:?}"
    );
    let r = a.get("trace-lease-1").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.delivered_at_ms),
        (Status::Delivered, Some(at_b))
    );
    let c = a.counts().await.unwrap();
    assert_eq!((c.delivered, c.dead, c.in_flight), (1, 0, 0));
    assert!(c.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_leases_come_back_after_the_lease_time() {
    let Some(pg) = Postgres::start("postgres lease of a dead instance") else {
        return;
    };
    let lease = Duration::from_millis(800);
    let a = open(&pg, lease).await;
    for i in 0..3 {
        a.submit(record(&format!("trace-dead-{i}"), r#"{"x":1}"#))
            .await
            .unwrap();
    }
    assert_eq!(
        a.claim_due(outbox::time::now_ms(), 2)
            .await
            .unwrap()
            .records
            .len(),
        2
    );
    drop(a); // the instance dies with its leases held
    let b = open(&pg, lease).await;
    let now = outbox::time::now_ms();
    let first = b.claim_due(now, 10).await.unwrap();
    assert_eq!(first.records.len(), 1, "only the unclaimed record");
    let id = first.records[0].trace_id.clone();
    b.settle(&[&id], super::delivered(now)).await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let again = b.claim_due(outbox::time::now_ms(), 10).await.unwrap();
    let mut ids: Vec<_> = again.records.iter().map(|r| r.trace_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["trace-dead-0", "trace-dead-1"]);
    // Given back unsent, a record is due at once and no attempt is spent.
    b.release(&["trace-dead-0"]).await.unwrap();
    let r = b.get("trace-dead-0").await.unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Pending, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_after_the_window_and_counted() {
    let Some(pg) = Postgres::start("postgres purge") else {
        return;
    };
    let s = open(&pg, LEASE).await;
    for (id, at) in [("trace-old", 1_000), ("trace-new", 5_000)] {
        s.submit(record(id, r#"{"x":1}"#)).await.unwrap();
        s.claim_due(i64::MAX, 1).await.unwrap();
        s.settle(&[id], delivered(at)).await.unwrap();
    }
    s.submit(record("trace-waiting", r#"{"x":1}"#))
        .await
        .unwrap();
    assert_eq!(
        s.purge_delivered_before(3_000, usize::MAX).await.unwrap(),
        1
    );
    assert!(s.get("trace-old").await.unwrap().is_none());
    assert!(s.get("trace-new").await.unwrap().is_some());
    assert!(s.get("trace-waiting").await.unwrap().is_some());
    let c = s.counts().await.unwrap();
    assert_eq!((c.accepted, c.purged, c.delivered, c.pending), (3, 1, 1, 1));
    assert!(c.balanced());
    // Past the window a repeated key is a new submission.
    assert!(matches!(
        s.submit(record("trace-old", r#"{"x":2}"#)).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_written_by_a_newer_release_is_refused_and_left_alone() {
    let Some(pg) = Postgres::start("postgres newer schema") else {
        return;
    };
    let s = open(&pg, LEASE).await;
    s.submit(record("trace-schema", r#"{"x":1}"#))
        .await
        .unwrap();
    drop(s);
    let client = sql(&pg).await;
    let newer = (schema::known_version() + 1) as i32;
    client
        .execute(
            &format!(
                "INSERT INTO {} (version, name, applied_on, checksum) VALUES ($1, 'future', 'now', '0')",
                schema::HISTORY_TABLE
            ),
            &[&newer],
        )
        .await
        .unwrap();
    let err = PgStore::open(&super::options(&pg, LEASE))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, PgStoreError::NewerSchema { found, .. } if found == i64::from(newer)),
        "{err:?}"
    );
    assert!(
        text.contains("newer outbox") && text.contains("restore"),
        "{text}"
    );
    let rows = client
        .query_one("SELECT count(*) FROM outbox_records", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 1, "nothing touched");
}
