//! The step, driven directly: a real store in a temporary directory, a dashboard in memory
//! and a clock the test sets, so every wait is a step at a later time.

use super::*;
use crate::config::{RawSettings, Settings, Source};
use crate::delivery::circuit::CircuitState;
use crate::delivery::request::DeliveryRequest;
use crate::delivery::state::Mode;
use crate::delivery::Credentials;
use crate::store::record::sample;
use crate::store::{Change, Status, Store};
use std::sync::Mutex;
use tokio::sync::Semaphore;

const KEY: &str = "step-test-ingest-key";
/// When `sample` records were received and first fall due.
const T0: i64 = 1_700_000_000_000;
const S: fn(u64) -> Duration = Duration::from_secs;
/// A scripted status that makes the send panic instead of answering.
const PANIC: u16 = 999;

/// A dashboard in memory: answers each request with the next scripted status and
/// `Retry-After` (200 once the script is spent) and keeps every request. A held one answers
/// only as permits are given.
#[derive(Clone)]
pub(in crate::delivery) struct Fake(Arc<Inner>);

struct Inner {
    script: Mutex<VecDeque<(u16, Option<Duration>)>>,
    got: Mutex<Vec<DeliveryRequest>>,
    hold: Option<Semaphore>,
}

impl Fake {
    pub(in crate::delivery) fn new(script: &[(u16, Option<Duration>)], held: bool) -> Fake {
        Fake(Arc::new(Inner {
            script: Mutex::new(script.iter().copied().collect()),
            got: Mutex::default(),
            hold: held.then(|| Semaphore::new(0)),
        }))
    }

    fn requests(&self) -> Vec<DeliveryRequest> {
        self.0.got.lock().unwrap().clone()
    }

    fn answer(&self, n: usize) {
        self.0.hold.as_ref().expect("held").add_permits(n);
    }
}

impl Sender for Fake {
    async fn send(&self, request: DeliveryRequest) -> Attempt {
        let (status, retry_after) = self
            .0
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, None));
        self.0.got.lock().unwrap().push(request);
        assert_ne!(status, PANIC, "scripted: the send task panics");
        if let Some(hold) = &self.0.hold {
            hold.acquire().await.expect("open").forget();
        }
        Attempt {
            reply: Reply::Status(status),
            retry_after,
            detail: String::new(),
            elapsed: Duration::ZERO,
        }
    }
}

pub(in crate::delivery) struct Bench {
    _dir: tempfile::TempDir,
    pub store: Arc<Store>,
    fake: Fake,
    pub d: Delivery<Fake>,
    t0: Now,
}

/// Stored records `ids`, due at `T0`, and delivery with the default settings but `extra`.
pub(in crate::delivery) async fn bench(
    ids: &[&str],
    extra: &[(&'static str, &str)],
    fake: Fake,
) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    for id in ids {
        store.submit(sample(id)).await.unwrap();
    }
    let mut raw = RawSettings::default();
    let base = [("dashboard-url", "http://127.0.0.1:9"), ("ingest-key", KEY)];
    for (name, value) in base.iter().chain(extra) {
        raw.values.insert(name, (value.to_string(), Source::Flag));
    }
    let settings = Settings::from_layers(&raw.layers().unwrap()).unwrap();
    let state = Arc::new(DeliveryState::new(true));
    state.set_credentials(Credentials {
        ingest_key: KEY.into(),
        signing_secret: None,
    });
    let d = Delivery::new(
        store.clone(),
        fake.clone(),
        settings.delivery.unwrap(),
        state,
    )
    .unwrap();
    let t0 = Now {
        wall_ms: T0,
        at: Instant::now(),
    };
    Bench {
        _dir: dir,
        store,
        fake,
        d,
        t0,
    }
}

/// Steps at `now` until nothing is being sent and nothing more may be sent at `now`;
/// returns what was settled on the way and when the last step asked to be run again.
async fn run_at(d: &mut Delivery<Fake>, now: Now) -> (Vec<(String, Settled)>, Next) {
    let mut settled = vec![];
    loop {
        let r = d.step(now).await;
        settled.extend(r.settled);
        if d.sending() > 0 {
            d.send_finished().await;
        } else if r.next != Next::Now {
            settled.sort_by(|a, b| a.0.cmp(&b.0));
            return (settled, r.next);
        }
    }
}

fn all(ids: &[&str], s: Settled) -> Vec<(String, Settled)> {
    ids.iter().map(|id| (id.to_string(), s)).collect()
}

#[tokio::test]
async fn a_due_record_is_sent_once_and_written_as_delivered() {
    let mut b = bench(&["step-ok-1"], &[], Fake::new(&[], false)).await;
    let (settled, next) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled, all(&["step-ok-1"], Settled::Delivered));
    assert_eq!(next, Next::At(None), "nothing else is queued");
    let r = b.store.get("step-ok-1").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.delivered_at_ms),
        (Status::Delivered, 1, Some(T0))
    );
    let got = b.fake.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].url, "http://127.0.0.1:9/api/ingest");
    assert_eq!(got[0].headers["idempotency-key"], "step-ok-1");
    let view = b.d.state().snapshot();
    assert_eq!(
        view.last_success_at.as_deref(),
        Some("2023-11-14T22:13:20.000Z")
    );
    assert!(b.store.counts().unwrap().balanced());
}

