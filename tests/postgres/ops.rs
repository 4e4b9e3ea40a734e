//! The ops commands against the PostgreSQL store, through the real binary with `--store-url`:
//! the same flags and the same output as on a data directory (compared side by side where the
//! same record can be put in both), changes refused for a record under a delivery lease, and
//! `backup`, `restore` and `compact` refused with the PostgreSQL tools that do their job.
//!
//! Records are put in through `PgStore` (submit, claim, settle) in the test; the store the
//! test holds keeps the lease of its in-flight record for the whole test.

use super::harness::ops::{make_dead, note, record, seed, Run};
use super::harness::postgres::Postgres;
use outbox::store::postgres::PgStore;
use outbox::store::{Change, Record};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Long enough that the in-flight record stays leased for the whole test.
const LEASE: Duration = Duration::from_secs(600);
const DAY_MS: i64 = 86_400_000;

pub const PENDING: &str = "trace-pg-pending-0001";
pub const NOTED: &str = "trace-pg-noted-0001";
pub const DEAD: &str = "trace-pg-dead-0001";
pub const OLD_TOMB: &str = "trace-pg-old-tomb-0001";
pub const NEW_TOMB: &str = "trace-pg-new-tomb-0001";
pub const FLYING: &str = "trace-pg-flying-0001";

/// `outbox <args>` run in `cwd` with `env` and none of the store settings of this
/// process's environment, stdin closed.
pub fn outbox_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_outbox"))
        .current_dir(cwd)
        .args(args)
        .env_remove("OUTBOX_CONFIG")
        .env_remove("OUTBOX_DATA_DIR")
        .env_remove("OUTBOX_STORE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run outbox")
        .into()
}

/// `outbox <sub> --store-url URL <args>` run in an empty directory; asserts that the
/// command made no data directory there (the embedded store was not touched).
pub fn outbox_pg(url: &str, sub: &str, args: &[&str]) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    let run = outbox_in(
        cwd.path(),
        &[&[sub, "--store-url", url], args].concat(),
        &[],
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "{sub} made files in the working directory"
    );
    run
}

/// Claims the one record due (`id`) and settles it with `decide`, as the worker would.
async fn settle_with(
    store: &PgStore,
    id: &str,
    decide: impl Fn(usize, &Record) -> Change + Send + Sync + 'static,
) {
    let claimed = store.claim_due(i64::MAX, 10).await.unwrap();
    assert_eq!(claimed.records.len(), 1, "one record due: {id}");
    let out = store.settle(&[id], decide).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
}

/// What the worker writes for a dead letter the dashboard refused with `code`.
fn died(code: u16) -> impl Fn(usize, &Record) -> Change {
    move |_, r| {
        let mut n = r.clone();
        make_dead(&mut n, code);
        Change::Put(n)
    }
}

