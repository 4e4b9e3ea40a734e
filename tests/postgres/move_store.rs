//! `outbox move-store` through the binary: a data directory with records of every status
//! (delivered by a stub dashboard, refused into dead letters, retried, fresh, quarantined,
//! purged) moves into PostgreSQL and back into a new data directory; nothing is lost, the
//! accounting carries over, duplicates are still recognised, a rerun is harmless, and what
//! must be refused is (those in [`super::move_store_checks`]).

use super::harness::dashboard::{Dashboard, Reply};
use super::harness::ops::{self, outbox, Run};
use super::harness::postgres::Postgres;
use super::harness::spawn_app_in;
use super::ops::outbox_pg;
use outbox::store::postgres::PgStore;
use outbox::store::{Change, Counts, Quarantined, Record, Store, SubmitOutcome};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "test-ingest-key-0123456789";
pub(super) const LEASE: Duration = Duration::from_secs(60);

/// Everything a store holds, for comparing two of them.
#[derive(Debug, PartialEq)]
pub(super) struct Contents {
    pub records: Vec<Record>,
    pub quarantined: Vec<(String, String)>,
    pub counts: Counts,
}

/// What the stopped data directory `dir` holds.
pub(super) fn contents(dir: &Path) -> Contents {
    ops::wait_released(dir);
    let s = Store::open(dir).unwrap();
    let c = Contents {
        records: s.records().map(Result::unwrap).collect(),
        quarantined: s
            .quarantined()
            .map(|q| q.map(|Quarantined { trace_id, entry }| (trace_id, entry.encode())))
            .map(|q| {
                q.map(|(id, e)| (id, String::from_utf8(e).unwrap()))
                    .unwrap()
            })
            .collect(),
        counts: s.counts().unwrap(),
    };
    drop(s);
    ops::wait_released(dir);
    c
}

pub(super) fn move_store(dir: &Path, to: &str, url: &str) -> Run {
    outbox(dir, "move-store", &["--to", to, "--store-url", url])
}

