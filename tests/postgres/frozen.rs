//! A PostgreSQL server that freezes (its processes stopped, as a host that hangs or whose
//! network is cut): the kernel keeps the connections open and even answers keepalives, so
//! nothing but outbox's own bounds ends a wait. The delivery worker's store calls (claims,
//! settles, releases) must fail within those bounds, keep what they cannot finish for a
//! retry, and settle nothing twice once the server answers again.

use super::harness::dashboard::{Dashboard, Reply};
use super::harness::postgres::Postgres;
use super::harness::{free_port, log_lines, spawn_on_postgres, KillOnDrop};
use super::service::{client, post, wait_all_delivered, wait_ready, KEY};
use super::{delivered, record, sql};
use outbox::store::postgres::PgStore;
use outbox::store::{Status, Updated};
use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

/// The store's bounds in these tests: short, so a test takes seconds.
fn short_bounds(pg: &Postgres) -> outbox::store::postgres::PgOptions {
    let mut o = super::options(pg, Duration::from_secs(60));
    o.commit_timeout = Duration::from_secs(2);
    o.read_timeout = Duration::from_secs(2);
    o.pool_wait = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(1);
    o
}

/// Longest a call may take against a frozen server with [`short_bounds`]: a wait for a
/// connection and one bounded statement, with room for a loaded machine.
const ANSWERED_WITHIN: Duration = Duration::from_secs(8);

/// Runs `call`, failing the test (instead of hanging it) when it does not return within
/// [`ANSWERED_WITHIN`] and a margin; returns what it returned and how long it took.
async fn answered<T>(what: &str, call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(ANSWERED_WITHIN * 3, call).await {
        Ok(v) => (v, started.elapsed()),
        Err(_) => panic!(
            "{what} against a frozen server did not return within {:?}",
            ANSWERED_WITHIN * 3
        ),
    }
}

/// `outbox serve` on `pg` with `flags` on `port`, sent 12 posts (all acknowledged), then
/// the server frozen once the dashboard got the first delivery: the process and the keys.
async fn posted_then_frozen(
    pg: &mut Postgres,
    dash: &Dashboard,
    port: u16,
    flags: &[&str],
    log: &std::path::Path,
) -> (KillOnDrop, HashSet<String>) {
    let outbox = spawn_on_postgres(&pg.url(), port, flags, log).await;
    wait_ready(port, 200, Duration::from_secs(10)).await;
    let client = client();
    let mut keys = HashSet::new();
    for n in 0..12 {
        let a = post(&client, port, &format!("trace-frozen-{port}-{n:02}")).await;
        assert_eq!(a.status, 202, "{a:?}");
        keys.insert(a.key);
    }
    dash.wait_for_requests(1).await;
    tokio::task::block_in_place(|| pg.freeze());
    (outbox, keys)
}

