//! Failover through the service: one `outbox serve` given a primary and its synchronous
//! standby in one URL (`target_session_attrs=read-write`), clients posting steadily; the
//! primary's machine is lost (postmaster SIGKILLed, data directory deleted) and the standby
//! promoted. The same process carries on: what it acknowledged before and after is on the new
//! primary and reaches the stub dashboard, and the posts in between were refused with 503 and
//! `Retry-After`, never acknowledged and lost.

use super::harness::dashboard::Dashboard;
use super::harness::postgres::Postgres;
use super::harness::{free_port, spawn_on_postgres};
use super::service::{ready, wait_all_delivered, wait_ready, Posters, KEY};
use super::sql;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients posting at once: enough for group commits, few enough for 2 cores.
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_carries_on_after_its_primary_is_lost_and_the_standby_promoted() {
    let Some(mut primary) = Postgres::start("outbox serve across a PostgreSQL failover") else {
        return;
    };
    let standby = primary.standby("outbox_standby");
    primary.require_sync_standby("outbox_standby");
    let dash = Dashboard::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = Postgres::primary_url(&[&primary, &standby]);
    let dash_url = dash.url();
    let flags = ["--dashboard-url", &dash_url, "--ingest-key", KEY];
    let mut serve = spawn_on_postgres(&url, port, &flags, &tmp.path().join("serve.log")).await;
    wait_ready(port, 200, Duration::from_secs(10)).await;

    // Readiness sampled throughout, with when.
    let samples: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (samples, sampling) = (samples.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let (status, _) = ready(port).await;
                samples.lock().unwrap().push((Instant::now(), status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let posters = Posters::start(CLIENTS, &[port], "failover");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killing = Instant::now();
    tokio::task::block_in_place(|| primary.destroy());
    let lost = Instant::now();
    // No primary for two seconds: long enough for readiness (sampled every second) to see it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let promoted = Instant::now();
    tokio::task::block_in_place(|| standby.promote());
    let back = wait_ready(port, 200, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answers = posters.stop().await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    for a in &answers {
        assert!(
            a.status == 202 || (a.status == 503 && a.retry_after),
            "every post is acknowledged or refused with 503 and Retry-After: {a:?}"
        );
        assert!(
            a.status != 202 || a.answered < lost || a.answered > promoted,
            "acknowledged while there was no primary: {a:?}"
        );
    }
    let first_503 = answers
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| a.answered)
        .min()
        .expect("posts during the failover were refused");
    let first_2xx_after = answers
        .iter()
        .filter(|a| a.acknowledged() && a.sent > first_503)
        .map(|a| a.answered)
        .min()
        .expect("posts acknowledged after the failover");
    assert!(
        first_503 > killing,
        "no refusal before the primary was lost"
    );
    assert!(
        first_2xx_after > promoted,
        "nothing acknowledged without a primary"
    );
    let acked: HashSet<String> = answers
        .iter()
        .filter(|a| a.acknowledged())
        .map(|a| a.key.clone())
        .collect();
    let before = answers
        .iter()
        .filter(|a| a.acknowledged() && a.answered < killing)
        .count();
    let refused = answers.iter().filter(|a| a.status == 503).count();
    println!(
        "failover through the service: {} acknowledged ({before} before the loss, {} after), \
         {refused} answered 503; outage seen by clients (first 503 to first 2xx after it) \
         {:.2} s, of which {:.2} s before the promotion started; ready again {:.2} s after \
         the promotion started",
        acked.len(),
        acked.len() - before,
        (first_2xx_after - first_503).as_secs_f64(),
        (promoted - first_503).as_secs_f64(),
        back.as_secs_f64(),
    );

    // Readiness: true before, false during the failover, true after, in one process.
    let samples = samples.lock().unwrap().clone();
    assert!(samples.iter().any(|(at, s)| *at < killing && *s == 200));
    assert!(
        samples
            .iter()
            .any(|(at, s)| *at > lost && *at < promoted && *s == 503),
        "not ready while there was no primary: {samples:?}"
    );
    assert_eq!(samples.last().map(|s| s.1), Some(200), "ready after");
    assert!(
        serve.0.try_wait().unwrap().is_none(),
        "the same process served throughout, never restarted"
    );

    // Nothing acknowledged was lost: on the new primary, and delivered with its own key.
    let keys: Vec<String> = acked.iter().cloned().collect();
    assert_eq!(
        super::present(&sql(&standby).await, &keys).await,
        keys.len()
    );
    wait_all_delivered(&dash, &acked).await;
}
