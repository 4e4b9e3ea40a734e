//! nginx in front of outbox instances, for the tests of the recipes in `ops/`: a recipe with
//! its addresses moved to free ports, nginx started on it (after `nginx -t`) in the shape of
//! Debian's `conf.d`, and clients posting through it with each answer kept.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One post through nginx as its client saw it.
#[derive(Debug, Clone)]
pub struct Post {
    pub id: String,
    pub with_header: bool,
    pub sent: Instant,
    pub answered: Instant,
    /// The HTTP status, or the transport error.
    pub outcome: Result<u16, String>,
}

impl Post {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Ok(s) if (200..300).contains(&s))
    }

    /// An answer a client retries with the same key: no answer at all, or 502/503/504.
    pub fn retryable(&self) -> bool {
        matches!(self.outcome, Err(_) | Ok(502..=504))
    }
}

/// The recipe `ops/<file>` with its addresses moved to free loopback ports: nginx on `nginx`,
/// the instances on `a` and `b` (each rewritten string must appear once in the recipe).
pub fn recipe_on(file: &str, nginx: u16, a: u16, b: u16) -> String {
    let text = std::fs::read_to_string(super::root().join("ops").join(file)).unwrap();
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
pub struct Nginx(pub std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Starts nginx on the recipe inside `dir` (after `nginx -t`), and waits until it listens.
pub fn start_nginx(dir: &Path, recipe: &str, port: u16) -> Nginx {
    let d = dir.display();
    std::fs::write(dir.join("outbox.conf"), recipe).unwrap();
    // Debian's nginx.conf includes conf.d/*.conf inside http { }; this is the same shape.
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{}}\nhttp {{\n    \
         access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
         include {d}/outbox.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let nginx = super::tools::find("nginx").unwrap();
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

/// Posts one submission under `id` to `url`: with the `Idempotency-Key` header, or without
/// it, naming the trace ID in the body.
pub async fn post(client: &reqwest::Client, url: &str, id: &str, with_header: bool) -> Post {
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

/// `clients` clients posting distinct submissions (`<prefix>-<client>-<n>`, every other one
/// without the header) to `url` until `stop` is set.
pub fn steady_posts(
    url: String,
    clients: usize,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Post>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    (0..clients)
        .map(|c| {
            let (client, url, stop, log) = (client.clone(), url.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{prefix}-{c}-{n:06}");
                    let p = post(&client, &url, &id, n.is_multiple_of(2)).await;
                    log.lock().unwrap().push(p);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

/// When an instance behind nginx was killed: the SIGKILL sent, its death seen, and the end of
/// the time it stayed down.
pub struct Kill {
    pub sent: Instant,
    pub down_from: Instant,
    pub down_until: Instant,
}

/// Checks what the recipes promise about the posts around `kill`: every post sent while the
/// instance was down succeeded (at least 20 of them, to show anything), and a post that failed
/// was in flight at the kill and got an answer its client retries. Returns how many posts were
/// in flight at the kill and how many were sent while it was down.
pub fn check_posts_around(posts: &[Post], kill: &Kill) -> (usize, usize) {
    let in_flight: Vec<&Post> = posts
        .iter()
        .filter(|p| p.sent < kill.sent && p.answered >= kill.sent)
        .collect();
    let while_down: Vec<&Post> = posts
        .iter()
        .filter(|p| p.sent >= kill.down_from && p.answered <= kill.down_until)
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
    (in_flight.len(), while_down.len())
}

/// The trace IDs acknowledged, after the client of each post that failed retried it once
/// through `url` with the same key (which must then succeed).
pub async fn acknowledged_after_retries(url: &str, posts: &[Post]) -> HashSet<String> {
    let client = reqwest::Client::new();
    let mut acked: HashSet<String> = posts
        .iter()
        .filter(|p| p.ok())
        .map(|p| p.id.clone())
        .collect();
    for p in posts.iter().filter(|p| !p.ok()) {
        let again = post(&client, url, &p.id, p.with_header).await;
        assert!(
            again.ok(),
            "the retry of {} with the same key: {:?}",
            p.id,
            again.outcome
        );
        acked.insert(p.id.clone());
    }
    acked
}

/// Asserts that nginx's error log in `dir` has each of `what` for the instance on `port`.
pub fn assert_logged_for(dir: &Path, port: u16, what: &[&str]) {
    let errors = std::fs::read_to_string(dir.join("error.log")).unwrap();
    let upstream = format!("upstream: \"http://127.0.0.1:{port}/api/collect\"");
    for what in what {
        assert!(
            errors
                .lines()
                .any(|l| l.contains(what) && l.contains(&upstream)),
            "nginx never logged `{what}` for the killed instance:\n{errors}"
        );
    }
}
