//! The conformance checks of what leaves the lifecycle: purge after the idempotency window,
//! erasure by address, listing and quarantine (see [`super`]).

use super::{claim, counted, delivered, record, stored, verified, T0};
use crate::store::boundary::RecordStore;
use crate::store::{Change, Record, Status, Updated};

/// Delivered records stay (and answer duplicates) until their window is over, then a purge
/// removes them, counted as purged; queued and dead records are never purged. After the
/// purge the key is new again.
pub async fn purge_after_window<S: RecordStore>(s: &S) {
    for id in ["conf-purge-old", "conf-purge-new", "conf-purge-queued"] {
        stored(s, record(id, r#"{"k":"v"}"#, T0)).await;
    }
    assert_eq!(claim(s, T0, 2).await, ["conf-purge-new", "conf-purge-old"]);
    let out = s.settle(&["conf-purge-old", "conf-purge-new"], |i, r| {
        Change::Put(delivered(r, T0 + 1_000 * (1 + i as i64)))
    });
    assert!(out
        .await
        .unwrap()
        .iter()
        .all(|r| matches!(r, Ok(Updated::Put(_)))));
    counted(s, "two deliveries", [3, 1, 0, 2, 0, 0, 0]).await;
    assert_eq!(s.purge_delivered_before(T0 + 1_000, 100).await.unwrap(), 0);
    assert_eq!(s.purge_delivered_before(T0 + 1_001, 100).await.unwrap(), 1);
    assert!(s.get("conf-purge-old").await.unwrap().is_none());
    assert!(
        s.get("conf-purge-new").await.unwrap().is_some(),
        "still in its window"
    );
    counted(s, "a purge", [3, 1, 0, 1, 0, 0, 1]).await;
    assert_eq!(
        s.purge_delivered_before(i64::MAX / 2, 100).await.unwrap(),
        1
    );
    assert!(
        s.get("conf-purge-queued").await.unwrap().is_some(),
        "queued stays"
    );
    counted(s, "the second purge", [3, 1, 0, 0, 0, 0, 2]).await;
    stored(s, record("conf-purge-old", r#"{"k":"v"}"#, T0 + 5_000)).await;
    counted(s, "the key posted after its window", [4, 2, 0, 0, 0, 0, 2]).await;
    verified(s).await;
}

/// An erasure removes every record that mentions the address in any letter case, dead
/// letters included, counted as purged; records that do not mention it stay.
pub async fn erasure_by_address<S: RecordStore>(s: &S) {
    stored(
        s,
        record("conf-erase-1", r#"{"email":"Ann@Example.org"}"#, T0),
    )
    .await;
    stored(
        s,
        record(
            "conf-erase-2",
            r#"{"note":"write to ANN@EXAMPLE.ORG"}"#,
            T0 + 1,
        ),
    )
    .await;
    stored(
        s,
        record("conf-erase-3", r#"{"email":"bob@example.org"}"#, T0 + 2),
    )
    .await;
    assert_eq!(claim(s, T0 + 1, 10).await, ["conf-erase-1", "conf-erase-2"]);
    let out = s.settle(&["conf-erase-1", "conf-erase-2"], |i, r| {
        let mut n = r.clone();
        if i == 1 {
            n.status = Status::Dead;
            n.dead_at_ms = Some(T0 + 10);
        }
        Change::Put(n)
    });
    assert!(out
        .await
        .unwrap()
        .iter()
        .all(|r| matches!(r, Ok(Updated::Put(_)))));
    counted(s, "one pending, one dead", [3, 2, 0, 0, 1, 0, 0]).await;
    let mut erased = s.erase_address("ann@example.org").await.unwrap();
    erased.sort();
    assert_eq!(erased, ["conf-erase-1", "conf-erase-2"]);
    assert!(s.get("conf-erase-1").await.unwrap().is_none());
    assert!(s.get("conf-erase-2").await.unwrap().is_none());
    assert!(s.get("conf-erase-3").await.unwrap().is_some());
    counted(s, "the erasure", [3, 1, 0, 0, 0, 0, 2]).await;
    let listed: Vec<_> = s
        .page(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.trace_id)
        .collect();
    assert_eq!(listed, ["conf-erase-3"]);
    verified(s).await;
}

/// Listing pages through records in trace ID order; a quarantined record leaves the
/// lifecycle, counted as quarantined, and is listed among the quarantined entries with its
/// reason and the time it was quarantined.
pub async fn list_and_quarantine<S: RecordStore>(s: &S) {
    assert!(s.quarantined().await.unwrap().is_empty());
    for id in ["conf-list-c", "conf-list-a", "conf-list-b"] {
        stored(s, record(id, r#"{"k":"v"}"#, T0)).await;
    }
    let ids = |p: Vec<Record>| p.into_iter().map(|r| r.trace_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.page(None, 2).await.unwrap()),
        ["conf-list-a", "conf-list-b"]
    );
    assert_eq!(
        ids(s.page(Some("conf-list-b"), 2).await.unwrap()),
        ["conf-list-c"]
    );
    let before = crate::time::now_ms();
    s.quarantine("conf-list-b", "conformance").await.unwrap();
    let after = crate::time::now_ms();
    assert!(s.get("conf-list-b").await.unwrap().is_none());
    let listed = s.quarantined().await.unwrap();
    let found: Vec<_> = listed
        .iter()
        .map(|q| (q.trace_id.as_str(), q.entry.reason.as_str()))
        .collect();
    assert_eq!(found, [("conf-list-b", "conformance")]);
    let at = listed[0].entry.quarantined_at_ms;
    // A database's clock may round to the nearest millisecond where this one truncates.
    assert!(
        (before - 1..=after + 1).contains(&at),
        "quarantined at {at}"
    );
    assert_eq!(
        ids(s.page(None, 10).await.unwrap()),
        ["conf-list-a", "conf-list-c"]
    );
    counted(s, "a quarantine", [3, 2, 0, 0, 0, 1, 0]).await;
    verified(s).await;
}

/// Every way a record leaves the lifecycle moves the counters with it: an update that
/// purges, a settle that purges, a quarantine of a dead letter; a change that keeps, and
/// changes of a record that is not there, move nothing.
pub async fn removals_are_counted<S: RecordStore>(s: &S) {
    for (i, id) in ["conf-rm-a", "conf-rm-b", "conf-rm-c"].iter().enumerate() {
        stored(s, record(id, r#"{"k":"v"}"#, T0 + i as i64)).await;
    }
    assert!(matches!(
        s.update("conf-rm-a", |_| Change::Keep).await.unwrap(),
        Updated::Kept(_)
    ));
    counted(s, "a change that keeps", [3, 3, 0, 0, 0, 0, 0]).await;
    assert_eq!(
        s.update("conf-rm-a", |_| Change::Purge).await.unwrap(),
        Updated::Purged
    );
    assert!(s.get("conf-rm-a").await.unwrap().is_none());
    counted(s, "an update that purges", [3, 2, 0, 0, 0, 0, 1]).await;
    assert_eq!(claim(s, T0 + 10, 10).await, ["conf-rm-b", "conf-rm-c"]);
    let out = s.settle(&["conf-rm-b", "conf-rm-c"], |i, r| match i {
        0 => Change::Purge,
        _ => {
            let mut n = r.clone();
            n.status = Status::Dead;
            n.attempts += 1;
            n.dead_at_ms = Some(T0 + 20);
            Change::Put(n)
        }
    });
    let out = out.await.unwrap();
    assert!(
        matches!(out[..], [Ok(Updated::Purged), Ok(Updated::Put(_))]),
        "{out:?}"
    );
    counted(s, "a settle that purges", [3, 0, 0, 0, 1, 0, 2]).await;
    s.quarantine("conf-rm-c", "conformance").await.unwrap();
    counted(s, "a dead letter quarantined", [3, 0, 0, 0, 0, 1, 2]).await;
    assert_eq!(
        s.update("conf-rm-a", |_| Change::Purge).await.unwrap(),
        Updated::NotFound
    );
    s.quarantine("conf-rm-missing", "conformance")
        .await
        .unwrap();
    counted(s, "changes of records not there", [3, 0, 0, 0, 0, 1, 2]).await;
    verified(s).await;
}
