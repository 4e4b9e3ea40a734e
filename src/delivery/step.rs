//! One step of delivery, [`Delivery::step`]: settle the attempts that came back, decide how
//! much may be sent now, claim that many due records and start sending them. The worker loop
//! ([`super::worker`]) runs a step whenever something changed; tests run steps themselves,
//! with a clock of their own and a fake [`Sender`], so none of them waits on a timer.
//!
//! How much may be sent is asked of [`super::gate`] in order: are we paused for credentials
//! (then only a probe every `auth-probe-interval`), does the circuit allow sending (else
//! nothing until its cooldown ends, then one probe), how many of the `delivery-concurrency`
//! send slots are free. Sends start first from records claimed by earlier steps, then the
//! step hands its store work to a round ([`super::rounds`]): the outcomes of finished sends,
//! and a claim when the records at hand run low, sized by [`super::ahead`] (one concurrency
//! ahead with the embedded store, whose claims are held in memory and write nothing; with
//! PostgreSQL, batches that follow the pace, as leases). The embedded store's round is
//! awaited in the step; PostgreSQL's run beside the sends and a later step takes them in.
//! Claims that cannot be sent because the circuit opened, delivery paused or shutdown began
//! are given back unsent: no attempt is spent.
//!
//! A reply moves the circuit breaker, the credentials pause and health in the next step,
//! and the record's new state is written in that step's store round ([`super::round`]).

use super::ahead::Ahead;
use super::backoff;
use super::classify::{classify, Reply, Transport, Verdict};
use super::client::{Attempt, Sender};
use super::gate::{Plan, Probe, SendGate};
use super::outcome::Limits;
use super::request::{RequestError, Target};
use super::round::{Round, Settle, Settled};
use super::rounds::{Landed, Rounds, Slot};
use super::sending::{span, Running, Sent};
use super::state::{DeliveryState, Mode};
use crate::config::DeliverySettings;
use crate::store::{Engine, Record};
use crate::time::Now;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause after a store error before the next step (a failing disk must not spin).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// When the worker should run the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// At once: more is due, or claimed records wait for a free slot.
    Now,
    /// When a send finishes (every slot is busy), or something else wakes the worker.
    SendFinished,
    /// When the store round running beside the sends finishes (its claims are what is sent
    /// next), or a send finishes, or something else wakes the worker.
    RoundFinished,
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

/// What [`Delivery::send_or_round_finished`] waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Send,
    Round,
}

