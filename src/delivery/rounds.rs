//! The store rounds a delivery worker has running beside its sends.
//!
//! With PostgreSQL a step does not wait for the store: it starts sends from records already
//! claimed and hands the store work to tasks of their own, at most one per [`Slot`]. The
//! outcomes (and releases) go in one; a claim goes in the other, so a claim never waits
//! behind a write of outcomes, and the records at hand are refilled while the outcomes of
//! the last sends commit. A later step takes in what finished ([`Rounds::take_finished`]).
//! With the embedded store one round does both and the step awaits it.

use super::outcome::Limits;
use super::round::{Done, Round};
use crate::store::Engine;
use crate::time::Now;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Which kind of store work a round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Outcomes, releases and quarantines; with the embedded store, the claim too.
    Write,
    /// A claim of due records, on its own (PostgreSQL).
    Claim,
}

/// A store round that finished: what it did, whether it claimed, and when it started (the
/// time its claims count from).
pub struct Landed {
    pub done: Done,
    pub asked: bool,
    pub at: Instant,
}

/// A store round running, and what a step needs to take it in.
struct InFlight {
    task: JoinHandle<Done>,
    asked: bool,
    at: Instant,
}

/// The rounds running, one per [`Slot`] at most, and those finished but not taken in.
#[derive(Default)]
pub struct Rounds {
    write: Option<InFlight>,
    claim: Option<InFlight>,
    landed: Vec<Landed>,
}

impl Rounds {
    /// Whether a round of that kind is running.
    pub fn running(&self, slot: Slot) -> bool {
        self.slot(slot).is_some()
    }

    /// Whether any round is running.
    pub fn any_running(&self) -> bool {
        self.write.is_some() || self.claim.is_some()
    }

    fn slot(&self, slot: Slot) -> &Option<InFlight> {
        match slot {
            Slot::Write => &self.write,
            Slot::Claim => &self.claim,
        }
    }

    /// Starts `round` in `slot` (which must be free) as a task of its own: on a blocking
    /// thread for the embedded store (whose calls wait for the disk), on the runtime for
    /// PostgreSQL.
    pub fn launch(&mut self, slot: Slot, round: Round, store: &Engine, limits: Limits, now: Now) {
        let store = store.clone();
        let asked = round.claim > 0;
        let task = match store {
            Engine::Embedded(_) => tokio::task::spawn_blocking(move || {
                futures_executor::block_on(round.run(&store, limits, now.wall_ms))
            }),
            Engine::Postgres(_) => {
                tokio::spawn(async move { round.run(&store, limits, now.wall_ms).await })
            }
        };
        let running = Some(InFlight {
            task,
            asked,
            at: now.at,
        });
        let free = match slot {
            Slot::Write => std::mem::replace(&mut self.write, running),
            Slot::Claim => std::mem::replace(&mut self.claim, running),
        };
        assert!(free.is_none(), "one {slot:?} round at a time");
    }

    /// Waits until a running round finishes (at once when none runs); a later
    /// [`Self::take_finished`] hands it over. Cancel-safe.
    pub async fn any_finished(&mut self) {
        let (write, claim) = (&mut self.write, &mut self.claim);
        let landed = tokio::select! {
            l = done(write), if write.is_some() => l,
            l = done(claim), if claim.is_some() => l,
            else => None,
        };
        self.landed.extend(landed);
    }

    /// Waits until every running round finished.
    pub async fn all_finished(&mut self) {
        for slot in [&mut self.write, &mut self.claim] {
            self.landed.extend(done(slot).await);
        }
    }

    /// Waits up to `bound` for every running round; past it, cuts off those still running
    /// (their work is dropped: see [`crate::store::postgres::claims`] for why a settle or
    /// claim cut off is safe) and returns `false`. A round of the embedded store runs on a
    /// blocking thread that cannot be cut off, and is waited for.
    pub async fn all_finished_within(&mut self, bound: std::time::Duration) -> bool {
        if tokio::time::timeout(bound, self.all_finished())
            .await
            .is_ok()
        {
            return true;
        }
        for slot in [&mut self.write, &mut self.claim] {
            if let Some(f) = slot.take() {
                f.task.abort();
                let _ = f.task.await;
            }
        }
        false
    }

    /// The rounds that finished, in the order they were taken in.
    pub async fn take_finished(&mut self) -> Vec<Landed> {
        for slot in [&mut self.write, &mut self.claim] {
            if slot.as_ref().is_some_and(|f| f.task.is_finished()) {
                self.landed.extend(done(slot).await);
            }
        }
        std::mem::take(&mut self.landed)
    }
}

/// Waits for the round in `slot`, if any, and takes it out with what it did. Cancel-safe:
/// the slot is emptied only once the task has finished, in the same poll.
async fn done(slot: &mut Option<InFlight>) -> Option<Landed> {
    let f = slot.as_mut()?;
    let done = (&mut f.task).await.expect("a store round does not panic");
    let f = slot.take().expect("running");
    Some(Landed {
        done,
        asked: f.asked,
        at: f.at,
    })
}
