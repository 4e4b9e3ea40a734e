//! The two-instance recipe (`ops/nginx-two-instances.conf`) in real nginx: two outbox
//! processes with their own data directories deliver to one stub dashboard, clients post
//! steadily through nginx, one instance is killed with SIGKILL and later restarted. What the
//! README promises is checked: every post sent while it is down succeeds, a post in flight at
//! the kill succeeds or gets an error its client can retry with the same key, and every
//! acknowledged trace ID reaches the dashboard at least once.
//!
//! Needs nginx (Debian's `nginx` package); without it the test says SKIP, except under CI.

use crate::harness::dashboard::Dashboard;
use crate::harness::nginx::{
    acknowledged_after_retries, assert_logged_for, check_posts_around, recipe_on, start_nginx,
    steady_posts, Kill, Post,
};
use crate::harness::{free_port, spawn_binary_async, tools, turn};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "test-ingest-key-0123456789";
const CLIENTS: usize = 4;
/// How long the killed instance stays down: longer than the recipe's `fail_timeout=5s`.
const DOWN_FOR: Duration = Duration::from_millis(6500);

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
    let _nginx = start_nginx(
        &ngx_dir,
        &recipe_on("nginx-two-instances.conf", nginx_port, port_a, port_b),
        nginx_port,
    );

    let log: Arc<Mutex<Vec<Post>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = steady_posts(
        format!("http://127.0.0.1:{nginx_port}/api/collect"),
        CLIENTS,
        "two",
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

    let kill = Kill {
        sent: kill_sent,
        down_from,
        down_until,
    };
    let (in_flight, while_down) = check_posts_around(&posts, &kill);
    // The client of a post cut off at the kill retries it with the same key.
    let url = format!("http://127.0.0.1:{nginx_port}/api/collect");
    let acked = acknowledged_after_retries(&url, &posts).await;
    // nginx really moved posts away from the dead instance: the ones cut off at the kill
    // (and it took the instance out), then, once fail_timeout had passed, refused ones.
    let refused = ["upstream server temporarily disabled", "Connection refused"];
    assert_logged_for(&ngx_dir, port_a, &refused);
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
        while_down,
        in_flight,
        posts.iter().filter(|p| !p.ok()).count(),
        acked.len(),
        got.len(),
        distinct.len()
    );
}