#[tokio::test]
async fn a_failed_attempt_is_not_sent_again_before_it_is_due_and_is_when_it_is() {
    let fake = Fake::new(&[(503, Some(S(5)))], false);
    let mut b = bench(&["step-retry-1"], &[], fake).await;
    let (settled, next) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled, all(&["step-retry-1"], Settled::Retry));
    let r = b.store.get("step-retry-1").unwrap().unwrap();
    assert_eq!(
        (
            r.status,
            r.attempts,
            r.last_status_code,
            r.next_attempt_at_ms
        ),
        (Status::Pending, 1, Some(503), T0 + 5_000)
    );
    assert_eq!(next, Next::At(Some(b.t0.at + S(5))), "woken when it is due");

    let early = b.d.step(b.t0.after(Duration::from_millis(4_999))).await;
    assert_eq!(early.started, 0);
    let (settled, _) = run_at(&mut b.d, b.t0.after(S(5))).await;
    assert_eq!(settled, all(&["step-retry-1"], Settled::Delivered));
    assert_eq!(b.fake.requests().len(), 2);
}

#[tokio::test]
async fn the_circuit_opens_at_its_threshold_holds_every_record_and_a_probe_closes_it() {
    let ids = ["step-circuit-1", "step-circuit-2", "step-circuit-3"];
    let fake = Fake::new(&[(503, Some(S(1))); 3], false);
    let extra = [("circuit-threshold", "2"), ("circuit-cooldown", "30s")];
    let mut b = bench(&ids, &extra, fake).await;
    let (settled, next) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled, all(&ids, Settled::Retry));
    assert_eq!(next, Next::At(Some(b.t0.at + S(30))));
    assert_eq!(b.d.state().snapshot().circuit, CircuitState::Open);
    assert_eq!(
        b.d.state().warnings(),
        ["delivery circuit open: the dashboard is failing"]
    );

    // Due again after a second, but nothing goes out while the circuit is open.
    let held = b.d.step(b.t0.after(S(10))).await;
    assert_eq!(
        (held.started, held.next),
        (0, Next::At(Some(b.t0.at + S(30))))
    );

    // After the cooldown exactly one probe; its success closes the circuit, the rest follow.
    let probe = b.d.step(b.t0.after(S(30))).await;
    assert_eq!(probe.started, 1);
    assert_eq!(b.d.state().snapshot().circuit, CircuitState::HalfOpen);
    let (settled, _) = run_at(&mut b.d, b.t0.after(S(30))).await;
    assert_eq!(settled, all(&ids, Settled::Delivered));
    assert_eq!(b.d.state().snapshot().circuit, CircuitState::Closed);
    assert_eq!(b.fake.requests().len(), 6);
}

#[tokio::test]
async fn rejected_credentials_pause_all_delivery_spend_no_attempt_and_a_probe_resumes_it() {
    let ids = ["step-auth-1", "step-auth-2"];
    let extra = [("delivery-concurrency", "1"), ("auth-probe-interval", "2m")];
    let mut b = bench(&ids, &extra, Fake::new(&[(401, None)], false)).await;
    let (settled, next) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled, all(&ids[..1], Settled::Paused));
    assert_eq!(next, Next::At(Some(b.t0.at + S(120))));
    assert_eq!(b.d.state().mode(), Mode::PausedCredentials);
    let r = b.store.get("step-auth-1").unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.next_attempt_at_ms),
        (Status::Pending, 0, T0)
    );
    assert_eq!(b.store.counts().unwrap().in_flight, 0, "claims given back");

    let held = b.d.step(b.t0.after(S(60))).await;
    assert_eq!(held.started, 0);
    let probe = b.d.step(b.t0.after(S(120))).await;
    assert_eq!(probe.started, 1);
    let (settled, _) = run_at(&mut b.d, b.t0.after(S(120))).await;
    assert_eq!(settled, all(&ids, Settled::Delivered));
    assert_eq!(b.d.state().mode(), Mode::Running);
    let r = b.store.get("step-auth-1").unwrap().unwrap();
    assert_eq!(r.attempts, 1, "the paused attempt did not count");
}

