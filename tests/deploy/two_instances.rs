//! The two-instance recipe (`ops/nginx-two-instances.conf`) in real nginx: two outbox
//! processes with their own data directories deliver to one stub dashboard, clients post
//! steadily through nginx, one instance is killed with SIGKILL and later restarted. What the
//! README promises is checked: every post sent while it is down succeeds, a post in flight at
//! the kill succeeds or gets an error its client can retry with the same key, and every
//! acknowledged trace ID reaches the dashboard at least once.
//!
//! Needs nginx (Debian's `nginx` package); without it the test says SKIP, except under CI.

use crate::harness;
use crate::harness::dashboard::Dashboard;
use crate::harness::{free_port, spawn_binary_async, tools, turn};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "test-ingest-key-0123456789";
const CLIENTS: usize = 4;
/// How long the killed instance stays down: longer than the recipe's `fail_timeout=5s`.
const DOWN_FOR: Duration = Duration::from_millis(6500);

/// One post through nginx as its client saw it.
#[derive(Debug, Clone)]
struct Post {
    id: String,
    with_header: bool,
    sent: Instant,
    answered: Instant,
    /// The HTTP status, or the transport error.
    outcome: Result<u16, String>,
}

impl Post {
    fn ok(&self) -> bool {
        matches!(self.outcome, Ok(s) if (200..300).contains(&s))
    }

    /// An answer a client retries with the same key: no answer at all, or 502/503/504.
    fn retryable(&self) -> bool {
        matches!(self.outcome, Err(_) | Ok(502..=504))
    }
}

/// The recipe with its addresses moved to free loopback ports (each must appear once).
fn recipe_on(nginx: u16, a: u16, b: u16) -> String {
    let text =
        std::fs::read_to_string(harness::root().join("ops/nginx-two-instances.conf")).unwrap();
    let mut out = text.clone();
    for (from, to) in [
        ("listen 80;", format!("listen 127.0.0.1:{nginx};")),
        ("server 127.0.0.1:8001 ", format!("server 127.0.0.1:{a} ")),
        ("server 127.0.0.1:8002 ", format!("server 127.0.0.1:{b} ")),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "the recipe has `{from}` once"
        );
        out = out.replace(from, &to);
    }
    out
}

