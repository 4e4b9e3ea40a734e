//! `outbox top` without a terminal: one plain snapshot of a running server.

use crate::harness;
use crate::harness::ops::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_prints_one_snapshot_when_stdout_is_not_a_terminal() {
    let app = harness::spawn_app(&[]).await;
    post_accepted(&app, "top-key", 2, |i| json!({"n": i})).await;
    let dir = app.data_dir.clone();
    let run = outbox(&dir, "top", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("server pid {}", std::process::id())),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("pending 2"), "{}", run.stdout);
    assert!(run.stdout.contains("delivery   off"), "{}", run.stdout);
    assert!(run.stdout.lines().all(|l| l.chars().count() <= 80));
    assert!(
        !run.stdout.contains("q quits"),
        "no keys in a snapshot: {}",
        run.stdout
    );
    let _tmp = stop(app).await;

    let stopped = outbox(&dir, "top", &[]);
    assert_eq!(stopped.code, 2);
    assert!(
        stopped.stderr.contains("needs a running server"),
        "{}",
        stopped.stderr
    );
}

/// On a terminal (a pseudo-terminal here): the alternate screen, a frame redrawn every
/// interval, `q` quits with exit 0, and the terminal gets its line mode and echo back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_on_a_terminal_redraws_until_q_and_gives_the_terminal_back() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let app = harness::spawn_app(&[]).await;
    post_accepted(&app, "top-tty", 3, |i| json!({"n": i})).await;
    let pty = nix::pty::openpty(None, None).unwrap();
    let line_mode = LocalFlags::ICANON | LocalFlags::ECHO;
    assert!(tcgetattr(&pty.slave)
        .unwrap()
        .local_flags
        .contains(line_mode));
    let slave = std::fs::File::from(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["top", "--interval", "1", "--data-dir"])
        .arg(&app.data_dir)
        .env_remove("OUTBOX_CONFIG")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    {
        let (screen, mut reader) = (screen.clone(), master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let text = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    let wait_for = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok(&text()) {
            assert!(
                Instant::now() < deadline,
                "no {what} on the terminal:\n{}",
                text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("first frame", &|t| {
        t.contains("\x1b[?1049h") && t.contains("pending 3") && t.contains(" - q quits")
    });
    wait_for("redraw", &|t| t.matches("\x1b[H\x1b[2J").count() >= 2);
    master.write_all(b"q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("top did not quit on q:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    wait_for("return from the alternate screen", &|t| {
        t.contains("\x1b[?1049l")
    });
    let after = tcgetattr(&slave).unwrap();
    assert!(
        after.local_flags.contains(line_mode),
        "the terminal was left without line mode or echo: {:?}",
        after.local_flags
    );
    drop(slave);
    let _tmp = stop(app).await;
}

/// `top` asks the server once a second: read-only requests stay out of the log at the
/// default level, while a change (a replay) is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_no_line_per_top_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, log) = (tmp.path().join("data"), tmp.path().join("outbox.log"));
    let port = harness::free_port();
    let server = harness::spawn_binary_logged(&dir, port, &[], &log).await;
    for _ in 0..3 {
        let run = outbox(&dir, "top", &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let replay = outbox(&dir, "replay", &["no-such-record-01"]);
    assert_eq!(replay.code, 1, "{}", replay.stderr);
    drop(server);
    let logged = harness::log_lines(&log, "admin request");
    assert_eq!(logged.len(), 1, "only the replay: {logged:?}");
    assert_eq!(logged[0]["op"], "replay");
}
