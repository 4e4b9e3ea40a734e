//! One step of delivery, [`Delivery::step`]: settle the attempts that came back, decide how
//! much may be sent now, claim that many due records and start sending them. The worker loop
//! ([`super::worker`]) runs a step whenever something changed; tests run steps themselves,
//! with a clock of their own and a fake [`Sender`], so none of them waits on a timer.
//!
//! How much may be sent is asked of [`super::gate`] in order: are we paused for credentials
//! (then only a probe every `auth-probe-interval`), does the circuit allow sending (else
//! nothing until its cooldown ends, then one probe), how many of the `delivery-concurrency`
//! send slots are free. A step claims that many records plus up to `concurrency` more (claims are held in
//! memory and write nothing, see `crate::store::claims`; only durable records are claimed),
//! starts sends for the free slots and keeps the rest ready for the next steps, so a busy
//! worker claims in one store round per batch. Claims that cannot be sent because the
//! circuit opened, delivery paused or shutdown began are given back unsent: no attempt is
//! spent.
//!
//! A reply moves the circuit breaker, the credentials pause and health in the next step,
//! and the record's new state is written in that step's store round ([`super::round`]).

use super::backoff;
use super::classify::{classify, Reply, Transport, Verdict};
use super::client::{Attempt, Sender};
use super::gate::{Plan, Probe, SendGate};
use super::outcome::Limits;
use super::request::{self, Credentials, RequestError, Target};
use super::round::{Done, Round, Settle, Settled};
use super::state::{DeliveryState, Mode};
use crate::config::DeliverySettings;
use crate::store::{Engine, Record};
use crate::time::Now;
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{Id, JoinError, JoinSet};
use tracing::Instrument;

/// Pause after a store error before the next step (a failing disk must not spin).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// When the worker should run the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// At once: more is due, or claimed records wait for a free slot.
    Now,
    /// When a send finishes (every slot is busy), or something else wakes the worker.
    SendFinished,
    /// At this time, or when woken (`None`: only when woken). Nothing is due before it, or
    /// nothing may be sent before it (circuit open, paused for credentials).
    At(Option<Instant>),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// Sends started.
    pub started: usize,
    /// Records whose attempt was settled (or that were quarantined), and what became of them.
    pub settled: Vec<(String, Settled)>,
    pub next: Next,
}

/// A send that finished.
struct Sent {
    record: Record,
    probe: Probe,
    result: Result<Attempt, RequestError>,
}

/// The span of one attempt: its logs carry the trace ID, never the payload.
fn span(record: &Record) -> tracing::Span {
    tracing::info_span!("delivery", trace_id = %record.trace_id, attempt = record.attempts + 1)
}

/// Sends running now, and the trace ID each carries.
#[derive(Default)]
struct Running {
    set: JoinSet<Sent>,
    ids: HashMap<Id, String>,
    /// Claims of tasks that ended without a result (cut off at shutdown): given back by the
    /// next store round, so that no claim outlives its send.
    lost: Vec<String>,
}

impl Running {
    /// Keeps a finished send for the next step; a task that ended without one has its
    /// claim noted for release.
    fn collect(&mut self, finished: &mut Vec<Sent>, r: Result<(Id, Sent), JoinError>) {
        match r {
            Ok((id, sent)) => {
                self.ids.remove(&id);
                finished.push(sent);
            }
            Err(e) => {
                if !e.is_cancelled() {
                    tracing::error!(error = %e, "a delivery task failed");
                }
                self.lost.extend(self.ids.remove(&e.id()));
            }
        }
    }
}

/// The attempt of a send whose task panicked: the request may have gone out, so it counts as
/// a failed attempt and is retried after the backoff (a release would send it again at once).
fn panicked() -> Attempt {
    tracing::error!("a delivery task panicked; its record is retried after the backoff");
    Attempt {
        reply: Reply::Transport(Transport::Other),
        retry_after: None,
        detail: "the delivery task panicked; see the outbox log".into(),
        elapsed: Duration::ZERO,
    }
}

/// The delivery worker's state: what it has claimed, what it is sending, the gate.
pub struct Delivery<S: Sender> {
    store: Engine,
    sender: Arc<S>,
    target: Arc<Target>,
    settings: DeliverySettings,
    /// The credentials pause and the circuit breaker.
    gate: SendGate,
    /// Claimed, not yet sent.
    ready: VecDeque<Record>,
    sending: Running,
    /// Sends that finished, settled by the next step.
    finished: Vec<Sent>,
    /// Whether the last store round failed: its error is logged once, and once more when
    /// the store answers again, never once per retry.
    store_down: bool,
}

