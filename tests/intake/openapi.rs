//! The OpenAPI document against the real service: schemathesis (PyPI) reads it from the
//! running binary's `GET /api/openapi.json`, generates requests for every operation (valid
//! and invalid ones, all four content types of `/api/collect`) and runs every check it has:
//! it fails on any answer whose status, content type, headers or body the document does not
//! describe, on any 5xx, on a request the document calls valid that is refused, and on one it
//! calls invalid that is accepted.
//! Bounded by a small example count per operation. Without schemathesis the test prints a
//! loud SKIP and passes, except under CI (`CI` set), where it fails: `.ci/run` installs it.

use crate::harness::{free_port, spawn_binary_async, tools};
use std::process::Command;
use std::time::{Duration, Instant};

/// Test cases per operation and phase: enough to reach every answer, a minute at most.
const MAX_EXAMPLES: &str = "25";
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_live_service_matches_its_openapi_document() {
    let Some(tool) = tools::need(
        "the OpenAPI test",
        "schemathesis",
        "pip install schemathesis",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The per-client rate limit is off (spawn_binary's default) so schemathesis is never
    // throttled; 429 is described in the document all the same.
    let _server = spawn_binary_async(&tmp.path().join("data"), port, &[]).await;
    let base = format!("http://127.0.0.1:{port}");

    let served = reqwest::get(format!("{base}/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(
        served.text().await.unwrap(),
        outbox::http::openapi::DOCUMENT,
        "the service serves the document in the repository"
    );

    let report = tmp.path().join("report");
    let mut child = Command::new(&tool)
        .args(["run", &format!("{base}/api/openapi.json")])
        .args(["--url", &base])
        // Every check: also that requests the document calls valid are accepted and invalid
        // ones refused, so the document and the server agree in both directions.
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "12"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(["--generation-database", "none"])
        .arg("--report-dir")
        .arg(&report)
        // Its caches go to the temporary directory, not the repository.
        .current_dir(tmp.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("schemathesis starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("schemathesis took longer than {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = child.wait_with_output().unwrap();
    let text = tools::output_text(&out);
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not describe:\n{text}"
    );
    eprintln!(
        "schemathesis: {} in {:.1} s",
        text.lines()
            .rev()
            .find(|l| l.contains("passed") || l.contains("cases"))
            .unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
}
