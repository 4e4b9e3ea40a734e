//! `outbox move-store` refusals and checks through the binary: a served data directory, a
//! database with a history of its own, a target that is not new, a copy that does not match
//! its source, and the quarantined rows PostgreSQL itself set aside (moved out and back as
//! they were, refused when one trace ID has two).

use super::harness::ops::{self, outbox};
use super::harness::postgres::Postgres;
use super::harness::spawn_app_in;
use super::move_store::{
    body, contents, move_store, moved, refused, stored, verifies_clean, LEASE,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_refuses_a_served_directory_a_used_database_and_a_target_that_is_not_new() {
    let Some(pg) = Postgres::start("move-store refusals") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ops::seed(&dir, vec![ops::record("move-mine", body("move-mine", "x"))]);

    // A data directory a server holds.
    let app = spawn_app_in(&dir, &[]).await;
    let run = move_store(&dir, "postgres", &pg.url());
    assert_eq!(run.code, 2, "{}", run.stderr);
    // Its admin socket answers (a server is running), or, on a loaded machine before it
    // does, sled's lock says the directory is in use: both say to stop it.
    let said = |t: &str| run.stderr.contains(t);
    assert!(
        (said("a server is running on") || said("in use by another outbox process"))
            && said("stop it"),
        "{}",
        run.stderr
    );
    ops::stop(app).await;

    // A database that holds records this move did not copy.
    let store = super::open(&pg, LEASE).await;
    stored(&store, "someone-elses", r#"{"a":1}"#).await;
    let run = move_store(&dir, "postgres", &pg.url());
    refused(
        &run,
        &[
            "already holds 1 record this move did not copy (someone-elses)",
            "nothing was written",
        ],
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.accepted, c.pending), (1, 1), "nothing was written");

    // A database an instance is delivering from.
    assert_eq!(
        store.claim_due(i64::MAX, 10).await.unwrap().records.len(),
        1
    );
    let new = tmp.path().join("new");
    let run = move_store(&new, "embedded", &pg.url());
    refused(
        &run,
        &[
            "an outbox instance is delivering from this PostgreSQL store",
            "stop every instance",
        ],
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["data"], "no new directory, no half copy");

    // A data directory that is not new.
    let run = move_store(&dir, "embedded", &pg.url());
    refused(&run, &["is not empty"]);
    assert_eq!(contents(&dir).records.len(), 1, "left as it was");

    // No PostgreSQL store named at all.
    let run = outbox(&dir, "move-store", &["--to", "postgres"]);
    refused(&run, &["pass --store-url"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_does_not_match_its_source_is_an_error_naming_the_record() {
    let Some(pg) = Postgres::start("move-store check") else {
        return;
    };
    let store = super::open(&pg, LEASE).await;
    stored(&store, "move-fine", r#"{"a":1}"#).await;
    // A tombstone that kept its client's address, as no outbox writes one: the data
    // directory keeps no client details for a tombstone, so its copy cannot be the same.
    let client = super::sql(&pg).await;
    client
        .execute(
            "INSERT INTO outbox_records (trace_id, status, attempts, received_at_ms, received_at, \
               due_at_ms, payload_hash, client_ip, src, form_type, delivered_at_ms) \
             VALUES ('move-hand-made', 'delivered', 1, 1700000000000, '2023-11-14T22:13:20.000Z', \
               1700000000000, decode(repeat('07', 32), 'hex'), '203.0.113.5', 'site', 'contact', \
               1700000000500)",
            &[],
        )
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let back = tmp.path().join("back");
    let run = move_store(&back, "embedded", &pg.url());
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("1 record differs between source and target: move-hand-made")
            && run.stderr.contains("do not switch the service"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "no data directory, no half copy: {left:?}");
    assert_eq!(
        store.counts().await.unwrap().accepted,
        1,
        "the source is unchanged (the hand-made row was never counted as accepted)"
    );

    // A record PostgreSQL quarantined itself moves out and back as the same row. Back into
    // the database it came from: its committers counted the records the move brings back.
    client
        .execute(
            "DELETE FROM outbox_records WHERE trace_id = 'move-hand-made'",
            &[],
        )
        .await
        .unwrap();
    stored(&store, "move-set-aside", r#"{"email":"q@example.com"}"#).await;
    store
        .quarantine("move-set-aside", "set aside by PostgreSQL")
        .await
        .unwrap();
    let row_before: Value = client
        .query_one("SELECT record FROM outbox_quarantine", &[])
        .await
        .unwrap()
        .get(0);
    let moved_out = ["moved 1 record (1 pending, 0 delivered, 0 dead) and 1 quarantined entry"];
    moved(&back, "embedded", &pg.url(), &moved_out);
    let out = contents(&back);
    assert_eq!((out.counts.accepted, out.counts.quarantined), (2, 1));
    let (id, entry) = &out.quarantined[0];
    let entry: Value = serde_json::from_str(entry).unwrap();
    assert_eq!(id, "move-set-aside");
    assert_eq!(
        (
            &entry["reason"],
            &entry["previous_status"],
            &entry["postgres_row"]
        ),
        (
            &json!("set aside by PostgreSQL"),
            &json!("pending"),
            &json!(true)
        )
    );
    pg.psql("CREATE DATABASE moved_back");
    let fresh = pg.url().replace("/postgres?", "/moved_back?");
    moved(&back, "postgres", &fresh, &moved_out);
    let (fresh_client, conn) = tokio_postgres::connect(&fresh, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row_after: Value = fresh_client
        .query_one("SELECT record FROM outbox_quarantine", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        row_after, row_before,
        "the row PostgreSQL set aside, as it was"
    );
    verifies_clean(&fresh, 1);
    let says = ["2 of them were there from an earlier run; this run wrote 0"];
    moved(&back, "postgres", &pg.url(), &says);
    assert_eq!(store.counts().await.unwrap(), out.counts);
    verifies_clean(&pg.url(), 1);

    // A trace ID PostgreSQL quarantined twice cannot become one entry of a data directory.
    stored(&store, "move-set-aside", r#"{"email":"q2@example.com"}"#).await;
    store.quarantine("move-set-aside", "again").await.unwrap();
    let twice = tmp.path().join("twice");
    let run = move_store(&twice, "embedded", &pg.url());
    refused(
        &run,
        &["quarantined 1 trace ID more than once (move-set-aside)"],
    );
    assert!(!twice.exists(), "no data directory");

    // A row changed after a move is no longer what the move copied: a rerun refuses it.
    client
        .execute(
            "UPDATE outbox_records SET attempts = 5 WHERE trace_id = 'move-fine'",
            &[],
        )
        .await
        .unwrap();
    let run = move_store(&back, "postgres", &pg.url());
    refused(&run, &["did not copy (move-fine"]);
}
