//! Several `outbox serve` instances on one PostgreSQL, through the real binary: posts spread
//! over two instances while one is killed with SIGKILL again and again, the same key posted to
//! both; a frozen instance whose lease another instance took over; and the durability report
//! (no synchronous standby, then one streaming).

use super::harness::dashboard::{Dashboard, Reply};
use super::harness::postgres::Postgres;
use super::harness::{free_port, spawn_on_postgres, wait_detailed};
use super::service::{
    client, detailed, post, ready, wait_all_delivered, wait_ready, Answer, Posters, KEY,
};
use super::sql;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The `Origin` each instance sends with its deliveries, so the stub can tell them apart.
const ORIGIN_A: &str = "https://a.example";
const ORIGIN_B: &str = "https://b.example";
/// SIGKILLs of instance B under load.
const KILLS: usize = 4;
/// Claims an instance may hold at once: `delivery-concurrency` sending and as many ready.
const HELD_AT_MOST: usize = 2 * 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_store_and_a_killed_one_loses_nothing_acknowledged() {
    let Some(pg) = Postgres::start("two outbox instances on one PostgreSQL") else {
        return;
    };
    let dash = Dashboard::start().await;
    // Answers take a moment, so the killed instance holds claims with sends in flight.
    dash.set_reply(Reply::ok().delay(Duration::from_millis(50)));
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let url = pg.url();
    let dash_url = dash.url();
    let flags = |origin: &'static str| {
        vec![
            "--dashboard-url".to_string(),
            dash_url.clone(),
            "--ingest-key".into(),
            KEY.into(),
            "--site-origin".into(),
            origin.into(),
            // A lease of 2 x 1 s + 5 s: a killed instance's claims come back after 7 s.
            "--delivery-timeout".into(),
            "1s".into(),
        ]
    };
    let (fa, fb) = (flags(ORIGIN_A), flags(ORIGIN_B));
    let fa: Vec<&str> = fa.iter().map(String::as_str).collect();
    let fb: Vec<&str> = fb.iter().map(String::as_str).collect();
    let _a = spawn_on_postgres(&url, pa, &fa, &tmp.path().join("a.log")).await;
    let mut b = spawn_on_postgres(&url, pb, &fb, &tmp.path().join("b0.log")).await;

    let posters = Posters::start(3, &[pa, pb], "two");
    // The same key posted to both instances at once, again and again.
    let pairs = tokio::spawn(async move {
        let client = client();
        let mut pairs: Vec<(Answer, Answer)> = Vec::new();
        for n in 0..40 {
            let key = format!("both-{n:04}");
            let (x, y) = tokio::join!(post(&client, pa, &key), post(&client, pb, &key));
            pairs.push((x, y));
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        pairs
    });
    for i in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(600)).await;
        b.kill().unwrap();
        b.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b = spawn_on_postgres(&url, pb, &fb, &tmp.path().join(format!("b{i}.log"))).await;
    }
    let pairs = pairs.await.unwrap();
    let answers = posters.stop().await;

    // The same key to both: stored once, one instance answers 202 and the other 200.
    let both_answered: Vec<&(Answer, Answer)> = pairs
        .iter()
        .filter(|(x, y)| x.acknowledged() && y.acknowledged())
        .collect();
    assert!(
        both_answered.len() >= 20,
        "{} pairs answered",
        both_answered.len()
    );
    for (x, y) in &both_answered {
        let mut got = [x.status, y.status];
        got.sort();
        assert_eq!(got, [200, 202], "{x:?} {y:?}");
    }

    let acked: HashSet<String> = answers
        .iter()
        .chain(pairs.iter().flat_map(|(x, y)| [x, y]))
        .filter(|a| a.acknowledged())
        .map(|a| a.key.clone())
        .collect();
    let on_b = answers.iter().filter(|a| a.port == pb && a.acknowledged());
    println!(
        "{} trace IDs acknowledged ({} by the instance killed {KILLS} times)",
        acked.len(),
        on_b.count()
    );
    let keys: Vec<String> = acked.iter().cloned().collect();
    let client = sql(&pg).await;
    assert_eq!(super::present(&client, &keys).await, keys.len());
    wait_all_delivered(&dash, &acked).await;

    // A repeat is a delivery cut off by a kill: every delivery of a repeated trace ID but its
    // last came from the killed instance, and no more than it can hold at each kill.
    let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
    for r in dash.requests() {
        let origin = r.header("origin").unwrap_or_default().to_owned();
        by_id.entry(r.trace_id()).or_default().push(origin);
    }
    let repeated: Vec<(&String, &Vec<String>)> =
        by_id.iter().filter(|(_, o)| o.len() > 1).collect();
    println!(
        "{} deliveries of {} trace IDs; {} repeated",
        dash.count(),
        by_id.len(),
        repeated.len()
    );
    for (id, origins) in &repeated {
        assert!(
            origins[..origins.len() - 1].iter().all(|o| o == ORIGIN_B),
            "{id} was repeated without a kill of its sender: {origins:?}"
        );
    }
    assert!(repeated.len() <= KILLS * HELD_AT_MOST, "{}", repeated.len());

    // The accounting identity, from both instances, and against the table.
    let base_a = format!("http://127.0.0.1:{pa}");
    let d = wait_detailed(&base_a, "everything delivered", |d| {
        d["counts"]["pending"] == 0 && d["counts"]["in_flight"] == 0
    })
    .await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM outbox_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(d["counts"]["accepted"], rows, "{d}");
    assert_eq!(d["counts"]["delivered"], rows, "{d}");
    let db = detailed(pb).await;
    assert_eq!(db["accounting_balanced"], true, "{db}");
    assert_eq!(db["counts"]["accepted"], rows, "{db}");
}

