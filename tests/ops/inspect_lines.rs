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