/// nginx's master process, stopped with SIGTERM when dropped: the master then ends its
/// workers (a SIGKILL would leave them running, holding the test's output open).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Starts nginx on the recipe inside `dir` (after `nginx -t`), and waits until it listens.
fn start_nginx(dir: &Path, recipe: &str, port: u16) -> Nginx {
    let d = dir.display();
    std::fs::write(dir.join("outbox.conf"), recipe).unwrap();
    // Debian's nginx.conf includes conf.d/*.conf inside http { }; this is the same shape.
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{}}\nhttp {{\n    \
         access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
         include {d}/outbox.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let nginx = tools::find("nginx").unwrap();
    let conf = dir.join("nginx.conf");
    let args = |extra: &[&str]| {
        let mut c = Command::new(&nginx);
        c.arg("-p").arg(dir).arg("-c").arg(&conf);
        c.args(["-e", &format!("{d}/error.log")]).args(extra);
        c
    };
    let check = args(&["-t"]).output().unwrap();
    assert!(
        check.status.success(),
        "nginx -t refuses the recipe: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Nginx(
        args(&["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.0.try_wait().unwrap().is_none(), "nginx exited");
        assert!(Instant::now() < deadline, "nginx does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

async fn post(client: &reqwest::Client, url: &str, id: &str, with_header: bool) -> Post {
    let sent = Instant::now();
    let mut req = client.post(url);
    let body = if with_header {
        req = req.header("Idempotency-Key", id);
        serde_json::json!({"email": format!("{id}@example.com")})
    } else {
        // A plain form without the header: nginx spreads these round robin.
        serde_json::json!({"email": format!("{id}@example.com"), "trace_id": id})
    };
    let outcome = match req.json(&body).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:#}")),
    };
    Post {
        id: id.to_owned(),
        with_header,
        sent,
        answered: Instant::now(),
        outcome,
    }
}

/// Clients posting distinct submissions through nginx until `stop` is set.
fn steady_posts(
    url: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Post>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    (0..CLIENTS)
        .map(|c| {
            let (client, url, stop, log) = (client.clone(), url.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("two-{c}-{n:06}");
                    let p = post(&client, &url, &id, n.is_multiple_of(2)).await;
                    log.lock().unwrap().push(p);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

async fn accepted(port: u16) -> u64 {
    let d: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health/detailed"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    d["counts"]["accepted"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_killed_behind_nginx_loses_and_fails_no_post() {
    if !tools::require("the two-instance test", &["nginx"]) {
        return;
    }
    let _turn = turn().await;
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_port, port_a, port_b) = (free_port(), free_port(), free_port());
    let dash = Dashboard::start().await;
    let url = dash.url();
    let flags = ["--dashboard-url", url.as_str(), "--ingest-key", KEY];
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = spawn_binary_async(&dir_a, port_a, &flags).await;
    let _b = spawn_binary_async(&dir_b, port_b, &flags).await;
    let ngx_dir = tmp.path().join("nginx");
    std::fs::create_dir(&ngx_dir).unwrap();
    let _nginx = start_nginx(&ngx_dir, &recipe_on(nginx_port, port_a, port_b), nginx_port);

    let log: Arc<Mutex<Vec<Post>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = steady_posts(
        format!("http://127.0.0.1:{nginx_port}/api/collect"),
        stop.clone(),
        log.clone(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let kill_sent = Instant::now();
    a.wait().unwrap();
    let down_from = Instant::now();
    // Longer than the recipe's fail_timeout (5 s): nginx tries the dead instance again with
    // real posts, is refused, and moves them on.
    tokio::time::sleep(DOWN_FOR).await;
    let down_until = Instant::now();
    let _a = spawn_binary_async(&dir_a, port_a, &flags).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let posts = log.lock().unwrap().clone();

    // Arrange the posts by when they were sent relative to the kill.
    let in_flight: Vec<&Post> = posts
        .iter()
        .filter(|p| p.sent < kill_sent && p.answered >= kill_sent)
        .collect();
    let while_down: Vec<&Post> = posts
        .iter()
        .filter(|p| p.sent >= down_from && p.answered <= down_until)
        .collect();
    assert!(
        while_down.len() >= 20,
        "too few posts while the instance was down ({}) to show anything",
        while_down.len()
    );
    let failed_down: Vec<&&Post> = while_down.iter().filter(|p| !p.ok()).collect();
    assert!(
        failed_down.is_empty(),
        "posts sent while one instance was down failed: {failed_down:?}"
    );
    let forgiven = |p: &Post| in_flight.iter().any(|f| f.id == p.id) && p.retryable();
    let bad: Vec<&Post> = posts.iter().filter(|p| !p.ok() && !forgiven(p)).collect();
    assert!(bad.is_empty(), "posts answered with a failure: {bad:?}");

    // The client of a post cut off at the kill retries it with the same key.
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{nginx_port}/api/collect");
    let mut acked: HashSet<String> = posts
        .iter()
        .filter(|p| p.ok())
        .map(|p| p.id.clone())
        .collect();
    for p in posts.iter().filter(|p| !p.ok()) {
        let again = post(&client, &url, &p.id, p.with_header).await;
        assert!(
            again.ok(),
            "the retry of {} with the same key: {:?}",
            p.id,
            again.outcome
        );
        acked.insert(p.id.clone());
    }

    // nginx really moved posts away from the dead instance: the ones cut off at the kill
    // (and it took the instance out), then, once fail_timeout had passed, refused ones.
    let errors = std::fs::read_to_string(ngx_dir.join("error.log")).unwrap();
    let upstream_a = format!("upstream: \"http://127.0.0.1:{port_a}/api/collect\"");
    for what in ["upstream server temporarily disabled", "Connection refused"] {
        assert!(
            errors
                .lines()
                .any(|l| l.contains(what) && l.contains(&upstream_a)),
            "nginx never logged `{what}` for the killed instance:\n{errors}"
        );
    }
    assert!(
        accepted(port_a).await > 0,
        "the killed instance took posts before the kill"
    );
    assert!(accepted(port_b).await > 0, "the other instance took posts");

    let got = dash
        .wait_until(
            |r| {
                let ids: HashSet<String> = r.iter().map(|r| r.trace_id()).collect();
                acked.iter().all(|id| ids.contains(id))
            },
            "every acknowledged trace ID",
        )
        .await;
    let distinct: HashSet<String> = got.iter().map(|r| r.trace_id()).collect();
    println!(
        "{} posts ({} while one instance was down, {} in flight at the kill, {} retried); \
         {} acknowledged; the dashboard got {} deliveries of {} trace IDs",
        posts.len(),
        while_down.len(),
        in_flight.len(),
        posts.iter().filter(|p| !p.ok()).count(),
        acked.len(),
        got.len(),
        distinct.len()
    );
}