/// `outbox verify` on the PostgreSQL store at `url` finds nothing wrong with its `records`.
pub(super) fn verifies_clean(url: &str, records: u64) {
    let run = outbox_pg(url, "verify", &["--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = run.json();
    assert_eq!(
        (&out["records"], &out["problems"]),
        (&json!(records), &json!([]))
    );
}

/// Submits a new record `trace_id` with `fields` (JSON) to the PostgreSQL store.
pub(super) async fn stored(store: &PgStore, trace_id: &str, fields: &str) {
    let r = super::record(trace_id, fields);
    assert!(matches!(
        store.submit(r).await.unwrap(),
        SubmitOutcome::Stored(_)
    ));
}

/// A run refused with exit 2, saying each of `says` on stderr.
pub(super) fn refused(run: &Run, says: &[&str]) {
    assert_eq!(run.code, 2, "{}", run.stderr);
    for text in says {
        assert!(run.stderr.contains(text), "{text:?} in {}", run.stderr);
    }
}

/// A move that succeeds and says each of `says` on stdout.
pub(super) fn moved(dir: &Path, to: &str, url: &str, says: &[&str]) {
    let run = move_store(dir, to, url);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for text in says {
        assert!(run.stdout.contains(text), "{text:?} in {}", run.stdout);
    }
}

/// The body posted under `key`: the dashboard stub answers by its `outcome` field.
pub(super) fn body(key: &str, outcome: &str) -> Value {
    json!({"email": format!("{key}@example.com"), "outcome": outcome})
}

/// A data directory built by a real server and a stub dashboard: 4 delivered (one of them
/// purged since), 3 dead (400), 3 retrying (503, next attempt in an hour), then offline
/// 2 fresh pending and 1 quarantined.
async fn a_store_of_every_status(dir: &Path) {
    let dash = Dashboard::start().await;
    dash.set_handler(|r| match r.json().to_string() {
        s if s.contains("refuse") => Reply::status(400),
        s if s.contains("later") => Reply::status(503),
        _ => Reply::ok(),
    });
    let url = dash.url();
    let flags = [
        "--dashboard-url",
        &url,
        "--ingest-key",
        KEY,
        "--retry-base",
        "1h",
        "--retry-cap",
        "1h",
    ];
    let app = spawn_app_in(dir, &flags).await;
    for (outcome, n) in [("deliver", 4), ("refuse", 3), ("later", 3)] {
        for i in 0..n {
            let key = format!("move-{outcome}-{i}");
            let r = app
                .post_json(&body(&key, outcome), &[("Idempotency-Key", &key)])
                .await;
            assert_eq!(r.status(), 202, "{key}");
        }
    }
    dash.wait_for_requests(10).await;
    app.wait_detailed("every first attempt settled", |d| {
        d["counts"]["delivered"] == 4 && d["counts"]["dead"] == 3 && d["counts"]["in_flight"] == 0
    })
    .await;
    ops::stop(app).await;
    ops::seed(
        dir,
        ["move-fresh-0", "move-fresh-1", "move-quarantined"]
            .map(|k| ops::record(k, body(k, "fresh")))
            .to_vec(),
    );
    let s = Store::open(dir).unwrap();
    s.quarantine("move-quarantined", "set aside by the test")
        .unwrap();
    assert_eq!(
        s.update("move-deliver-3", |_| Change::Purge).unwrap(),
        outbox::store::Updated::Purged
    );
    s.sync().unwrap();
    drop(s);
    ops::wait_released(dir);
}

/// What a client's retry of `key` (same payload, later) and another payload under it get.
async fn duplicates<E: std::fmt::Debug>(
    submit: impl AsyncFn(Record) -> Result<SubmitOutcome, E>,
    original: &Record,
) {
    let key = &original.trace_id;
    let retry = ops::record(
        key,
        body(
            key,
            if key.contains("deliver") {
                "deliver"
            } else {
                "refuse"
            },
        ),
    );
    assert_eq!(
        submit(retry).await.unwrap(),
        SubmitOutcome::Duplicate(original.receipt()),
        "{key}: 200 with the original receipt"
    );
    let other = ops::record(key, body(key, "something else"));
    assert_eq!(
        submit(other).await.unwrap(),
        SubmitOutcome::Conflict(original.receipt()),
        "{key}: 409"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_every_status_moves_to_postgres_and_back_losing_nothing() {
    let Some(pg) = Postgres::start("move-store between sled and PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    a_store_of_every_status(&dir).await;
    let before = contents(&dir);
    let every_status = Counts {
        accepted: 13,
        pending: 5,
        in_flight: 0,
        delivered: 3,
        dead: 3,
        quarantined: 1,
        purged: 1,
    };
    assert_eq!(before.counts, every_status);
    let retrying = before
        .records
        .iter()
        .find(|r| r.trace_id == "move-later-0")
        .unwrap();
    assert!(
        retrying.attempts == 1 && retrying.last_error.is_some(),
        "{retrying:?}"
    );

    // Into PostgreSQL.
    let says = [
        "moved 11 records (5 pending, 3 delivered, 3 dead) and 1 quarantined entry",
        "verified",
        "set store_url",
    ];
    moved(&dir, "postgres", &pg.url(), &says);
    assert_eq!(contents(&dir), before, "the source is unchanged");
    verifies_clean(&pg.url(), 11);
    let store = super::open(&pg, LEASE).await;
    assert_eq!(store.counts().await.unwrap(), before.counts);
    for r in &before.records {
        assert_eq!(store.get(&r.trace_id).await.unwrap().as_ref(), Some(r));
    }
    let client = super::sql(&pg).await;
    let q = client
        .query_one("SELECT trace_id, reason FROM outbox_quarantine", &[])
        .await
        .unwrap();
    assert_eq!(
        (q.get::<_, String>(0), q.get::<_, String>(1)),
        ("move-quarantined".into(), "set aside by the test".into())
    );
    for id in ["move-deliver-0", "move-refuse-0"] {
        let original = before.records.iter().find(|r| r.trace_id == id).unwrap();
        duplicates(async |r| store.submit(r).await, original).await;
    }
    assert_eq!(
        store.counts().await.unwrap(),
        before.counts,
        "duplicates store nothing"
    );

    // A rerun is harmless, and one after an interruption completes the copy.
    let says = ["12 of them were there from an earlier run; this run wrote 0"];
    moved(&dir, "postgres", &pg.url(), &says);
    client
        .execute(
            "DELETE FROM outbox_records WHERE trace_id IN ('move-refuse-1', 'move-deliver-2')",
            &[],
        )
        .await
        .unwrap();
    moved(&dir, "postgres", &pg.url(), &["this run wrote 2"]);
    assert_eq!(store.counts().await.unwrap(), before.counts);
    verifies_clean(&pg.url(), 11);

    // Back into a new data directory, over what an interrupted run left beside it.
    let back = tmp.path().join("back");
    std::fs::create_dir_all(tmp.path().join(".back.moving/half")).unwrap();
    // Settings from the service's config file: only the store's are read, so a key file the
    // move does not use cannot stop it.
    let config = tmp.path().join("outbox.toml");
    let toml = format!(
        "store_url = \"{}\"\ndashboard_url = \"https://dash.example\"\ningest_key_file = \"/nonexistent/key\"\n",
        pg.url()
    );
    std::fs::write(&config, toml).unwrap();
    let config = config.to_str().unwrap();
    let run = outbox(
        &back,
        "move-store",
        &["--to", "embedded", "--config", config],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("remove store_url"), "{}", run.stdout);
    let after = contents(&back);
    assert_eq!(
        after, before,
        "records, quarantine and counts came back as they were"
    );
    let s = Store::open(&back).unwrap();
    for id in ["move-deliver-1", "move-refuse-2"] {
        let original = before.records.iter().find(|r| r.trace_id == id).unwrap();
        duplicates(async |r| s.submit(r).await, original).await;
    }
    assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
    drop(s);
    ops::wait_released(&back);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("moving"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