/// A store on `pg` holding a record of every status the boundary lists: pending (one with
/// an audit note naming the address), a dead letter holding the address, a tombstone
/// delivered 40 days ago and one delivered now, and one in flight under this store's lease.
pub async fn every_status(pg: &Postgres) -> std::sync::Arc<PgStore> {
    let store = super::open(pg, LEASE).await;
    let jo = json!({"email": "Jo.Doe@Example.com", "message": "please call"});
    store.submit(record(DEAD, jo.clone())).await.unwrap();
    settle_with(&store, DEAD, died(422)).await;
    let now = outbox::time::now_ms();
    for (id, at) in [(OLD_TOMB, now - 40 * DAY_MS), (NEW_TOMB, now)] {
        store
            .submit(record(id, json!({"email": "x@example.org"})))
            .await
            .unwrap();
        settle_with(&store, id, super::delivered(at)).await;
    }
    store
        .submit(record(FLYING, json!({"email": "f@example.org"})))
        .await
        .unwrap();
    assert_eq!(
        store.claim_due(i64::MAX, 10).await.unwrap().records.len(),
        1
    );
    let mut noted = record(NOTED, json!({"email": "other@example.org"}));
    note(&mut noted, "asked by jo.doe@example.com to resend");
    store.submit(noted).await.unwrap();
    store
        .submit(record(PENDING, json!({"email": "p@example.org", "n": 1})))
        .await
        .unwrap();
    let c = store.counts().await.unwrap();
    assert_eq!(
        (c.pending, c.in_flight, c.dead, c.delivered, c.accepted),
        (2, 1, 1, 2, 6)
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_a_record_in_postgresql_exactly_as_in_a_data_directory() {
    let Some(pg) = Postgres::start("ops inspect one record on postgres") else {
        return;
    };
    let store = every_status(&pg).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let same = record(
        "trace-pg-same-0001",
        json!({"email": "s@example.org", "n": [1, 2]}),
    );
    seed(&dir, vec![same.clone()]);
    store.submit(same).await.unwrap();

    for args in [
        &["trace-pg-same-0001", "--json"][..],
        &["trace-pg-same-0001"],
    ] {
        let from_pg = outbox_pg(&pg.url(), "inspect", args);
        let from_dir = super::harness::ops::outbox(&dir, "inspect", args);
        assert_eq!((from_pg.code, from_dir.code), (0, 0), "{}", from_pg.stderr);
        assert_eq!(from_pg.stdout, from_dir.stdout, "{args:?}");
        assert!(from_pg
            .stderr
            .contains("outbox: PostgreSQL store postgres://"));
    }
    let show = |id: &str| outbox_pg(&pg.url(), "inspect", &[id, "--json"]).json();
    let dead = show(DEAD);
    assert_eq!(
        (
            &dead["status"],
            &dead["last_status_code"],
            &dead["attempts"]
        ),
        (&json!("dead"), &json!(422), &json!(7))
    );
    assert_eq!(dead["payload"]["email"], "Jo.Doe@Example.com");
    assert_eq!(show(FLYING)["status"], "in_flight", "a live lease shows");
    let tomb = show(NEW_TOMB);
    assert_eq!(
        (&tomb["status"], &tomb["payload"]),
        (&json!("delivered"), &Value::Null)
    );
    assert!(tomb["dropped"]["reason"].is_string(), "{tomb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_replay_on_postgresql_refuses_a_record_being_delivered() {
    let Some(pg) = Postgres::start("ops replay dry run on postgres") else {
        return;
    };
    let _store = every_status(&pg).await;
    let r = outbox_pg(
        &pg.url(),
        "replay",
        &[DEAD, FLYING, NEW_TOMB, "--dry-run", "--json"],
    );
    assert_eq!(r.code, 1, "refusals exit 1: {}", r.stderr);
    let out = r.json();
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["replayed"], json!([DEAD]));
    let refused: Vec<(&str, &str)> = out["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["trace_id"].as_str().unwrap(),
                x["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (
                FLYING,
                "being delivered right now; retry when the attempt ends"
            ),
            (NEW_TOMB, "already delivered; pass --force to send it again"),
        ]
    );
    let text = outbox_pg(&pg.url(), "replay", &[DEAD, "--dry-run"]);
    assert_eq!(
        text.stdout,
        format!("would replay {DEAD}\n1 would replay, 0 refused\n")
    );
}

/// The old proxy's files the import tests use.
fn legacy_fixtures() -> PathBuf {
    super::harness::root().join("tests/fixtures/legacy-pending")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_into_postgresql_reports_as_into_a_data_directory_and_adds_nothing_twice() {
    let Some(pg) = Postgres::start("ops import-legacy into postgres") else {
        return;
    };
    let fixtures = legacy_fixtures();
    let legacy = fixtures.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    let dry = outbox_pg(&pg.url(), "import-legacy", &[legacy, "--dry-run", "--json"]);
    let wet = outbox_pg(&pg.url(), "import-legacy", &[legacy, "--json"]);
    let from_dir = super::harness::ops::outbox(&dir, "import-legacy", &[legacy, "--json"]);
    assert_eq!(wet.code, from_dir.code, "{}", wet.stderr);
    assert_eq!(wet.json(), from_dir.json(), "the same report");
    let imported = wet.json()["imported"].as_array().unwrap().clone();
    assert!(!imported.is_empty(), "{}", wet.stdout);
    assert_eq!(
        dry.json()["imported"],
        json!(imported),
        "the dry run said so"
    );
    assert_eq!(dry.json()["dry_run"], true);

    let store = super::open(&pg, LEASE).await;
    let c = store.counts().await.unwrap();
    assert_eq!(
        (c.pending, c.accepted),
        (imported.len() as u64, imported.len() as u64)
    );
    let first = imported[0]["trace_id"].as_str().unwrap();
    let shown = outbox_pg(&pg.url(), "inspect", &[first, "--json"]).json();
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["audit"][0]["action"], "import-legacy");
    assert!(shown["imported_at"].is_string());

    let again = outbox_pg(&pg.url(), "import-legacy", &[legacy, "--json"]).json();
    assert_eq!(again["imported"], json!([]));
    assert_eq!(
        again["duplicates"],
        json!(imported),
        "every file already stored"
    );
    assert_eq!(
        store.counts().await.unwrap().accepted,
        imported.len() as u64
    );
}
