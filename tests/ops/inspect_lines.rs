//! `outbox inspect` as an operator reads and greps it: `--list` keeps whole trace IDs
//! whenever the line can hold them and wraps its footnote to the width; `inspect ID` of a
//! delivered record says its payload and client details were dropped, and when.

use crate::harness::ops::*;
use outbox::store::record::AuditEntry;
use serde_json::json;

const UUID: &str = "01a24d32-8bfe-70b7-ac2b-6a1f00000001";

/// A delivered record with a short error (the case) and an imported pending one
/// (so the footnote shows).
fn seeded() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    seed(
        &dir,
        vec![
            record(UUID, json!({"email": "x"})),
            record(
                "01a24d32-8bfe-70b7-ac2b-6a1f00000002",
                json!({"email": "y"}),
            ),
        ],
    );
    change(&dir, UUID, |r| make_delivered(r, outbox::time::now_ms()));
    change(&dir, "01a24d32-8bfe-70b7-ac2b-6a1f00000002", |r| {
        r.audit.push(AuditEntry {
            at_ms: outbox::time::now_ms(),
            action: "import-legacy".into(),
            previous_payload_hash: None,
            note: None,
        })
    });
    (tmp, dir)
}

#[test]
fn list_keeps_whole_ids_when_the_line_holds_them_and_wraps_the_footnote() {
    let (_tmp, dir) = seeded();
    for width in [100usize, 120, 160] {
        let run = outbox_env(
            &dir,
            "inspect",
            &["--list"],
            &[("COLUMNS", &width.to_string())],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{UUID} "))),
            "at {width} columns `| grep {UUID}` finds the row:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("imported from the old proxy"),
            "{}",
            run.stdout
        );
        for l in run.stdout.lines() {
            assert!(l.chars().count() <= width, "{width}: {l:?}");
        }
    }
    // Narrow terminals cut the ID, yet the footnote still fits.
    for width in [60usize, 80] {
        let run = outbox_env(
            &dir,
            "inspect",
            &["--list"],
            &[("COLUMNS", &width.to_string())],
        );
        let foot: Vec<&str> = run
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with('*'))
            .collect();
        assert!(foot.len() > 1, "wrapped at {width}: {}", run.stdout);
        for l in foot {
            assert!(l.chars().count() <= width, "{width}: {l:?}");
        }
    }
}

/// Delivers one contact form through a running server with `extra` flags and returns the
/// app (still running) with the record's trace ID.
async fn delivered_through(
    dash: &crate::harness::dashboard::Dashboard,
    key: &str,
    extra: &[&str],
) -> crate::harness::TestApp {
    let url = dash.url();
    let mut args = vec![
        "--dashboard-url",
        &url,
        "--ingest-key",
        "test-ingest-key-0123456789",
    ];
    args.extend_from_slice(extra);
    let app = crate::harness::spawn_app(&args).await;
    let r = app
        .post_json(
            &json!({"email": "jo@example.com", "message": "Hi"}),
            &[("Idempotency-Key", key), ("User-Agent", "Mozilla/5.0 test")],
        )
        .await;
    assert_eq!(r.status(), 202);
    dash.wait_for_requests(1).await;
    app
}

/// Polls `inspect ID --json` until `pred` holds (delivery and the purge are in the background).
async fn inspect_until(
    dir: &std::path::Path,
    id: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..200 {
        let d = dir.to_path_buf();
        let id = id.to_owned();
        let run = tokio::task::spawn_blocking(move || outbox(&d, "inspect", &[&id, "--json"]))
            .await
            .unwrap();
        if run.code == 0 && pred(&run.json()) {
            return run.json();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("inspect {id} never showed what was waited for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_record_says_its_payload_and_client_details_were_dropped_and_when() {
    let dash = crate::harness::dashboard::Dashboard::start().await;
    let app = delivered_through(&dash, "dropped-at-delivery-1", &[]).await;
    let dir = app.data_dir.clone();
    let v = inspect_until(&dir, "dropped-at-delivery-1", |v| {
        v["status"] == "delivered"
    })
    .await;
    let delivered_at = v["delivered_at"].as_str().unwrap().to_owned();
    assert_eq!(v["payload"], serde_json::Value::Null);
    assert_eq!(v["dropped"]["at"], delivered_at.as_str(), "{v}");
    assert_eq!(
        v["dropped"]["fields"],
        json!(["payload", "client_ip", "user_agent"]),
        "{v}"
    );
    assert!(
        v["dropped"]["reason"]
            .as_str()
            .unwrap()
            .contains("at delivery"),
        "{v}"
    );
    // The fields that were always there are still there (JSON shapes only grow).
    for key in ["payload_sha256", "enrichment", "delivered_at", "audit"] {
        assert!(v.get(key).is_some(), "{key}: {v}");
    }
    let text =
        tokio::task::spawn_blocking(move || outbox(&dir, "inspect", &["dropped-at-delivery-1"]))
            .await
            .unwrap();
    assert!(
        text.stdout.contains(&format!(
            "payload, client_ip and user_agent: dropped at delivery, {delivered_at}"
        )),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("payload:\nnull"), "{}", text.stdout);
    app.stop().await;

    // Kept for a while by --payload-retention: the purge drops them later, and says when.
    let dash = crate::harness::dashboard::Dashboard::start().await;
    let app = delivered_through(
        &dash,
        "dropped-by-retention-1",
        &["--payload-retention", "300ms", "--purge-interval", "100ms"],
    )
    .await;
    let dir = app.data_dir.clone();
    let kept = inspect_until(&dir, "dropped-by-retention-1", |v| {
        v["status"] == "delivered"
    })
    .await;
    if kept["payload"].is_object() {
        assert_eq!(kept["dropped"], serde_json::Value::Null, "{kept}");
        assert_eq!(kept["enrichment"]["user_agent"], "Mozilla/5.0 test");
    }
    let v = inspect_until(&dir, "dropped-by-retention-1", |v| v["payload"].is_null()).await;
    let at = v["dropped"]["at"].as_str().expect("dropped.at");
    assert!(at > v["delivered_at"].as_str().unwrap(), "{v}");
    assert!(
        v["dropped"]["reason"]
            .as_str()
            .unwrap()
            .contains("payload-retention"),
        "{v}"
    );
    app.stop().await;
}