impl<S: Sender> Delivery<S> {
    /// Delivery of `store` through `sender`; the credentials are read from `state` at each
    /// send (set them first).
    pub fn new(
        store: impl Into<Engine>,
        sender: S,
        settings: DeliverySettings,
        state: Arc<DeliveryState>,
    ) -> anyhow::Result<Delivery<S>> {
        Ok(Delivery {
            target: Arc::new(Target::new(&settings)?),
            gate: SendGate::new(&settings, state),
            store: store.into(),
            sender: Arc::new(sender),
            settings,
            ready: VecDeque::new(),
            sending: Running::default(),
            finished: vec![],
            store_down: false,
        })
    }

    pub fn state(&self) -> &Arc<DeliveryState> {
        self.gate.state()
    }

    /// Whether other instances share the store (PostgreSQL): they store records this
    /// worker is not woken for, and their claims run out, so the worker polls.
    pub fn shared_store(&self) -> bool {
        matches!(self.store, Engine::Postgres(_))
    }

    /// Logs a failed store round: the first at ERROR, repeats at DEBUG until it answers.
    fn store_failed(&mut self, e: &crate::store::EngineError) {
        match std::mem::replace(&mut self.store_down, true) {
            false => {
                tracing::error!(error = %e, "delivery cannot read the store; retrying every second until it answers")
            }
            true => tracing::debug!(error = %e, "delivery still cannot read the store"),
        }
    }

    /// Notes a store round that answered, logging the recovery after a failure.
    fn store_answered(&mut self) {
        if std::mem::replace(&mut self.store_down, false) {
            tracing::info!("delivery reads the store again");
        }
    }

    /// Sends running now.
    pub fn sending(&self) -> usize {
        self.sending.set.len()
    }

    /// Waits until a running send finishes (at once when none runs); the next step settles
    /// it. Cancel-safe, so the worker can wait on it beside other wake-ups.
    pub async fn send_finished(&mut self) {
        if let Some(r) = self.sending.set.join_next_with_id().await {
            self.sending.collect(&mut self.finished, r);
        }
    }

    /// One step at `now`: settles the sends that finished, then claims and starts as many
    /// as may be sent now.
    pub async fn step(&mut self, now: Now) -> StepReport {
        while let Some(r) = self.sending.set.try_join_next_with_id() {
            self.sending.collect(&mut self.finished, r);
        }
        let mut round = Round {
            release: std::mem::take(&mut self.sending.lost),
            ..Round::default()
        };
        for sent in std::mem::take(&mut self.finished) {
            self.handle(sent, now, &mut round);
        }
        let concurrency = self.settings.concurrency;
        let plan = self
            .gate
            .plan(now, concurrency.saturating_sub(self.sending()));
        let (want, probe) = match plan {
            Plan::Hold(_) => {
                // Paused or circuit open: what was claimed for sending goes back unsent.
                round
                    .release
                    .extend(self.ready.drain(..).map(|r| r.trace_id));
                (0, Probe::None)
            }
            Plan::Send { want, probe } => {
                if probe != Probe::None {
                    // Exactly one request: keep the oldest claim, if any, as the probe.
                    let keep = self.ready.pop_front();
                    round
                        .release
                        .extend(self.ready.drain(..).map(|r| r.trace_id));
                    self.ready.extend(keep);
                }
                if self.ready.len() < want {
                    round.claim = match probe {
                        Probe::None => want + concurrency - self.ready.len(),
                        _ => 1,
                    };
                }
                (want, probe)
            }
        };
        let asked = round.claim > 0;
        let mut done = self.store_round(round, now).await;
        self.sending.lost.append(&mut done.unreleased);
        let settled = done.outcomes();
        let mut store_failed = false;
        match std::mem::replace(&mut done.claimed, Ok(vec![])) {
            Ok(records) => {
                if asked {
                    self.store_answered();
                }
                self.ready.extend(records)
            }
            Err(e) => {
                self.store_failed(&e);
                store_failed = true;
            }
        }
        if want > 0 && self.ready.is_empty() {
            self.gate.probe_unused(probe, now);
        }
        let started = want.min(self.ready.len());
        if started > 0 {
            let creds = self
                .state()
                .credentials()
                .expect("credentials are set before delivery starts");
            for record in self.ready.drain(..started).collect::<Vec<_>>() {
                self.spawn(record, probe, creds.clone(), now);
            }
        }
        let next = match plan {
            Plan::Hold(until) => Next::At(until),
            Plan::Send { want: 0, .. } => Next::SendFinished,
            _ if store_failed => Next::At(Some(now.at + STORE_ERROR_PAUSE)),
            _ if !self.ready.is_empty() => Next::Now,
            // Read only when the claim came back short: nothing more is due now.
            _ => match done.next_due_ms {
                None => Next::Now,
                Some(Ok(due)) => Next::At(due.map(|t| now.instant_of(t))),
                Some(Err(e)) => {
                    self.store_failed(&e);
                    Next::At(Some(now.at + STORE_ERROR_PAUSE))
                }
            },
        };
        StepReport {
            started,
            settled,
            next,
        }
    }

