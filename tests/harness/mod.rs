//! The harness every test binary under `tests/` shares (each `main.rs` includes it with
//! `#[path]`): the real application in this process on port 0 with a temporary data
//! directory, configured through the same flags a user passes; the real binary as a child
//! process, for kill tests; raw HTTP exchanges; and [`turn`] for tests that must not overlap.
//! Beside it: the stub dashboard (`dashboard`), the operator's commands and stopped-directory
//! seeding (`ops`), and system tools with the skip rule (`tools`).
#![allow(dead_code)]

pub mod dashboard;
pub mod metrics;
pub mod nginx;
pub mod ops;
pub mod postgres;
pub mod small_disk;
pub mod tools;

use clap::Parser;
use outbox::app::Application;
use outbox::cli::{Cli, Command};
use outbox::config::Settings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// Parses `outbox serve <args>` exactly as the binary would (environment included).
pub fn settings_from_args(args: &[&str]) -> Settings {
    let argv = ["outbox", "serve"].iter().chain(args.iter());
    let Command::Serve { settings } = Cli::try_parse_from(argv).expect("valid flags").command
    else {
        unreachable!()
    };
    Settings::from_layers(&settings.layers().expect("layers")).expect("valid settings")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts the app on 127.0.0.1:0 with a fresh data directory and the given extra flags.
pub async fn spawn_app(extra: &[&str]) -> TestApp {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut app = spawn_app_in(&dir, extra).await;
    app._tmp = Some(tmp);
    app
}

/// Starts the app on an existing (or new) data directory; the caller owns the directory.
pub async fn spawn_app_in(dir: &Path, extra: &[&str]) -> TestApp {
    let mut args = vec!["--rate-limit", "off"];
    args.extend_from_slice(extra);
    start(dir, &args).await
}

/// Like [`spawn_app`] but without `--rate-limit off`, for tests of the rate limits (clap
/// refuses a repeated flag, so a later `--rate-limit` cannot override the default one).
pub async fn spawn_app_raw(extra: &[&str]) -> TestApp {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = start(&tmp.path().join("data"), extra).await;
    app._tmp = Some(tmp);
    app
}

/// Builds the app from `serve` flags on `dir` at 127.0.0.1:0 and runs it on this runtime.
async fn start(dir: &Path, extra: &[&str]) -> TestApp {
    let dir_s = dir.to_str().unwrap().to_owned();
    let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", &dir_s];
    args.extend_from_slice(extra);
    let app = Application::build(settings_from_args(&args))
        .await
        .expect("app builds");
    let (addr, admin_addr) = (app.local_addr(), app.admin_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        admin_addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        data_dir: dir.to_path_buf(),
        _tmp: None,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a JSON body with optional extra headers.
    pub async fn post_json(
        &self,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_raw("application/json", body.to_string().into_bytes(), headers)
            .await
    }

    pub async fn post_raw(
        &self,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/api/collect"))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request reaches the app")
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// [`wait_detailed`] on this app.
    pub async fn wait_detailed(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_detailed(&self.base, what, pred).await
    }

    /// Graceful stop; waits until the store is closed so the directory can be reopened.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("app task").expect("app stops cleanly");
        }
        self._tmp.take()
    }
}

/// Polls `{base}/health/detailed` until `pred` holds, checking the accounting identity on
/// every poll; fails after 30 s naming `what`.
pub async fn wait_detailed(
    base: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::get(format!("{base}/health/detailed")).await;
        let d = r.expect("the server answers").json().await;
        let d = d.unwrap_or(serde_json::Value::Null);
        assert_eq!(d["accounting_balanced"], true, "accounting: {d}");
        if pred(&d) {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for this test's turn among the tests of its binary that call it, and holds it while
/// the guard lives: for tests that stand up whole systems (nginx, podman, a package, a
/// browser), and for those that compare process-wide metrics before and after their own
/// requests. Other tests of the binary still run beside them.
pub async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// The repository's root, where `ops/` and `tests/fixtures/` are.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The compiled `outbox` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_outbox"))
}

/// A free loopback port for a server a test starts. Taken below the kernel's ephemeral range
/// (32768-60999 by default), from which outgoing connections draw their local ports: a port
/// released there can be taken by any connection before the server binds it, and the server
/// then exits with "address in use". Each port is handed out once per process (from a start
/// drawn from the process ID, so concurrent test processes spread out) and checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id().wrapping_mul(7_919)) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process that is killed when dropped, so a failing test leaves no server behind
/// (one would hold the test's output pipe open and keep `cargo test | ...` waiting).
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `outbox serve` as a child process on `port` and waits until /health answers.
pub fn spawn_binary(dir: &Path, port: u16, extra: &[&str]) -> KillOnDrop {
    spawn_binary_to(dir, port, extra, Stdio::null())
}

/// [`spawn_binary`] with its log (JSON lines on stdout) appended to `log`.
pub async fn spawn_binary_logged(dir: &Path, port: u16, extra: &[&str], log: &Path) -> KillOnDrop {
    let file = std::fs::File::create(log).unwrap();
    let dir = dir.to_path_buf();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        spawn_binary_to(&dir, port, &extra, Stdio::from(file))
    })
    .await
    .unwrap()
}

/// `outbox serve` as a child process on `port` with the PostgreSQL store at `url` and `extra`
/// flags, its JSON log written to `log`. Its `--data-dir` is [`unused_data_dir`]`(log)`, which
/// does not exist and which a service on PostgreSQL must not create. Waits until /health
/// answers.
pub async fn spawn_on_postgres(url: &str, port: u16, extra: &[&str], log: &Path) -> KillOnDrop {
    let mut args = vec!["--store-url", url];
    args.extend_from_slice(extra);
    spawn_binary_logged(&unused_data_dir(log), port, &args, log).await
}

/// The data directory [`spawn_on_postgres`] names for the server logging to `log`.
pub fn unused_data_dir(log: &Path) -> PathBuf {
    log.with_extension("data-dir")
}

/// The JSON log lines of a server started by [`spawn_binary_logged`] with this message.
pub fn log_lines(log: &Path, message: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

fn spawn_binary_to(dir: &Path, port: u16, extra: &[&str], stdout: Stdio) -> KillOnDrop {
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .args(["--rate-limit", "off", "--log-format", "json"])
    .args(extra)
    .stdout(stdout)
    .stderr(Stdio::inherit());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn outbox"));
    wait_healthy(port, &mut child);
    child
}

/// [`spawn_binary`] from async tests: waits for health on a blocking thread.
pub async fn spawn_binary_async(dir: &Path, port: u16, extra: &[&str]) -> KillOnDrop {
    let dir = dir.to_path_buf();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        spawn_binary(&dir, port, &extra)
    })
    .await
    .unwrap()
}

/// Polls /health until it answers 200 (or panics after 20 s).
pub fn wait_healthy(port: u16, child: &mut Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("outbox exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("outbox did not become healthy on port {port}");
}

/// Sends `request` as raw bytes on a fresh TCP connection and reads until the server closes
/// it (requests should carry `Connection: close`) or 30 s pass. Returns the status code of
/// the first response (0 when none came) and everything read, lossily decoded.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    (status_of(&text), text)
}

/// The status code on the first line of a raw HTTP response, or 0.
pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Bytes of the files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
