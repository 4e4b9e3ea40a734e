//! The container image (ops/Containerfile, built by ops/build-image.sh) in real podman: it
//! runs as a non-root uid with its data on a named volume, settings from an env file as
//! compose passes them; a post survives a container restart and is delivered to a dashboard
//! on the host; `outbox healthcheck` (the image's HEALTHCHECK) passes; a second container on
//! the same volume is refused with the in-use message.
//!
//! Runs when `OUTBOX_IMAGE` names a built image (`.ci/run` builds one) and podman is there.
//! podman here needs runc and `default_ulimits = []` in /etc/containers/containers.conf
//! (`.ci/run` writes it). Without them: SKIP, except under CI.

use crate::harness::dashboard::{Dashboard, Reply};
use crate::harness::{free_port, tools, turn};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "test-ingest-key-0123456789";

fn podman_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]).args(args);
    cmd
}

fn podman(args: &[&str]) -> Output {
    tools::run(&mut podman_cmd(args))
}

fn ok(args: &[&str]) -> String {
    let out = tools::run_ok(&mut podman_cmd(args));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the test's container and volume, passed or not.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
        let _ = podman(&["volume", "rm", "-f", &self.0]);
    }
}

fn image() -> Option<String> {
    let test = "the container test";
    let image = std::env::var("OUTBOX_IMAGE").ok();
    let why = match &image {
        None => Some("OUTBOX_IMAGE is not set (ops/build-image.sh, then OUTBOX_IMAGE=localhost/outbox:latest)".into()),
        Some(_) if !tools::is_root() => Some("podman with runc needs root here".into()),
        Some(_) => None,
    };
    (tools::runnable(test, why) && tools::require(test, &["podman", "runc"]))
        .then(|| image.unwrap())
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("http://127.0.0.1:{port}/health/ready");
    while !matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "the container is not ready on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_keeps_posts_on_its_volume_across_a_restart_and_delivers_them() {
    let Some(image) = image() else {
        return;
    };
    let _turn = turn().await;
    let name = format!("outbox-test-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let info = ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{.Size}}",
        &image,
    ]);
    let (user, size) = info.split_once(' ').unwrap();
    assert_eq!(user, "10001:10001", "the image runs as a non-root uid");
    assert!(
        size.parse::<u64>().unwrap() < 32 << 20,
        "one binary, nothing else: {size} bytes"
    );

    // The dashboard refuses at first: the post stays pending across the restart.
    let dash = Dashboard::start().await;
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    dash.set_handler(move |_| match gate.load(Ordering::Relaxed) {
        true => Reply::ok(),
        false => Reply::status(503),
    });
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let env_file = tmp.path().join("outbox.env");
    std::fs::write(
        &env_file,
        format!(
            "OUTBOX_LISTEN=127.0.0.1:{port}\nOUTBOX_DASHBOARD_URL={}\nOUTBOX_INGEST_KEY={KEY}\n",
            dash.url()
        ),
    )
    .unwrap();
    ok(&["volume", "create", &name]);
    let env_arg = env_file.to_str().unwrap();
    // Host networking: the container reaches the stub dashboard on the host's loopback.
    ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &format!("{name}:/data"),
        "--env-file",
        env_arg,
        &image,
    ]);
    wait_ready(port).await;
    assert!(podman(&["healthcheck", "run", &name]).status.success());

    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/collect"))
        .header("Idempotency-Key", "container-0001")
        .json(&serde_json::json!({"email": "jo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    dash.wait_for_requests(1).await;

    ok(&["restart", &name]);
    wait_ready(port).await;
    let rec = ok(&[
        "exec",
        &name,
        "/outbox",
        "inspect",
        "container-0001",
        "--json",
    ]);
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(
        rec["status"], "pending",
        "the post is still on the volume: {rec}"
    );

    // The data on the volume belongs to the image's user.
    let mount = ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &name]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("{mount}/db")).unwrap().uid(),
        10001
    );

    let refused = dash.count();
    open.store(true, Ordering::Relaxed);
    dash.wait_until(
        |r| {
            r[refused..]
                .iter()
                .any(|r| r.trace_id() == "container-0001")
        },
        "the delivery after the restart",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let detailed = format!("http://127.0.0.1:{port}/health/detailed");
    loop {
        let d: serde_json::Value = reqwest::get(&detailed).await.unwrap().json().await.unwrap();
        if d["counts"]["delivered"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not marked delivered: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let second = podman(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &format!("{name}:/data"),
        "-e",
        &format!("OUTBOX_LISTEN=127.0.0.1:{}", free_port()),
        &image,
    ]);
    assert_eq!(
        second.status.code(),
        Some(2),
        "a second container is refused"
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("data directory /data is in use by another outbox process"),
        "{said}"
    );
}