/// The counts read from `pg` by a store of its own.
async fn counts(pg: &Postgres) -> outbox::store::Counts {
    let store = PgStore::open(&short_bounds(pg)).await.unwrap();
    store.counts().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_settles_and_releases_fail_in_bounded_time_when_the_server_freezes() {
    let Some(mut pg) = Postgres::start("postgres frozen during claims and settles") else {
        return;
    };
    let store = PgStore::open(&short_bounds(&pg)).await.unwrap();
    for id in ["trace-frozen-a", "trace-frozen-b"] {
        store.submit(record(id, r#"{"x":1}"#)).await.unwrap();
    }
    assert_eq!(
        store.claim_due(i64::MAX, 10).await.unwrap().records.len(),
        2
    );
    store
        .submit(record("trace-frozen-c", r#"{"x":1}"#))
        .await
        .unwrap();

    pg.freeze();
    let now = outbox::time::now_ms();
    let (settled, took) = answered(
        "a settle",
        store.settle(&["trace-frozen-a"], delivered(now)),
    )
    .await;
    let e = settled.expect_err("no settle while the server is frozen");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(took < ANSWERED_WITHIN, "a settle took {took:?}");
    let (released, took) = answered("a release", store.release(&["trace-frozen-b"])).await;
    assert!(released.expect_err("no release").is_unavailable());
    assert!(took < ANSWERED_WITHIN, "a release took {took:?}");
    let (claimed, took) = answered("a claim", store.claim_due(i64::MAX, 10)).await;
    assert!(claimed.expect_err("no claim").is_unavailable());
    assert!(took < ANSWERED_WITHIN, "a claim took {took:?}");
    assert!(
        store.is_claimed("trace-frozen-a") && store.is_claimed("trace-frozen-b"),
        "the leases are still this instance's, for the retry"
    );

    // The server reads what was sent before the connections closed, and may well commit
    // the settle now; the retry is fenced by the claim token either way.
    pg.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    let retried = loop {
        match store.settle(&["trace-frozen-a"], delivered(now)).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(e.is_unavailable() && Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    match &retried[..] {
        [Ok(Updated::Put(r))] => assert_eq!(r.status, Status::Delivered),
        // The first settle committed after the thaw; the retry found the token gone.
        [Ok(Updated::Busy(r))] => assert_eq!(r.status, Status::Delivered),
        other => panic!("{other:?}"),
    }
    let row = sql(&pg)
        .await
        .query_one(
            "SELECT status, attempts FROM outbox_records WHERE trace_id = 'trace-frozen-a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delivered");
    assert_eq!(row.get::<_, i64>(1), 1, "settled once, not twice");

    store.release(&["trace-frozen-b"]).await.unwrap();
    assert_eq!(
        super::claimable(&store).await,
        ["trace-frozen-b", "trace-frozen-c"],
        "nothing lost, nothing held"
    );
    assert!(store.counts().await.unwrap().balanced());
}

/// `outbox serve` with sends in flight when PostgreSQL freezes: their outcomes cannot be
/// written, yet a SIGTERM ends the process within its bounds. With the server back, a new
/// process delivers every acknowledged post and the accounting identity holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_postgres_frozen_mid_delivery_is_bounded_and_nothing_is_lost() {
    let Some(mut pg) = Postgres::start("outbox serve shut down while PostgreSQL is frozen") else {
        return;
    };
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::ok().delay(Duration::from_millis(800)));
    let tmp = tempfile::tempdir().unwrap();
    let url = pg.url();
    let (dash_url, port) = (dash.url(), free_port());
    let flags = [
        "--dashboard-url",
        &dash_url,
        "--ingest-key",
        KEY,
        "--delivery-timeout",
        "2s",
        "--shutdown-timeout",
        "2s",
    ];
    let log = tmp.path().join("first.log");
    let (mut outbox, keys) = posted_then_frozen(&mut pg, &dash, port, &flags, &log).await;
    // The replies come in while the server is frozen; their outcomes cannot be written.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pid = nix::unistd::Pid::from_raw(outbox.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| loop {
        if let Some(s) = outbox.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "outbox did not exit within 60 s of SIGTERM with PostgreSQL frozen"
        );
        std::thread::sleep(Duration::from_millis(50));
    });
    let took = started.elapsed();
    println!("shut down in {took:?} with PostgreSQL frozen ({status})");
    // Three times the shutdown timeout (store rounds, sends, last outcomes) and a margin.
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    for step in ["shutdown: delivery worker stopped", "shutdown: complete"] {
        assert_eq!(log_lines(&log, step).len(), 1, "{step}: a clean shutdown");
    }

    tokio::task::block_in_place(|| pg.thaw());
    dash.set_reply(Reply::ok());
    let log = tmp.path().join("second.log");
    let _again = spawn_on_postgres(&url, free_port(), &flags, &log).await;
    wait_all_delivered(&dash, &keys).await;
    let c = counts(&pg).await;
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.accepted, keys.len() as u64, "{c:?}");
}

/// `outbox serve` with sends in flight when PostgreSQL freezes for longer than the store's
/// write timeout (10 s): the replies come in, their outcomes cannot be written, and the
/// worker keeps them and writes them once the server is back instead of sending the records
/// again. Every post reaches the dashboard exactly once, and nothing else is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_past_the_write_timeout_mid_delivery_delivers_every_post_exactly_once() {
    let Some(mut pg) = Postgres::start("outbox serve with PostgreSQL frozen mid-delivery") else {
        return;
    };
    let dash = Dashboard::start().await;
    dash.set_reply(Reply::ok().delay(Duration::from_millis(800)));
    let tmp = tempfile::tempdir().unwrap();
    let (dash_url, port) = (dash.url(), free_port());
    // A lease (twice the delivery timeout and 5 s) far longer than the freeze: no record is
    // sent again because its lease ran out.
    let flags = [
        "--dashboard-url",
        &dash_url,
        "--ingest-key",
        KEY,
        "--delivery-timeout",
        "30s",
    ];
    let log = tmp.path().join("outbox.log");
    let (_outbox, keys) = posted_then_frozen(&mut pg, &dash, port, &flags, &log).await;
    // Past the write timeout, and the retries after it.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let during = dash.count();
    tokio::task::block_in_place(|| pg.thaw());
    wait_ready(port, 200, Duration::from_secs(15)).await;

    wait_all_delivered(&dash, &keys).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        let c = counts(&pg).await;
        if c.delivered == keys.len() as u64 || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.delivered, keys.len() as u64, "{c:?}");
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in dash.requests() {
        *seen.entry(r.trace_id()).or_default() += 1;
    }
    println!(
        "{during} sent before or during the freeze, {} requests in all",
        dash.count()
    );
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    assert!(during > 0, "sends were in flight during the freeze");
}