    /// Shutdown: gives back what was claimed but not sent, lets running sends finish for up
    /// to `bound` and writes their outcomes. Sends still running then are cut off; their
    /// records are due again at the next start.
    pub async fn stop(mut self, bound: Duration) {
        let mut round = Round::default();
        round
            .release
            .extend(self.ready.drain(..).map(|r| r.trace_id));
        if self.sending() > 0 {
            tracing::info!(
                in_flight = self.sending(),
                "shutdown: delivery stopped claiming; waiting for in-flight deliveries"
            );
        }
        let (sending, finished) = (&mut self.sending, &mut self.finished);
        let waited = tokio::time::timeout(bound, async {
            while let Some(r) = sending.set.join_next_with_id().await {
                sending.collect(finished, r);
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                cut_off = self.sending(),
                "shutdown: deliveries still running at the bound were cut off; they are due again at the next start"
            );
            self.sending.set.abort_all();
            while let Some(r) = self.sending.set.join_next_with_id().await {
                self.sending.collect(&mut self.finished, r);
            }
        }
        round.release.append(&mut self.sending.lost);
        let now = Now::read();
        for sent in std::mem::take(&mut self.finished) {
            self.handle(sent, now, &mut round);
        }
        self.store_round(round, now).await.outcomes();
        self.state().update(|v| v.mode = Mode::Stopped);
        tracing::info!("shutdown: delivery worker stopped");
    }

    fn limits(&self) -> Limits {
        Limits {
            max_attempts: self.settings.max_attempts,
            max_age: self.settings.max_age,
            drop_payload_at_delivery: self.settings.payload_retention.is_zero(),
        }
    }

    /// Builds the request for `record` and sends it in a task of its own.
    fn spawn(&mut self, record: Record, probe: Probe, creds: Arc<Credentials>, now: Now) {
        let (sender, target) = (self.sender.clone(), self.target.clone());
        let span = span(&record);
        let timestamp = now.wall_ms.div_euclid(1000);
        let trace_id = record.trace_id.clone();
        let task = self.sending.set.spawn(
            async move {
                let send = async {
                    match request::build(&record, &creds, &target, timestamp) {
                        Ok(req) => Ok(sender.send(req).await),
                        Err(e) => Err(e),
                    }
                };
                let result = AssertUnwindSafe(send)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Ok(panicked()));
                Sent {
                    record,
                    probe,
                    result,
                }
            }
            .instrument(span),
        );
        self.sending.ids.insert(task.id(), trace_id);
    }

    /// Classifies a finished send, moves the circuit and the pause at once, and adds the
    /// record's next state (or its quarantine) to the step's store round.
    fn handle(&mut self, sent: Sent, now: Now, round: &mut Round) {
        let Sent {
            record,
            probe,
            result,
        } = sent;
        let span = span(&record);
        let _entered = span.enter();
        let (attempt, verdict) = match result {
            Ok(a) => {
                let v = classify(a.reply);
                (a, v)
            }
            Err(RequestError::Body(e)) => {
                if probe == Probe::Circuit {
                    self.gate.probe_unused(probe, now);
                }
                round.unsendable.push((record.trace_id, e.to_string()));
                return;
            }
            // Credentials that cannot even be sent are as wrong as rejected ones.
            Err(e @ RequestError::BadCredentials) => {
                let a = Attempt {
                    reply: Reply::Transport(Transport::Other),
                    retry_after: None,
                    detail: e.to_string(),
                    elapsed: Duration::ZERO,
                };
                (a, Verdict::Pause)
            }
        };
        metrics::histogram!("outbox_delivery_seconds").record(attempt.elapsed.as_secs_f64());
        self.gate.on_reply(&attempt, verdict, probe, now);
        let delay = backoff::next_delay(
            record.attempts.saturating_add(1),
            self.settings.retry_base,
            self.settings.retry_cap,
            attempt.retry_after,
            &mut rand::thread_rng(),
        );
        round.settle.push(Settle {
            claimed: record,
            attempt,
            verdict,
            delay,
            now_ms: now.wall_ms,
        });
    }

    /// Runs `round`: on a blocking thread for the embedded store (whose calls wait for the
    /// disk), on the runtime for PostgreSQL (nothing to do: no store call at all).
    async fn store_round(&self, round: Round, now: Now) -> Done {
        if round.is_empty() {
            return Done::default();
        }
        let (store, limits) = (self.store.clone(), self.limits());
        match store {
            Engine::Embedded(_) => tokio::task::spawn_blocking(move || {
                futures_executor::block_on(round.run(&store, limits, now.wall_ms))
            })
            .await
            .expect("a store round does not panic"),
            Engine::Postgres(_) => round.run(&store, limits, now.wall_ms).await,
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
