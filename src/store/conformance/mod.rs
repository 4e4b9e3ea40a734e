//! The behaviour every engine behind the store boundary must show, as plain async functions
//! over [`RecordStore`]: each engine's tests open a fresh, empty store of their own and call
//! every function here with it (the sled store's in `sled_store`'s tests). The bodies are
//! the same for every engine, so the promises are checked once and kept by all.
//!
//! Each function checks the accounting identity after every operation, and that
//! [`RecordStore::verify`] finds nothing wrong at the end. Compiled for this crate's tests
//! and, with the `conformance` feature, for an engine's integration tests.

use super::boundary::RecordStore;
use super::{Change, Counts, Record, Status, SubmitOutcome, Updated};
use crate::intake::enrich::Enrichment;

mod retention;
pub use retention::{
    erasure_by_address, list_and_quarantine, purge_after_window, removals_are_counted,
};

/// One test per conformance check for an engine's test module: `conformance_tests!(fresh)`
/// where `fresh(check_name)` is an async fn returning `Option<(guard, store)>`: a new, empty
/// store (`store` dereferences to a [`RecordStore`]) and what must live as long as it (a
/// temporary directory, a cluster), or `None` when the engine cannot run here (after a loud
/// SKIP). The list of checks is kept here once, so a new check runs against every engine.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            idempotency,
            claim_and_settle,
            dead_letters,
            busy_record_refuses_changes,
            purge_after_window,
            erasure_by_address,
            list_and_quarantine,
            removals_are_counted,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_guard, store)) = $fresh(stringify!($name)).await else {
                return;
            };
            $crate::store::conformance::$name(&*store).await;
        }
    )*};
}

/// The receipt time of the records these checks submit, in ms: a fixed past instant, so
/// every due time and purge cut-off below is exact whatever the clock says.
pub const T0: i64 = 1_700_000_000_000;

/// A pending record under `trace_id` with `payload` (a JSON object's text), received and
/// due at `at_ms`.
pub fn record(trace_id: &str, payload: &str, at_ms: i64) -> Record {
    let fields = serde_json::from_str(payload).expect("a JSON object");
    let enrichment = Enrichment {
        received_at: crate::time::format_time(
            chrono::DateTime::from_timestamp_millis(at_ms).expect("a time in range"),
        ),
        client_ip: "203.0.113.7".into(),
        user_agent: Some("conformance".into()),
        trace_id: trace_id.into(),
        src: "conformance".into(),
        form_type: "contact".into(),
    };
    Record::pending(fields, enrichment, at_ms)
}

/// `r` as delivered at `at_ms`, after one more attempt.
fn delivered(r: &Record, at_ms: i64) -> Record {
    let mut n = r.clone();
    n.status = Status::Delivered;
    n.attempts += 1;
    n.last_attempt_at_ms = Some(at_ms);
    n.last_status_code = Some(200);
    n.delivered_at_ms = Some(at_ms);
    n
}

/// The counters now, asserting the accounting identity holds and the counts are `want`
/// (accepted, pending, in flight, delivered, dead, quarantined, purged).
async fn counted<S: RecordStore>(s: &S, step: &str, want: [u64; 7]) -> Counts {
    let c = s.counts().await.expect("counts");
    assert!(
        c.balanced(),
        "after {step}: the accounting identity fails: {c:?}"
    );
    let got = [
        c.accepted,
        c.pending,
        c.in_flight,
        c.delivered,
        c.dead,
        c.quarantined,
        c.purged,
    ];
    assert_eq!(got, want, "after {step}: counts {c:?}");
    c
}

async fn verified<S: RecordStore>(s: &S) {
    let v = s.verify().await.expect("verify");
    assert!(v.problems.is_empty(), "verify found: {:?}", v.problems);
}

/// Submits `r`, expecting it stored.
async fn stored<S: RecordStore>(s: &S, r: Record) {
    let id = r.trace_id.clone();
    match s.submit(r).await.expect("submit") {
        SubmitOutcome::Stored(receipt) => assert_eq!(receipt.trace_id, id),
        other => panic!("{id}: expected stored, got {other:?}"),
    }
}

/// Claims what is due at `now_ms` (up to `want`), as trace IDs in claim order.
async fn claim<S: RecordStore>(s: &S, now_ms: i64, want: usize) -> Vec<String> {
    let c = s.claim_due(now_ms, want).await.expect("claim_due");
    assert!(c.undecodable.is_empty(), "{:?}", c.undecodable);
    c.records.into_iter().map(|r| r.trace_id).collect()
}

