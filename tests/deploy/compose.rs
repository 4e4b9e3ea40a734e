//! ops/compose.yaml in real podman-compose: the service comes up from the image with the env
//! file, its healthcheck (the image's `outbox healthcheck`) passes, and a post stays on the
//! named volume across `down` and `up`.
//!
//! Runs when `OUTBOX_IMAGE` is set (`.ci/run` builds localhost/outbox:latest, the image the
//! compose file names) and podman-compose is installed; podman must use runc here
//! (`[engine] runtime = "runc"` in /etc/containers/containers.conf, written by `.ci/run`).
//! Without them: SKIP, except under CI.

use crate::harness;
use crate::harness::{free_port, tools, turn};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    tools::run(Command::new(program).args(args).current_dir(dir))
}

/// Takes the project down and removes its volume and network, passed or not.
struct Down<'a>(&'a Path, String);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        run(self.0, "podman-compose", &["-p", &self.1, "down"]);
        run(
            self.0,
            "podman",
            &["volume", "rm", "-f", &format!("{}_outbox-data", self.1)],
        );
        let network = format!("{}_default", self.1);
        run(self.0, "podman", &["network", "rm", "-f", &network]);
    }
}

/// The compose file with its published port moved to `port` (it must appear once).
fn compose_on(port: u16) -> String {
    let path = harness::root().join("ops/compose.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let from = "\"127.0.0.1:8001:8001\"";
    assert_eq!(
        text.matches(from).count(),
        1,
        "the compose file publishes {from}"
    );
    text.replace(from, &format!("\"127.0.0.1:{port}:8001\""))
}

async fn accepted(port: u16) -> u64 {
    let url = format!("http://127.0.0.1:{port}/health/detailed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if let Ok(d) = r.json::<serde_json::Value>().await {
                return d["counts"]["accepted"].as_u64().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service does not answer on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_service_is_healthy_and_keeps_posts_on_its_volume() {
    let test = "the compose test";
    let why = match std::env::var_os("OUTBOX_IMAGE") {
        None => Some("OUTBOX_IMAGE is not set (ops/build-image.sh builds the image)".into()),
        Some(_) if !tools::is_root() => Some("podman with runc needs root here".into()),
        Some(_) => None,
    };
    if !tools::runnable(test, why) || !tools::require(test, &["podman", "podman-compose"]) {
        return;
    }
    let _turn = turn().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    std::fs::write(dir.join("compose.yaml"), compose_on(port)).unwrap();
    // As an operator would: outbox.env beside the compose file (here, settings left default).
    std::fs::write(dir.join("outbox.env"), "OUTBOX_RATE_LIMIT=off\n").unwrap();
    let project = format!("outboxtest{}", std::process::id());
    let _down = Down(dir, project.clone());
    let up = || run(dir, "podman-compose", &["-p", &project, "up", "-d"]);
    assert!(up().status.success());
    assert_eq!(accepted(port).await, 0);

    let name = format!("{project}_outbox_1");
    let check = run(dir, "podman", &["healthcheck", "run", &name]);
    assert!(check.status.success(), "the healthcheck passes");
    let test_cmd = run(
        dir,
        "podman",
        &[
            "inspect",
            "--format",
            "{{json .Config.Healthcheck.Test}}",
            &name,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&test_cmd.stdout).trim(),
        r#"["CMD","/outbox","healthcheck"]"#,
        "the image's exec-form healthcheck (no shell in the image)"
    );

    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("Idempotency-Key", "compose-0001")
        .json(&serde_json::json!({"email": "jo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    assert!(run(dir, "podman-compose", &["-p", &project, "down"])
        .status
        .success());
    assert!(up().status.success());
    assert_eq!(accepted(port).await, 1, "the post is still on the volume");
}
