//! Helpers for the ops tests: run the real `outbox` binary against a data directory, and
//! seed a stopped directory through the store's public API.
#![allow(dead_code)]

use outbox::intake::enrich::Enrichment;
use outbox::store::record::{AuditEntry, Record, Status};
use outbox::store::{Change, Store};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Whether the command said it went through the in-process server of this test.
    pub fn via_this_process(&self) -> bool {
        self.stderr.contains(&format!(
            "via the running server, pid {}",
            std::process::id()
        ))
    }

    pub fn offline(&self) -> bool {
        self.stderr.contains("outbox: offline")
    }
}

/// `outbox <sub> --data-dir DIR <args>`, stdin closed (so no prompt can wait).
pub fn outbox(dir: &Path, sub: &str, args: &[&str]) -> Run {
    outbox_env(dir, sub, args, &[])
}

pub fn outbox_env(dir: &Path, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
        .arg(sub)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OUTBOX_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run outbox");
    Run::from(out)
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A pending record with this payload, received `age_ms` ago.
pub fn record(trace_id: &str, payload: Value) -> Record {
    let fields = payload.as_object().expect("object").clone();
    let now = outbox::time::now_ms();
    Record::pending(
        fields,
        Enrichment {
            received_at: outbox::time::rfc3339(now),
            client_ip: "203.0.113.9".into(),
            user_agent: Some("test".into()),
            trace_id: trace_id.into(),
            src: "site-proxy".into(),
            form_type: "contact".into(),
        },
        now,
    )
}

/// Waits until nothing in this process holds sled's lock on `<dir>/db`: sled's background
/// threads let go of the file a moment after the last handle is dropped.
pub fn wait_released(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let file = std::fs::File::open(dir.join("db")).expect("db file");
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                drop(lock);
                return;
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err((_, e)) => panic!("{} stays locked: {e}", dir.display()),
        }
    }
}

/// Opens a stopped directory for seeding, once the previous handle has let go.
fn open(dir: &Path) -> Store {
    if dir.join("db").exists() {
        wait_released(dir);
    }
    Store::open(dir).expect("open store")
}

/// Stores records in a stopped directory (created if needed) and syncs it.
pub fn seed(dir: &Path, records: Vec<Record>) {
    let store = open(dir);
    for r in records {
        futures_executor::block_on(store.submit(r)).expect("submit");
    }
    store.sync().unwrap();
    drop(store);
    wait_released(dir);
}

/// Applies `f` to a stored record in a stopped directory.
pub fn change(dir: &Path, trace_id: &str, f: impl Fn(&mut Record)) {
    let store = open(dir);
    store
        .update(trace_id, |r| {
            let mut n = r.clone();
            f(&mut n);
            Change::Put(n)
        })
        .unwrap();
    store.sync().unwrap();
    drop(store);
    wait_released(dir);
}

pub fn make_dead(r: &mut Record, code: u16) {
    r.status = Status::Dead;
    r.attempts = 7;
    r.last_status_code = Some(code);
    r.last_error = Some(format!("dashboard answered {code}"));
    r.dead_at_ms = Some(outbox::time::now_ms());
}

pub fn make_delivered(r: &mut Record, at_ms: i64) {
    r.status = Status::Delivered;
    r.attempts = 1;
    r.delivered_at_ms = Some(at_ms);
}

pub fn note(r: &mut Record, text: &str) {
    r.audit.push(AuditEntry {
        at_ms: 0,
        action: "note".into(),
        previous_payload_hash: None,
        note: Some(text.into()),
    });
}

/// Stops an in-process app and waits until its store has let go of the directory.
pub async fn stop(app: super::TestApp) -> Option<tempfile::TempDir> {
    let dir = app.data_dir.clone();
    let tmp = app.stop().await;
    wait_released(&dir);
    tmp
}

/// Posts `n` submissions (`body(i)`) to a running app with Idempotency-Keys `<prefix>-0000`...,
/// each answered 202.
pub async fn post_accepted(
    app: &super::TestApp,
    prefix: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
) {
    for i in 0..n {
        let key = format!("{prefix}-{i:04}");
        let r = app.post_json(&body(i), &[("Idempotency-Key", &key)]).await;
        assert_eq!(r.status(), 202, "post {key}");
    }
}
