//! The delivery step on the shared store: records claimed ahead of their sends are given
//! back once half their lease is gone, before another instance could take them over while
//! this one still meant to send them.

use super::harness::postgres::Postgres;
use super::harness::settings_from_args;
use super::{claimable, open, record};
use outbox::delivery::client::{Attempt, Sender};
use outbox::delivery::request::DeliveryRequest;
use outbox::delivery::step::{Delivery, Next};
use outbox::delivery::{Credentials, DeliveryState};
use outbox::time::Now;
use std::sync::Arc;
use std::time::Duration;

/// A dashboard that never answers: every send stays in flight.
struct Silent;

impl Sender for Silent {
    async fn send(&self, _: DeliveryRequest) -> Attempt {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_held_ahead_goes_back_once_half_its_lease_is_gone() {
    let Some(pg) = Postgres::start("postgres claims ahead") else {
        return;
    };
    let lease = Duration::from_secs(60);
    let (a, b) = (open(&pg, lease).await, open(&pg, lease).await);
    for id in ["trace-ahead-1", "trace-ahead-2", "trace-ahead-3"] {
        a.submit(record(id, r#"{"x":1}"#)).await.unwrap();
    }
    let settings = settings_from_args(&[
        "--dashboard-url",
        "http://127.0.0.1:9",
        "--ingest-key",
        "claims-ahead-key",
        "--delivery-concurrency",
        "1",
    ]);
    let state = Arc::new(DeliveryState::new(true));
    state.set_credentials(Credentials {
        ingest_key: "claims-ahead-key".into(),
        signing_secret: None,
    });
    let mut d = Delivery::new(a.clone(), Silent, settings.delivery.unwrap(), state).unwrap();
    let t0 = Now::read();

    // The claim runs beside the sends: one for the free slot and one ahead.
    let first = d.step(t0).await;
    assert_eq!((first.started, first.next), (0, Next::RoundFinished));
    d.round_finished().await;
    let second = d.step(t0).await;
    assert_eq!(second.started, 1, "the claimed record is sent");
    assert_eq!(
        claimable(&b).await,
        ["trace-ahead-3"],
        "two are this instance's: one sent, one ahead"
    );

    // Half the lease later the record held ahead goes back; the one being sent stays.
    let half = lease / 2 + Duration::from_millis(1);
    let later = Now {
        wall_ms: t0.wall_ms + half.as_millis() as i64,
        at: t0.at + half,
    };
    let third = d.step(later).await;
    assert_eq!(third.next, Next::SendFinished, "the one slot is still busy");
    d.round_finished().await;
    assert_eq!(
        claimable(&b).await,
        ["trace-ahead-2"],
        "given back: another instance may send it now"
    );
}
