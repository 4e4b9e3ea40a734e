//! The ops commands that list or change records on the PostgreSQL store, through the binary:
//! `inspect --list`, the summary and `top`, `replay`, `edit`, `purge`, the erasure by
//! address and `verify`. Each runs on [`every_status`]'s records; a change to the record
//! under the test store's lease is refused as it is on a data directory.

use super::harness::postgres::Postgres;
use super::ops::{every_status, outbox_pg, DEAD, FLYING, NEW_TOMB, NOTED, OLD_TOMB, PENDING};
use outbox::store::Status;
use serde_json::{json, Value};

fn ids(rows: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_summarises_and_finds_prefixes_on_postgresql() {
    let Some(pg) = Postgres::start("ops inspect list on postgres") else {
        return;
    };
    let _store = every_status(&pg).await;
    let url = pg.url();
    let all = outbox_pg(&url, "inspect", &["--list", "--json"]).json();
    let mut every = vec![DEAD, FLYING, NEW_TOMB, NOTED, OLD_TOMB, PENDING];
    every.sort_unstable();
    assert_eq!(ids(&all), every);
    let dead = outbox_pg(&url, "inspect", &["--list", "--status", "dead", "--json"]).json();
    assert_eq!(ids(&dead), [DEAD]);
    assert_eq!(dead[0]["status_code"], 422);

    let s = outbox_pg(&url, "inspect", &["--json"]).json();
    let c = &s["counts"];
    assert_eq!(
        (
            &c["pending"],
            &c["in_flight"],
            &c["dead"],
            &c["delivered"],
            &c["accepted"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(2), &json!(6))
    );
    assert_eq!((&s["balanced"], &s["shared"]), (&json!(true), &json!(true)));
    assert!(s["data_dir"].as_str().unwrap().starts_with("postgres://"));
    assert!(s["oldest_pending_at"].is_string() && s["next_attempt_at"].is_string());
    let text = outbox_pg(&url, "inspect", &[]).stdout;
    assert!(text.starts_with("store           postgres://"), "{text}");
    assert!(text.contains("pending                  2"), "{text}");
    assert!(text.contains("delivery        by the instances that share the store"));

    let by_prefix = outbox_pg(&url, "inspect", &["trace-pg-dead", "--json"]).json();
    assert_eq!(by_prefix["trace_id"], DEAD);
    let ambiguous = outbox_pg(&url, "inspect", &["trace-pg-"]);
    assert_eq!(ambiguous.code, 2);
    assert!(ambiguous
        .stderr
        .contains("is the start of more than one trace ID"));
    let missing = outbox_pg(&url, "inspect", &["trace-pg-nothing-here"]);
    assert_eq!(missing.code, 2);
    assert!(missing
        .stderr
        .contains("no record with trace ID trace-pg-nothing-here"));

    let top = outbox_pg(&url, "top", &[]);
    assert_eq!(top.code, 0, "{}", top.stderr);
    assert!(
        top.stdout
            .starts_with("outbox top - PostgreSQL store postgres://"),
        "{}",
        top.stdout
    );
    assert!(
        top.stdout.contains("pending 2   in flight 1   dead 1"),
        "{}",
        top.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_dead_letter_on_postgresql_puts_it_back_and_refuses_one_being_delivered() {
    let Some(pg) = Postgres::start("ops replay on postgres") else {
        return;
    };
    let store = every_status(&pg).await;
    let r = outbox_pg(&pg.url(), "replay", &[DEAD, FLYING, "--json"]);
    assert_eq!(r.code, 1, "one refusal: {}", r.stderr);
    let out = r.json();
    assert_eq!(out["replayed"], json!([DEAD]));
    assert_eq!(out["refused"][0]["trace_id"], FLYING);
    assert_eq!(
        out["refused"][0]["reason"],
        "being delivered right now; retry when the attempt ends"
    );
    let back = store.get(DEAD).await.unwrap().unwrap();
    assert_eq!((back.status, back.attempts), (Status::Pending, 0));
    assert_eq!(back.audit.last().unwrap().action, "replay (was dead)");
    let c = store.counts().await.unwrap();
    assert_eq!((c.pending, c.dead, c.in_flight), (3, 0, 1));
    assert!(c.balanced());
    let claimed = store.claim_due(outbox::time::now_ms(), 10).await.unwrap();
    assert!(
        claimed.records.iter().any(|r| r.trace_id == DEAD),
        "a worker finds the replayed record due"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_of_a_pending_record_on_postgresql_keeps_an_audit_line_and_refuses_one_being_delivered(
) {
    let Some(pg) = Postgres::start("ops edit on postgres") else {
        return;
    };
    let store = every_status(&pg).await;
    let before = store.get(PENDING).await.unwrap().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("payload.json");
    std::fs::write(&file, r#"{"email": "p@example.org", "n": 2}"#).unwrap();
    let file = file.to_str().unwrap();
    let args = |id: &'static str| vec![id, "--payload", file, "--note", "fixed n"];

    let r = outbox_pg(&pg.url(), "edit", &[args(PENDING), vec!["--json"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown = r.json();
    assert_eq!(shown["payload"], json!({"email": "p@example.org", "n": 2}));
    let edit = shown["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&edit["action"], &edit["note"]),
        (&json!("edit"), &json!("fixed n"))
    );
    assert_eq!(
        edit["previous_payload_sha256"],
        hex::encode(before.payload_hash)
    );
    let after = store.get(PENDING).await.unwrap().unwrap();
    assert_eq!(
        after.payload.as_deref(),
        Some(r#"{"email":"p@example.org","n":2}"#)
    );

    let busy = outbox_pg(&pg.url(), "edit", &args(FLYING));
    assert_eq!(busy.code, 2);
    assert!(
        busy.stderr.contains("is being delivered right now"),
        "{}",
        busy.stderr
    );
    let delivered = outbox_pg(&pg.url(), "edit", &args(NEW_TOMB));
    assert_eq!(delivered.code, 2);
    assert!(delivered
        .stderr
        .contains("only pending records and dead letters can be edited"));
    let text = outbox_pg(&pg.url(), "edit", &args(DEAD)).stdout;
    assert!(
        text.contains(&format!(
            "replay it with `outbox replay {DEAD} --store-url 'postgres://"
        )),
        "{text}"
    );
    assert!(store.counts().await.unwrap().balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_on_postgresql_drops_old_tombstones_and_guards_the_idempotency_window() {
    let Some(pg) = Postgres::start("ops purge on postgres") else {
        return;
    };
    let store = every_status(&pg).await;
    let url = pg.url();
    let dry = outbox_pg(
        &url,
        "purge",
        &["--older-than", "30d", "--dry-run", "--json"],
    );
    assert_eq!(dry.json()["tombstones_purged"], 1, "{}", dry.stderr);
    let now = outbox::time::rfc3339(outbox::time::now_ms());
    let inside = outbox_pg(&url, "purge", &["--before", &now, "--yes"]);
    assert_eq!(inside.code, 2, "{}", inside.stdout);
    assert!(inside
        .stderr
        .contains("purge refused: 1 tombstone was delivered within the idempotency window"));
    let done = outbox_pg(&url, "purge", &["--older-than", "30d", "--yes", "--json"]).json();
    assert_eq!(
        (&done["dry_run"], &done["tombstones_purged"]),
        (&json!(false), &json!(1))
    );
    assert!(store.get(OLD_TOMB).await.unwrap().is_none());
    assert!(
        store.get(NEW_TOMB).await.unwrap().is_some(),
        "inside the window"
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.purged, c.delivered), (1, 1));
    assert!(c.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_by_address_on_postgresql_removes_its_records_and_scrubs_audit_notes() {
    let Some(pg) = Postgres::start("ops erasure on postgres") else {
        return;
    };
    let store = every_status(&pg).await;
    // Two quarantined rows, one of them holding the address: the quarantine is searched too.
    for (id, email) in [
        ("q-mentions", "jo.doe@EXAMPLE.com"),
        ("q-other", "x@example.org"),
    ] {
        let fields = format!(r#"{{"email":"{email}"}}"#);
        store.submit(super::record(id, &fields)).await.unwrap();
        store.quarantine(id, "cannot be sent").await.unwrap();
    }
    let url = pg.url();
    let args = ["--erase-email", "JO.DOE@example.com", "--json"];
    let dry = outbox_pg(&url, "purge", &[&args[..], &["--dry-run"]].concat()).json();
    assert_eq!(
        (
            &dry["erased"],
            &dry["audit_notes_scrubbed"],
            &dry["quarantined_copies_erased"]
        ),
        (&json!([DEAD]), &json!(1), &json!(1))
    );
    assert!(
        store.get(DEAD).await.unwrap().is_some(),
        "a dry run changes nothing"
    );
    assert_eq!(store.counts().await.unwrap().quarantined, 2);
    let done = outbox_pg(&url, "purge", &[&args[..], &["--yes"]].concat()).json();
    assert_eq!(
        (
            &done["erased"],
            &done["audit_notes_scrubbed"],
            &done["quarantined_copies_erased"]
        ),
        (&json!([DEAD]), &json!(1), &json!(1))
    );
    assert!(store.get(DEAD).await.unwrap().is_none());
    let noted = store.get(NOTED).await.unwrap().unwrap();
    let note = noted.audit.last().unwrap().note.clone().unwrap();
    assert_eq!(note, "asked by [erased] to resend");
    let c = store.counts().await.unwrap();
    assert_eq!((c.purged, c.dead, c.quarantined), (2, 0, 1));
    assert!(c.balanced());
    let verify = outbox_pg(&url, "verify", &["--json"]).json();
    assert_eq!(verify["problems"], json!([]), "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_postgresql_checks_every_record_and_the_accounting() {
    let Some(pg) = Postgres::start("ops verify on postgres") else {
        return;
    };
    let _store = every_status(&pg).await;
    let r = outbox_pg(&pg.url(), "verify", &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!((&out["records"], &out["problems"]), (&json!(6), &json!([])));
    let text = outbox_pg(&pg.url(), "verify", &[]).stdout;
    assert_eq!(text, "6 records checked, 0 problems\n");
}