/// Stored once; the same key and payload again is the original receipt; another payload
/// under that key is a conflict carrying the original receipt; nothing is stored twice.
/// This holds for the whole idempotency window: after delivery too.
pub async fn idempotency<S: RecordStore>(s: &S) {
    let first = record("conf-idem-1", r#"{"email":"a@example.org","n":1}"#, T0);
    let receipt = first.receipt();
    stored(s, first).await;
    counted(s, "the first post", [1, 1, 0, 0, 0, 0, 0]).await;
    // The same fields in another order are the same payload.
    let again = record("conf-idem-1", r#"{"n":1,"email":"a@example.org"}"#, T0 + 5);
    let out = s.submit(again).await.expect("submit");
    assert_eq!(out, SubmitOutcome::Duplicate(receipt.clone()));
    let other = record("conf-idem-1", r#"{"email":"b@example.org"}"#, T0 + 6);
    let out = s.submit(other).await.expect("submit");
    assert_eq!(out, SubmitOutcome::Conflict(receipt.clone()));
    counted(s, "a duplicate and a conflict", [1, 1, 0, 0, 0, 0, 0]).await;
    let kept = s.get("conf-idem-1").await.unwrap().expect("stored");
    assert_eq!(
        kept.payload.as_deref(),
        Some(r#"{"email":"a@example.org","n":1}"#)
    );
    // Delivered, its payload dropped as the delivery worker does (a tombstone): still inside
    // the window, so still recognised.
    assert_eq!(claim(s, T0, 10).await, ["conf-idem-1"]);
    let out = s.settle(&["conf-idem-1"], |_, r| {
        let mut n = delivered(r, T0 + 10);
        n.payload = None;
        Change::Put(n)
    });
    assert!(matches!(out.await.unwrap()[..], [Ok(Updated::Put(_))]));
    counted(s, "delivery", [1, 0, 0, 1, 0, 0, 0]).await;
    let tomb = s
        .get("conf-idem-1")
        .await
        .unwrap()
        .expect("kept for the window");
    assert_eq!((tomb.status, tomb.payload), (Status::Delivered, None));
    let again = record("conf-idem-1", r#"{"email":"a@example.org","n":1}"#, T0 + 20);
    assert_eq!(
        s.submit(again).await.unwrap(),
        SubmitOutcome::Duplicate(receipt.clone())
    );
    let other = record("conf-idem-1", r#"{"email":"c@example.org"}"#, T0 + 21);
    assert_eq!(
        s.submit(other).await.unwrap(),
        SubmitOutcome::Conflict(receipt)
    );
    counted(s, "posts after delivery", [1, 0, 0, 1, 0, 0, 0]).await;
    verified(s).await;
}

/// Claims take due records earliest first, never one already claimed or not yet due; a
/// claimed record reads as in flight; settles write outcomes (delivered, retry later) and
/// end the claims; a release gives a claim back with no attempt spent.
pub async fn claim_and_settle<S: RecordStore>(s: &S) {
    for (i, id) in ["conf-claim-a", "conf-claim-b", "conf-claim-c"]
        .iter()
        .enumerate()
    {
        stored(s, record(id, r#"{"k":"v"}"#, T0 + i as i64)).await;
    }
    assert!(claim(s, T0 - 1, 10).await.is_empty(), "nothing is due yet");
    assert_eq!(claim(s, T0 + 1, 10).await, ["conf-claim-a", "conf-claim-b"]);
    assert_eq!(
        claim(s, T0 + 5, 10).await,
        ["conf-claim-c"],
        "claimed ones are skipped"
    );
    counted(s, "three claims", [3, 0, 3, 0, 0, 0, 0]).await;
    let r = s.get("conf-claim-a").await.unwrap().unwrap();
    assert_eq!(r.status, Status::InFlight);
    let retry_at = T0 + 60_000;
    let out = s
        .settle(&["conf-claim-a", "conf-claim-b"], move |i, r| match i {
            0 => Change::Put(delivered(r, T0 + 10)),
            _ => {
                let mut n = r.clone();
                n.attempts += 1;
                n.last_status_code = Some(503);
                n.next_attempt_at_ms = retry_at;
                Change::Put(n)
            }
        })
        .await
        .unwrap();
    assert!(
        matches!(out[..], [Ok(Updated::Put(_)), Ok(Updated::Put(_))]),
        "{out:?}"
    );
    s.release(&["conf-claim-c"]).await.unwrap();
    counted(s, "settle and release", [3, 2, 0, 1, 0, 0, 0]).await;
    let c = s.get("conf-claim-c").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.attempts),
        (Status::Pending, 0),
        "released unspent"
    );
    let b = s.get("conf-claim-b").await.unwrap().unwrap();
    assert_eq!(
        (b.status, b.attempts, b.next_attempt_at_ms),
        (Status::Pending, 1, retry_at)
    );
    assert_eq!(
        claim(s, T0 + 100, 10).await,
        ["conf-claim-c"],
        "b waits for its retry"
    );
    assert_eq!(claim(s, retry_at, 10).await, ["conf-claim-b"]);
    // A settle for a record this store holds no claim on (given back meanwhile) writes
    // nothing.
    s.release(&["conf-claim-b", "conf-claim-c"]).await.unwrap();
    let out = s
        .settle(&["conf-claim-b"], |_, r| {
            Change::Put(delivered(r, T0 + 200))
        })
        .await
        .unwrap();
    assert!(!matches!(out[..], [Ok(Updated::Put(_))]), "{out:?}");
    counted(s, "a settle without a claim", [3, 2, 0, 1, 0, 0, 0]).await;
    verified(s).await;
}

/// A record given up on is a dead letter: counted dead, never claimed again, until a replay
/// (an update to pending) puts it back in the queue.
pub async fn dead_letters<S: RecordStore>(s: &S) {
    stored(s, record("conf-dead-1", r#"{"k":"v"}"#, T0)).await;
    assert_eq!(claim(s, T0, 10).await, ["conf-dead-1"]);
    let out = s.settle(&["conf-dead-1"], |_, r| {
        let mut n = r.clone();
        n.status = Status::Dead;
        n.attempts += 1;
        n.dead_at_ms = Some(T0 + 10);
        Change::Put(n)
    });
    assert!(matches!(out.await.unwrap()[..], [Ok(Updated::Put(_))]));
    counted(s, "a dead letter", [1, 0, 0, 0, 1, 0, 0]).await;
    assert!(
        claim(s, i64::MAX / 2, 10).await.is_empty(),
        "dead letters are not claimed"
    );
    let out = s.update("conf-dead-1", |r| {
        let mut n = r.clone();
        n.status = Status::Pending;
        n.dead_at_ms = None;
        n.next_attempt_at_ms = T0 + 20;
        Change::Put(n)
    });
    assert!(matches!(out.await.unwrap(), Updated::Put(_)));
    counted(s, "a replay", [1, 1, 0, 0, 0, 0, 0]).await;
    assert_eq!(claim(s, T0 + 20, 10).await, ["conf-dead-1"]);
    s.release(&["conf-dead-1"]).await.unwrap();
    verified(s).await;
}

/// A replay or an edit of a record being delivered is refused ([`Updated::Busy`]) and changes
/// nothing; once the attempt is settled, the same change goes through.
pub async fn busy_record_refuses_changes<S: RecordStore>(s: &S) {
    stored(s, record("conf-busy-1", r#"{"k":"v"}"#, T0)).await;
    assert_eq!(claim(s, T0, 10).await, ["conf-busy-1"]);
    let edit = |r: &Record| {
        let mut n = r.clone();
        n.payload = Some(r#"{"k":"edited"}"#.into());
        Change::Put(n)
    };
    let out = s.update("conf-busy-1", edit).await.unwrap();
    assert!(matches!(out, Updated::Busy(_)), "{out:?}");
    let r = s.get("conf-busy-1").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.payload.as_deref()),
        (Status::InFlight, Some(r#"{"k":"v"}"#))
    );
    counted(s, "a refused edit", [1, 0, 1, 0, 0, 0, 0]).await;
    let out = s.update("conf-busy-1", |_| Change::Purge).await.unwrap();
    assert!(matches!(out, Updated::Busy(_)), "{out:?}");
    s.release(&["conf-busy-1"]).await.unwrap();
    assert!(matches!(
        s.update("conf-busy-1", edit).await.unwrap(),
        Updated::Put(_)
    ));
    let r = s.get("conf-busy-1").await.unwrap().unwrap();
    assert_eq!(r.payload.as_deref(), Some(r#"{"k":"edited"}"#));
    counted(s, "an edit after the attempt", [1, 1, 0, 0, 0, 0, 0]).await;
    verified(s).await;
}
