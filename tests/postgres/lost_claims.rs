//! A claim whose answer is lost (no answer within the write timeout) may have committed all
//! the same: its rows then carry a lease under a token the worker never got. The store ends
//! those leases before its next claim, so the records are due again at once instead of
//! after a whole lease.

use super::failures::set_system;
use super::harness::postgres::Postgres;
use super::{record, sql};
use outbox::store::postgres::PgStore;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_committed_after_its_answer_was_lost_does_not_hold_its_records() {
    let Some(pg) = Postgres::start("postgres claim answer lost") else {
        return;
    };
    let mut o = super::options(&pg, Duration::from_secs(600));
    o.commit_timeout = Duration::from_secs(1);
    let store = PgStore::open(&o).await.unwrap();
    for id in ["trace-lost-a", "trace-lost-b"] {
        store.submit(record(id, r#"{"x":1}"#)).await.unwrap();
    }
    // Every COMMIT now waits for a standby that does not exist: the claim's commit does not
    // answer within the write timeout, and commits once the requirement is lifted.
    let client = sql(&pg).await;
    set_system(
        &client,
        "synchronous_standby_names",
        Some("missing_standby"),
    )
    .await;
    let e = store
        .claim_due(i64::MAX, 10)
        .await
        .expect_err("no answer in time");
    assert!(e.is_unavailable(), "{e:?}");
    set_system(&client, "synchronous_standby_names", None).await;
    let leased: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox_records WHERE claim_token IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!("{leased} rows leased by the claim whose answer was lost");

    assert_eq!(
        super::claimable(&store).await,
        ["trace-lost-a", "trace-lost-b"],
        "claimed again at once, not after the 600 s lease"
    );
    assert!(store.counts().await.unwrap().balanced());
}
