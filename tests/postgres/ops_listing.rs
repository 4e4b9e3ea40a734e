//! `inspect --list`, the summary and `top` on the PostgreSQL store side by side with a data
//! directory holding the same records: the directory (pending, retrying, dead, delivered and
//! two quarantined entries) is moved into PostgreSQL with `move-store`, which copies every
//! record and quarantined entry as it is, so each command must print the same on both.

use super::harness::ops::{make_dead, make_delivered, outbox, record, seed, wait_released, Run};
use super::harness::postgres::Postgres;
use super::harness::spawn_app_in;
use super::move_store::moved;
use super::ops::outbox_pg;
use outbox::store::{Record, Store};
use serde_json::json;
use std::path::Path;

const HOUR_MS: i64 = 3_600_000;

/// A pending record received `ago_ms` ago and due then.
fn received(trace_id: &str, ago_ms: i64) -> Record {
    let mut r = record(
        trace_id,
        json!({"email": format!("{trace_id}@example.org")}),
    );
    let at = r.received_at_ms - ago_ms;
    (r.received_at_ms, r.next_attempt_at_ms) = (at, at);
    r.enrichment.received_at = outbox::time::rfc3339(at);
    r
}

/// A stopped data directory with a record of every status the list shows, and two
/// quarantined entries (quarantined now, so they are the newest rows of the list).
fn every_status(dir: &Path) {
    let old = received("list-pending-old", 72 * HOUR_MS);
    // Failed twice, next attempt in 90 minutes (the table's NEXT column shows `in 1h`).
    let mut retrying = received("list-pending-retry", 24 * HOUR_MS);
    retrying.attempts = 2;
    retrying.last_status_code = Some(503);
    retrying.last_error = Some("dashboard answered 503".into());
    retrying.next_attempt_at_ms = outbox::time::now_ms() + 90 * 60_000 + 30_000;
    let mut dead = received("list-dead", 48 * HOUR_MS);
    make_dead(&mut dead, 422);
    let mut delivered = received("list-delivered", 30 * HOUR_MS);
    make_delivered(&mut delivered, outbox::time::now_ms() - HOUR_MS);
    let (q1, q2) = (received("list-q-one", HOUR_MS), received("list-q-two", 2));
    seed(dir, vec![old, retrying, dead, delivered, q1, q2]);
    let store = Store::open(dir).unwrap();
    store
        .quarantine("list-q-one", "cannot be sent: test")
        .unwrap();
    // A later quarantine time, so the newest-first order does not fall back on trace IDs.
    std::thread::sleep(std::time::Duration::from_millis(5));
    store
        .quarantine("list-q-two", "does not decode: test")
        .unwrap();
    store.sync().unwrap();
    drop(store);
    wait_released(dir);
}

/// The line of stderr that says how many rows `--limit` left out, if any.
fn cut_note(run: &Run) -> Option<&str> {
    run.stderr.lines().find(|l| l.contains(" shown; --limit"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_list_summary_and_top_on_postgresql_match_a_data_directory_quarantine_included() {
    let Some(pg) = Postgres::start("ops list side by side on postgres") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    every_status(&dir);
    let url = pg.url();
    moved(&dir, "postgres", &url, &[]);

    let lists: [&[&str]; 7] = [
        &["--list", "--json"],
        &["--list", "--status", "quarantined", "--json"],
        &["--list", "--status", "pending", "--json"],
        &["--list", "--form-type", "contact", "--json"],
        &["--list", "--since", "36h", "--json"],
        &["--list", "--limit", "3", "--json"],
        &["--list"],
    ];
    for args in lists {
        let (from_pg, from_dir) = (
            outbox_pg(&url, "inspect", args),
            outbox(&dir, "inspect", args),
        );
        assert_eq!((from_pg.code, from_dir.code), (0, 0), "{}", from_pg.stderr);
        assert_eq!(from_pg.stdout, from_dir.stdout, "inspect {args:?}");
        assert_eq!(cut_note(&from_pg), cut_note(&from_dir), "inspect {args:?}");
    }
    let all = outbox_pg(&url, "inspect", &["--list", "--json"]).json();
    let shown: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["trace_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("list-q-two", "quarantined"),
            ("list-q-one", "quarantined"),
            ("list-pending-retry", "pending"),
            ("list-delivered", "delivered"),
            ("list-dead", "dead"),
            ("list-pending-old", "pending"),
        ],
        "newest first, quarantined entries by their quarantine time"
    );
    assert_eq!(all[1]["last_error"], "cannot be sent: test");
    let cut = outbox_pg(&url, "inspect", &["--list", "--limit", "3", "--json"]);
    assert_eq!(
        cut_note(&cut),
        Some("outbox: 3 of 6 shown; --limit 6 shows all")
    );

    let summary = |run: Run| {
        let s = run.json();
        json!([
            s["counts"],
            s["balanced"],
            s["oldest_pending_at"],
            s["next_attempt_at"]
        ])
    };
    let from_pg = summary(outbox_pg(&url, "inspect", &["--json"]));
    assert_eq!(from_pg, summary(outbox(&dir, "inspect", &["--json"])));
    assert_eq!(from_pg[0]["quarantined"], 2, "{from_pg}");

    // `top` asks a running server of a data directory (delivery is off: nothing changes).
    let app = spawn_app_in(&dir, &[]).await;
    let figures = |run: Run| -> Vec<String> {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let keep = ["depth ", "totals ", "oldest "];
        run.stdout
            .lines()
            .filter(|l| keep.iter().any(|k| l.starts_with(k)))
            .map(String::from)
            .collect()
    };
    let from_pg = figures(outbox_pg(&url, "top", &[]));
    assert_eq!(from_pg, figures(outbox(&dir, "top", &[])));
    assert_eq!(
        from_pg,
        [
            "depth      pending 2   in flight 0   dead 1   quarantined 2",
            "totals     accepted 6   delivered 1   purged 0   balanced",
            "oldest     pending for 3d 0h",
        ]
    );
    let _ = super::harness::ops::stop(app).await;
}
