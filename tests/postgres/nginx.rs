//! The shared-store recipe (`ops/nginx-shared-store.conf`) in real nginx: two `outbox serve`
//! instances on one PostgreSQL deliver to one stub dashboard, clients post steadily through
//! nginx (some keys twice at once), one instance is killed with SIGKILL and restarted later.
//! What the recipe's header and the README promise is checked: every post sent while it is
//! down succeeds, a post in flight at the kill succeeds or gets an answer its client can
//! retry with the same key, every acknowledged trace ID reaches the dashboard, and a key
//! posted twice is stored once. And a 503 from one instance is sent on to the other.
//!
//! Needs nginx (Debian's `nginx` package); without it the test says SKIP, except under CI.

use super::harness::dashboard::Dashboard;
use super::harness::metrics::{scrape, value};
use super::harness::nginx::{
    acknowledged_after_retries, assert_logged_for, check_posts_around, post, recipe_on,
    start_nginx, steady_posts, Kill, Post,
};
use super::harness::postgres::Postgres;
use super::harness::{free_port, spawn_on_postgres, tools};
use super::service::wait_all_delivered;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 3;
/// How long the killed instance stays down: longer than the recipe's `fail_timeout=5s`, so
/// nginx tries it again with real posts while it is still down.
const DOWN_FOR: Duration = Duration::from_millis(6500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_recipe_keeps_every_post_when_an_instance_is_killed() {
    if !tools::require("the shared-store nginx test", &["nginx"]) {
        return;
    }
    let Some(pg) = Postgres::start("the shared-store recipe in nginx") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_port, port_a, port_b) = (free_port(), free_port(), free_port());
    let dash = Dashboard::start().await;
    let (store, dash_url) = (pg.url(), dash.url());
    // The killed instance's claims come back after 7 s.
    let flags = super::shared::short_lease(&dash_url);
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let mut a = spawn_on_postgres(&store, port_a, &flags, &log("a0")).await;
    let _b = spawn_on_postgres(&store, port_b, &flags, &log("b")).await;
    let ngx_dir = tmp.path().join("nginx");
    std::fs::create_dir(&ngx_dir).unwrap();
    let recipe = recipe_on("nginx-shared-store.conf", nginx_port, port_a, port_b);
    let _nginx = start_nginx(&ngx_dir, &recipe, nginx_port);
    let url = format!("http://127.0.0.1:{nginx_port}/api/collect");

    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = steady_posts(url.clone(), CLIENTS, "shared", stop.clone(), posts.clone());
    // The same key posted twice at once, again and again: least_conn spreads the two.
    let twice = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut pairs = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("twice-{n:04}");
                let (x, y) = tokio::join!(
                    post(&client, &url, &id, true),
                    post(&client, &url, &id, true)
                );
                pairs.push((x, y));
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            pairs
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.kill().unwrap();
    let kill_sent = Instant::now();
    a.wait().unwrap();
    let down_from = Instant::now();
    tokio::time::sleep(DOWN_FOR).await;
    let down_until = Instant::now();
    let _a = spawn_on_postgres(&store, port_a, &flags, &log("a1")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let pairs = twice.await.unwrap();
    let mut posts = posts.lock().unwrap().clone();
    posts.extend(pairs.iter().flat_map(|(x, y)| [x.clone(), y.clone()]));

    let kill = Kill {
        sent: kill_sent,
        down_from,
        down_until,
    };
    let (in_flight, while_down) = check_posts_around(&posts, &kill);

    // The same key twice: one 202 and one 200 (the original receipt), wherever each landed.
    // A post the killed instance stored but could not answer is sent on by nginx and answered
    // 200 by the other instance, so a pair in flight at the kill may get 200 twice.
    let both: Vec<&(Post, Post)> = pairs.iter().filter(|(x, y)| x.ok() && y.ok()).collect();
    assert!(both.len() >= 20, "{} pairs answered", both.len());
    let at_kill = |p: &Post| p.sent < kill.sent && p.answered >= kill.sent;
    for (x, y) in &both {
        let mut got = [x.outcome.clone().unwrap(), y.outcome.clone().unwrap()];
        got.sort();
        let cut_off = at_kill(x) || at_kill(y);
        assert!(
            got == [200, 202] || (cut_off && got == [200, 200]),
            "{x:?} {y:?}"
        );
    }

    // The client of a post cut off at the kill retries it with the same key.
    let acked = acknowledged_after_retries(&url, &posts).await;
    // nginx moved posts away from the dead instance.
    assert_logged_for(&ngx_dir, port_a, &["Connection refused"]);

    // Stored once each: the table holds exactly the acknowledged trace IDs.
    let rows = pg.psql("SELECT count(*) FROM outbox_records");
    let twice_rows = pg.psql("SELECT count(*) FROM outbox_records WHERE trace_id LIKE 'twice-%'");
    let twice_keys = acked.iter().filter(|k| k.starts_with("twice-")).count();
    assert_eq!(
        rows,
        acked.len().to_string(),
        "one row per acknowledged trace ID"
    );
    assert_eq!(
        twice_rows,
        twice_keys.to_string(),
        "a key posted twice is stored once"
    );

    wait_all_delivered(&dash, &acked).await;
    let got = dash.requests();
    let distinct: HashSet<String> = got.iter().map(|r| r.trace_id()).collect();
    println!(
        "shared-store recipe: {} posts ({} while one instance was down for {:.1} s, {} in \
         flight at the kill, {} not acknowledged and retried), {} pairs with one key; {} \
         trace IDs acknowledged and stored once each; the dashboard got {} deliveries of {} \
         trace IDs",
        posts.len(),
        while_down,
        DOWN_FOR.as_secs_f64(),
        in_flight,
        posts.iter().filter(|p| !p.ok()).count(),
        pairs.len(),
        acked.len(),
        got.len(),
        distinct.len()
    );
}

/// The recipe's `proxy_next_upstream ... http_503`: an instance that refuses a post with 503
/// (here `outbox_full`: its `max-pending` of 1 is reached, since the dashboard is down and
/// nothing drains) has nginx send that post to the other instance, so the client gets the
/// other's 202; the refusing instance is tried again after `fail_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_one_instance_is_sent_on_to_the_other() {
    if !tools::require("the shared-store nginx 503 test", &["nginx"]) {
        return;
    }
    let Some(pg) = Postgres::start("the shared-store recipe's 503 retry") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (nginx_port, port_a, port_b) = (free_port(), free_port(), free_port());
    // Nobody listens there: every record stays pending.
    let dash_url = format!("http://127.0.0.1:{}/ingest", free_port());
    let flags = super::shared::short_lease(&dash_url);
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let full: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--max-pending", "1"])
        .collect();
    let _a = spawn_on_postgres(&pg.url(), port_a, &full, &log("a")).await;
    let _b = spawn_on_postgres(&pg.url(), port_b, &flags, &log("b")).await;
    let ngx_dir = tmp.path().join("nginx");
    std::fs::create_dir(&ngx_dir).unwrap();
    let recipe = recipe_on("nginx-shared-store.conf", nginx_port, port_a, port_b);
    let _nginx = start_nginx(&ngx_dir, &recipe, nginx_port);
    let url = format!("http://127.0.0.1:{nginx_port}/api/collect");

    // Longer than the recipe's fail_timeout (5 s), so nginx goes back to the refusing
    // instance at least once more.
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_millis(6500);
    let mut posts = Vec::new();
    while Instant::now() < until {
        let n = posts.len();
        posts.push(post(&client, &url, &format!("spill-{n:03}"), n % 2 == 0).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = scrape(&format!("http://127.0.0.1:{port_a}")).await;
    let refused = value(
        &metrics,
        r#"outbox_intake_refused_total{reason="outbox_full"}"#,
    );

    let failed: Vec<&Post> = posts.iter().filter(|p| p.outcome != Ok(202)).collect();
    assert!(
        failed.is_empty(),
        "every post gets 202 through nginx: {failed:?}"
    );
    assert!(
        refused >= 2.0,
        "the full instance refused {refused} posts: nginx should have tried it, then again after fail_timeout"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM outbox_records WHERE trace_id LIKE 'spill-%'"),
        posts.len().to_string(),
        "one row per post"
    );
    println!(
        "503 retry: {} posts through nginx, all 202; the full instance refused {refused}",
        posts.len()
    );
}
