//! `outbox healthcheck`, the container's HEALTHCHECK: exit 0 only when the server the same
//! settings point at answers GET /health/ready with 200.

use crate::harness::{bin, free_port, spawn_binary, KillOnDrop};
use std::process::Output;
use std::time::{Duration, Instant};

/// Runs `outbox healthcheck` with these environment settings only (as a container would).
fn healthcheck(env: &[(&str, String)]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("healthcheck").env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_ready_server_passes_and_a_missing_one_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = spawn_binary(&tmp.path().join("data"), port, &[]);
    // A wildcard listen address is probed on loopback.
    let out = healthcheck(&[("OUTBOX_LISTEN", format!("0.0.0.0:{port}"))]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("127.0.0.1:{port}")));

    let nobody = free_port();
    let out = healthcheck(&[("OUTBOX_LISTEN", format!("127.0.0.1:{nobody}"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "no answer from http://127.0.0.1:{nobody}/health/ready"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_server_that_cannot_store_fails_with_its_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // More free disk asked for than any test machine has: readiness is 503 disk_low.
    let _server = spawn_binary(
        &tmp.path().join("data"),
        port,
        &["--min-free-disk", "1000TiB"],
    );
    let out = healthcheck(&[("OUTBOX_LISTEN", format!("127.0.0.1:{port}"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not ready") && err.contains("503"), "{err}");
    assert!(err.contains("disk"), "the reason is shown: {err}");
}

#[test]
fn health_on_a_separate_admin_address_is_probed_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let admin_flag = format!("127.0.0.1:{admin}");
    let env = [
        ("OUTBOX_LISTEN", format!("127.0.0.1:{port}")),
        ("OUTBOX_ADMIN_LISTEN", admin_flag.clone()),
    ];
    let data = tmp.path().join("data");
    // spawn_binary waits for /health on the API address, which answers 404 here.
    let _server = KillOnDrop(
        std::process::Command::new(bin())
            .args(["serve", "--data-dir", data.to_str().unwrap()])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = healthcheck(&env);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&admin_flag));
    // The API address answers 404 for health then: probing it alone is not ready.
    let out = healthcheck(&env[..1]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
}