/// Whether `/health/detailed` warns that acknowledged submissions live on one server.
fn warns_one_server(d: &serde_json::Value) -> bool {
    d["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("acknowledged submissions live on one PostgreSQL server")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_synchronous_standby_health_warns_and_requiring_one_holds_readiness() {
    let Some(pg) = Postgres::start("outbox durability report on PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = spawn_on_postgres(&pg.url(), pa, &[], &tmp.path().join("a.log")).await;
    let _b = spawn_on_postgres(
        &pg.url(),
        pb,
        &["--store-require-sync-standby"],
        &tmp.path().join("b.log"),
    )
    .await;

    // No synchronous standby: a warning, and readiness only where none is required.
    wait_ready(pa, 200, Duration::from_secs(5)).await;
    let d = detailed(pa).await;
    let store = &d["store"];
    assert_eq!(store["engine"], "postgres", "{d}");
    assert_eq!(store["hosts"], format!("127.0.0.1:{}", pg.port), "{d}");
    assert_eq!(store["synchronous_commit"], "on", "{d}");
    assert_eq!(store["acknowledged_on_one_server"], true, "{d}");
    assert!(warns_one_server(&d), "{d}");
    let (status, body) = ready(pb).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no synchronous standby is streaming"),
        "{body}"
    );

    // A synchronous standby streams: ready, no warning; it goes away: not ready again.
    let standby = tokio::task::block_in_place(|| {
        let s = pg.standby("replica1");
        pg.require_sync_standby("replica1");
        s
    });
    let took = wait_ready(pb, 200, Duration::from_secs(5)).await;
    println!("ready {took:?} after the standby became synchronous");
    let d = detailed(pb).await;
    assert_eq!(d["store"]["sync_standbys_streaming"], 1, "{d}");
    assert_eq!(d["store"]["acknowledged_on_one_server"], false, "{d}");
    assert!(!warns_one_server(&d), "{d}");

    // A role without pg_monitor sees the standby's row but not its sync_state: not ready, and
    // the reason names the grant; once granted, ready.
    pg.psql("CREATE ROLE outbox_plain LOGIN");
    pg.psql("CREATE DATABASE outbox_plain OWNER outbox_plain");
    let plain_url = format!(
        "postgres://outbox_plain@127.0.0.1:{}/outbox_plain?sslmode=disable",
        pg.port
    );
    let pc = free_port();
    let _c = spawn_on_postgres(
        &plain_url,
        pc,
        &["--store-require-sync-standby"],
        &tmp.path().join("c.log"),
    )
    .await;
    // Polled: before the first probe the reason is that the state is not known yet.
    let names_grant = |b: &serde_json::Value| {
        b["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("GRANT pg_monitor to the store-url user"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = ready(pc).await;
        if status == 503 && names_grant(&body) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.psql("GRANT pg_monitor TO outbox_plain");
    wait_ready(pc, 200, Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| drop(standby));
    wait_ready(pb, 503, Duration::from_secs(5)).await;
    assert_eq!(ready(pa).await.0, 200, "not required there");
}

/// Flags for an instance delivering to `dash_url` with a short lease: 2 x 1 s + 5 s, so a
/// dead or frozen instance's claims come back after 7 s.
pub fn short_lease(dash_url: &str) -> [&str; 6] {
    [
        "--dashboard-url",
        dash_url,
        "--ingest-key",
        KEY,
        "--delivery-timeout",
        "1s",
    ]
}

/// An instance frozen while it sends a record loses its lease to another instance, which
/// delivers the record; when the first one wakes, its outcome is refused, and its log says
/// the lease was taken over (not that an operator changed the record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_whose_lease_was_taken_over_says_so() {
    use nix::sys::signal::{kill, Signal};
    let Some(pg) = Postgres::start("a lease taken over from a frozen instance") else {
        return;
    };
    let dash = Dashboard::start().await;
    // The first send is still waiting for its answer when the instance freezes.
    dash.set_reply(Reply::ok().delay(Duration::from_millis(500)));
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let dash_url = dash.url();
    let flags = short_lease(&dash_url);
    let log_a = tmp.path().join("a.log");
    let a = spawn_on_postgres(&pg.url(), pa, &flags, &log_a).await;
    assert_eq!(post(&client(), pa, "taken-over").await.status, 202);
    dash.wait_for_requests(1).await;
    let a_pid = nix::unistd::Pid::from_raw(a.0.id() as i32);
    kill(a_pid, Signal::SIGSTOP).unwrap();
    // Started only now, so only a lapsed lease lets it claim the record.
    let _b = spawn_on_postgres(&pg.url(), pb, &flags, &tmp.path().join("b.log")).await;
    dash.wait_for_requests(2).await;
    kill(a_pid, Signal::SIGCONT).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let said = |what: &str| {
        std::fs::read_to_string(&log_a)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("taken-over") && l.contains(what))
    };
    while !said("another instance took it over") {
        assert!(
            std::time::Instant::now() < deadline,
            "the frozen instance never said its lease was taken over:\n{}",
            std::fs::read_to_string(&log_a).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!said("operator action"), "blamed on an operator");
    // The new owner's outcome stands (written once its delayed answer arrives).
    let status = || pg.psql("SELECT status FROM outbox_records WHERE trace_id = 'taken-over'");
    while status() != "delivered" {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {}",
            status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