#[tokio::test]
async fn a_record_that_cannot_be_sent_is_quarantined_and_the_accounting_stays_balanced() {
    let ids = ["step-bad-1", "step-good-1"];
    let mut b = bench(&ids, &[], Fake::new(&[], false)).await;
    b.store
        .update("step-bad-1", |r| {
            let mut n = r.clone();
            n.payload = Some("{not json".into());
            Change::Put(n)
        })
        .unwrap();
    let (settled, _) = run_at(&mut b.d, b.t0).await;
    assert_eq!(
        settled,
        [
            ("step-bad-1".to_owned(), Settled::Quarantined),
            ("step-good-1".to_owned(), Settled::Delivered)
        ]
    );
    let c = b.store.counts().unwrap();
    assert_eq!((c.quarantined, c.delivered, c.in_flight), (1, 1, 0));
    assert!(c.balanced(), "{c:?}");
    assert_eq!(b.fake.requests().len(), 1);
}

#[tokio::test]
async fn no_more_than_the_concurrency_is_sent_at_once_and_a_reply_frees_a_slot() {
    let ids = [
        "step-conc-1",
        "step-conc-2",
        "step-conc-3",
        "step-conc-4",
        "step-conc-5",
    ];
    let fake = Fake::new(&[], true);
    let mut b = bench(&ids, &[("delivery-concurrency", "2")], fake).await;
    let first = b.d.step(b.t0).await;
    assert_eq!((first.started, first.next), (2, Next::Now));
    let busy = b.d.step(b.t0).await;
    assert_eq!((busy.started, busy.next), (0, Next::SendFinished));
    assert_eq!(
        b.store.counts().unwrap().in_flight,
        4,
        "claimed in one batch: two sending, two ready"
    );

    b.fake.answer(1);
    b.d.send_finished().await;
    let next = b.d.step(b.t0).await;
    assert_eq!((next.settled.len(), next.started), (1, 1));
    assert_eq!(b.d.sending(), 2);

    b.fake.answer(ids.len());
    let (settled, _) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled.len(), 4);
    assert_eq!(b.store.counts().unwrap().delivered, 5);
}

#[tokio::test]
async fn stopping_gives_back_unsent_claims_and_writes_the_outcomes_that_came_back() {
    let ids = ["step-stop-1", "step-stop-2"];
    let fake = Fake::new(&[], true);
    let mut b = bench(&ids, &[("delivery-concurrency", "1")], fake).await;
    assert_eq!(b.d.step(b.t0).await.started, 1);
    let state = b.d.state().clone();
    b.fake.answer(1);
    b.d.stop(S(5)).await;
    let c = b.store.counts().unwrap();
    assert_eq!((c.delivered, c.pending, c.in_flight), (1, 1, 0));
    assert_eq!(state.mode(), Mode::Stopped);
}

#[tokio::test]
async fn a_send_that_panics_leaves_no_claim_and_counts_as_a_failed_attempt() {
    let fake = Fake::new(&[(PANIC, None)], false);
    let mut b = bench(&["step-panic-1"], &[], fake).await;
    let (settled, _) = run_at(&mut b.d, b.t0).await;
    assert_eq!(settled, all(&["step-panic-1"], Settled::Retry));
    assert!(b.store.claimed().is_empty(), "no claim outlives its send");
    let r = b.store.get("step-panic-1").unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Pending, 1));
    assert!(r.next_attempt_at_ms > T0, "retried after the backoff");
}

#[tokio::test]
async fn a_send_cut_off_at_shutdown_gives_its_claim_back() {
    let ids = ["step-cut-1", "step-cut-2"];
    let fake = Fake::new(&[], true);
    let mut b = bench(&ids, &[("delivery-concurrency", "1")], fake).await;
    assert_eq!(b.d.step(b.t0).await.started, 1);
    b.d.stop(Duration::from_millis(50)).await;
    assert!(b.store.claimed().is_empty(), "{:?}", b.store.claimed());
    let c = b.store.counts().unwrap();
    assert_eq!((c.pending, c.in_flight), (2, 0));
}