/// The delivery worker's state: what it has claimed, what it is sending, the gate.
pub struct Delivery<S: Sender> {
    store: Engine,
    sender: Arc<S>,
    target: Arc<Target>,
    settings: DeliverySettings,
    /// The credentials pause and the circuit breaker.
    gate: SendGate,
    /// Claimed, not yet sent, with when each was claimed.
    ready: VecDeque<(Record, Instant)>,
    sending: Running,
    /// Sends that finished, settled by the next step.
    finished: Vec<Sent>,
    /// How much to claim ahead, and when a claim has waited too long.
    ahead: Ahead,
    /// The store rounds running beside the sends (PostgreSQL), and those that finished and
    /// were not yet taken in by a step.
    rounds: Rounds,
    /// Store work gathered while a round was running, for the next one.
    pending: Round,
    /// When nothing more is due, as the last claim that came back short found: `None` when
    /// that is not known (claim again), `Some(None)` when nothing is due at all.
    next_due: Option<Option<Instant>>,
    /// After a failed store round, no round before this time.
    store_retry_at: Option<Instant>,
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
        let store: Engine = store.into();
        Ok(Delivery {
            target: Arc::new(Target::new(&settings)?),
            gate: SendGate::new(&settings, state),
            sender: Arc::new(sender),
            settings,
            store: store.clone(),
            ahead: Ahead::new(store.postgres().map(|s| s.lease()), Instant::now()),
            ready: VecDeque::new(),
            sending: Running::default(),
            finished: vec![],
            rounds: Rounds::default(),
            pending: Round::default(),
            next_due: None,
            store_retry_at: None,
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

    /// Whether a store round is running beside the sends.
    pub fn round_running(&self) -> bool {
        self.rounds.any_running()
    }

    /// Waits until a store round running beside the sends finishes (at once when none
    /// runs); the next step takes in what it did. Cancel-safe, like [`Self::send_finished`].
    pub async fn round_finished(&mut self) {
        self.rounds.any_finished().await;
    }

    /// Waits until a send or a store round finishes, whichever is first: `Finished::Send`
    /// or `Finished::Round`. Cancel-safe.
    pub async fn send_or_round_finished(&mut self) -> Finished {
        let rounds = &mut self.rounds;
        let (running, finished) = (&mut self.sending, &mut self.finished);
        let (sending, storing) = (!running.set.is_empty(), rounds.any_running());
        tokio::select! {
            Some(r) = running.set.join_next_with_id(), if sending => {
                running.collect(finished, r);
                Finished::Send
            }
            _ = rounds.any_finished(), if storing => Finished::Round,
        }
    }

    /// One step at `now`: settles the sends that finished, then claims and starts as many
    /// as may be sent now. Sends start from records already claimed before any store work,
    /// so they run while the store round does; with PostgreSQL the round runs on beside
    /// them and a later step takes in its claims, with the embedded store it is awaited here.
    pub async fn step(&mut self, now: Now) -> StepReport {
        while let Some(r) = self.sending.set.try_join_next_with_id() {
            self.sending.collect(&mut self.finished, r);
        }
        let mut settled = self.take_in_rounds(now).await;
        let mut work = std::mem::take(&mut self.pending);
        work.release.append(&mut self.sending.lost);
        for sent in std::mem::take(&mut self.finished) {
            self.handle(sent, now, &mut work);
        }
        // Claims that waited past half their lease go back before another instance takes
        // them over (see `ahead`).
        let ahead = &self.ahead;
        let (stale, fresh) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(_, at)| ahead.stale(*at, now.at));
        self.ready = fresh;
        work.release
            .extend(stale.into_iter().map(|(r, _)| r.trace_id));

        let concurrency = self.settings.concurrency;
        let plan = self
            .gate
            .plan(now, concurrency.saturating_sub(self.sending()));
        let (want, probe) = match plan {
            Plan::Hold(_) => {
                // Paused or circuit open: what was claimed for sending goes back unsent.
                work.release
                    .extend(self.ready.drain(..).map(|(r, _)| r.trace_id));
                (0, Probe::None)
            }
            Plan::Send { want, probe } => {
                if probe != Probe::None {
                    // Exactly one request: keep the oldest claim, if any, as the probe.
                    let keep = self.ready.pop_front();
                    work.release
                        .extend(self.ready.drain(..).map(|(r, _)| r.trace_id));
                    self.ready.extend(keep);
                }
                (want, probe)
            }
        };
        let mut started = self.start(want, probe, now);
        let store_waits = self.store_retry_at.is_some_and(|at| now.at < at);
        let shared = self.shared_store();
        let claim_slot = if shared { Slot::Claim } else { Slot::Write };
        if !store_waits {
            if matches!(plan, Plan::Send { .. }) && !self.rounds.running(claim_slot) {
                let unfilled = want - started;
                let claim = match probe {
                    Probe::None => self.ahead.claim(self.ready.len(), unfilled, concurrency),
                    _ => usize::from(unfilled > 0 && self.ready.is_empty()),
                };
                match shared {
                    true if claim > 0 => self.launch(Slot::Claim, Round::claiming(claim), now),
                    true => {}
                    false => work.claim = claim,
                }
            }
            if !work.is_empty() && !self.rounds.running(Slot::Write) {
                self.launch(Slot::Write, std::mem::take(&mut work), now);
            }
            if !shared {
                self.rounds.all_finished().await;
                settled.extend(self.take_in_rounds(now).await);
                started += self.start(want - started, probe, now);
            }
        }
        work.claim = 0;
        self.pending = work;
        if started == 0 {
            // Nothing to probe with yet: the next plan grants the probe again.
            self.gate.probe_unused(probe, now);
        }
        let next = match plan {
            Plan::Hold(until) => Next::At(until),
            Plan::Send { want: 0, .. } => Next::SendFinished,
            // After a failed round (this one's too, with the embedded store).
            _ if self.store_retry_at.is_some_and(|at| now.at < at) => Next::At(self.store_retry_at),
            _ if !self.ready.is_empty() => Next::Now,
            _ if self.rounds.any_running() => Next::RoundFinished,
            // Known only when the last claim came back short: nothing more is due now.
            _ => self.next_due.map_or(Next::Now, Next::At),
        };
        StepReport {
            started,
            settled,
            next,
        }
    }

    /// Starts sends for up to `want` of the records at hand, oldest due first; how many.
    fn start(&mut self, want: usize, probe: Probe, now: Now) -> usize {
        let started = want.min(self.ready.len());
        if started > 0 {
            let creds = self
                .state()
                .credentials()
                .expect("credentials are set before delivery starts");
            for (record, _) in self.ready.drain(..started).collect::<Vec<_>>() {
                let send = (self.sender.clone(), self.target.clone(), creds.clone());
                self.sending.spawn(record, probe, send, now);
            }
            self.ahead.started(started, now.at);
        }
        started
    }

    /// Starts `round` in `slot`, beside the sends.
    fn launch(&mut self, slot: Slot, round: Round, now: Now) {
        if round.claim > 0 {
            self.next_due = None;
        }
        let limits = self.limits();
        self.rounds.launch(slot, round, &self.store, limits, now);
    }

    /// Takes in the store rounds that finished: what each settled, in order.
    async fn take_in_rounds(&mut self, now: Now) -> Vec<(String, Settled)> {
        let mut settled = vec![];
        for landed in self.rounds.take_finished().await {
            settled.extend(self.take_in(landed, now));
        }
        settled
    }

    /// Takes in one store round that finished: its claims join the records at hand, its
    /// failures pause the next round; what it settled, in order.
    fn take_in(&mut self, landed: Landed, now: Now) -> Vec<(String, Settled)> {
        let Landed {
            mut done,
            asked,
            at,
        } = landed;
        if asked {
            self.ahead.round_took(now.at.saturating_duration_since(at));
        }
        self.sending.lost.append(&mut done.unreleased);
        self.pending.settle.append(&mut done.unsettled);
        if let Some(e) = done.write_failed.take() {
            // The outcomes are kept for the next round. An outage is logged by the claims,
            // which fail with it; a write that fails alone is most often one sent on a
            // connection the server's restart had closed before the pool noticed, and the
            // claims beside it already answer again.
            match self.store_down {
                true => {
                    tracing::debug!(error = %e, "outcomes not written; kept for the next round")
                }
                false => {
                    tracing::warn!(error = %e, "delivery could not write outcomes; kept for the next round")
                }
            }
            self.store_retry_at = Some(now.at + STORE_ERROR_PAUSE);
        }
        let settled = done.outcomes();
        match std::mem::replace(&mut done.claimed, Ok(vec![])) {
            Ok(records) => {
                if asked {
                    self.store_answered();
                    self.store_retry_at = None;
                }
                self.ready.extend(records.into_iter().map(|r| (r, at)));
            }
            Err(e) => {
                self.store_failed(&e);
                self.store_retry_at = Some(now.at + STORE_ERROR_PAUSE);
            }
        }
        match done.next_due_ms {
            None => {}
            Some(Ok(due)) => self.next_due = Some(due.map(|t| now.instant_of(t))),
            Some(Err(e)) => {
                self.store_failed(&e);
                self.store_retry_at = Some(now.at + STORE_ERROR_PAUSE);
            }
        }
        settled
    }

    /// Shutdown: gives back what was claimed but not sent, lets running sends finish for up
    /// to `bound` and writes their outcomes. Sends still running then are cut off; their
    /// records are due again at the next start. The store rounds running are waited for
    /// beside the sends, within the same `bound`, and the last round gets `bound` too, so a
    /// store that does not answer holds shutdown up to twice `bound`, not for as long as it
    /// stays frozen; an outcome not written then means the record is sent again later (with
    /// its key), never lost.
    pub async fn stop(mut self, bound: Duration) {
        if self.sending() > 0 {
            tracing::info!(
                in_flight = self.sending(),
                "shutdown: delivery stopped claiming; waiting for in-flight deliveries"
            );
        }
        // The store rounds running and the sends, side by side within one bound.
        let (rounds, sending, finished) = (&mut self.rounds, &mut self.sending, &mut self.finished);
        let sends = tokio::time::timeout(bound, async {
            while let Some(r) = sending.set.join_next_with_id().await {
                sending.collect(finished, r);
            }
        });
        let (rounds_done, waited) = tokio::join!(rounds.all_finished_within(bound), sends);
        if !rounds_done {
            tracing::warn!("shutdown: a store round still running at the bound was cut off");
        }
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
        // What finished, before the bound or in a round cut off after another finished.
        self.take_in_rounds(Now::read()).await;
        let mut round = std::mem::take(&mut self.pending);
        round
            .release
            .extend(self.ready.drain(..).map(|(r, _)| r.trace_id));
        round.release.append(&mut self.sending.lost);
        let now = Now::read();
        for sent in std::mem::take(&mut self.finished) {
            self.handle(sent, now, &mut round);
        }
        if !round.is_empty() {
            self.launch(Slot::Write, round, now);
            match self.rounds.all_finished_within(bound).await {
                true => drop(self.take_in_rounds(now).await),
                false => tracing::warn!(
                    "shutdown: the store did not take the last outcomes within the bound; \
                     those records are due again when their leases run out"
                ),
            }
        }
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
}

#[cfg(test)]
pub(super) mod tests;
