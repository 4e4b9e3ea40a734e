//! The delivery worker: a loop around [`Delivery::step`]. Between steps it waits for the
//! first of: a new submission (the intake's `Notify`), new credentials, a send finishing,
//! the time the step asked for, or shutdown. The `Notify` futures are registered before the
//! step reads the store, so a submission stored meanwhile is never missed.

use super::client::Sender;
use super::step::{Delivery, Finished, Next};
use crate::time::Now;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// How long the loop lets replies and new submissions gather after one wakes it, before it
/// steps. The outcomes a step writes are one sled transaction (or join the committer's while
/// intake runs), and a transaction holds sled's process-wide lock, which the intake's group
/// commit needs too. Intake bench on a quiet
/// machine, in turns: intake while delivering 0.84 and 0.81 of intake alone with it, 0.72 and
/// 0.77 without. A reply cuts the wait short once no other send is running: waiting longer
/// would gather nothing, and a fixed wait capped the drain at `delivery-concurrency` records
/// per step (drain bench, 50,000 records, concurrency 8: 2,889/s with the fixed wait, 12,438/s
/// with this one).
const COALESCE: Duration = Duration::from_millis(2);

/// What ended the wait between two steps.
enum Woke {
    Submission,
    Reply,
    Other,
}

/// Longest idle sleep with the embedded store; the loop re-reads the store at least this
/// often. Nothing else writes that store, so this is only a safety net.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Longest idle sleep with a store other instances share (PostgreSQL): they store posts this
/// worker is not woken for, and a dead instance's claims run out, so the worker polls. One
/// second keeps a post accepted by another instance, or a lease that ran out, at most a
/// second from its delivery when this instance is the one delivering, for one indexed read
/// (`next_unclaimed_due_ms`) a second.
pub const SHARED_POLL: Duration = Duration::from_secs(1);

/// Runs steps until `stop` carries the shutdown bound, then stops `delivery` within it.
pub(super) async fn run<S: Sender>(
    mut delivery: Delivery<S>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let state = delivery.state().clone();
    let idle = match delivery.shared_store() {
        true => SHARED_POLL,
        false => MAX_IDLE,
    };
    loop {
        if stop.borrow_and_update().is_some() {
            break;
        }
        let woken = wake.notified();
        let kicked = state.kicked();
        tokio::pin!(woken, kicked);
        woken.as_mut().enable();
        kicked.as_mut().enable();

        let until = match delivery.step(Now::read()).await.next {
            Next::Now => continue,
            Next::SendFinished | Next::RoundFinished => None,
            Next::At(until) => until.map(Instant::from_std),
        };
        let latest = Instant::now() + idle;
        let until = until.map_or(latest, |t| t.min(latest));
        let sending = delivery.sending() > 0;
        let storing = delivery.round_running();
        let woke = tokio::select! {
            _ = &mut woken => Woke::Submission,
            _ = &mut kicked => Woke::Other,
            _ = stop.changed() => Woke::Other,
            f = delivery.send_or_round_finished(), if sending || storing => match f {
                Finished::Send => Woke::Reply,
                Finished::Round => Woke::Other,
            },
            _ = tokio::time::sleep_until(until) => Woke::Other,
        };
        // Let more replies and submissions arrive, so that one store round settles and
        // claims them together instead of one transaction each.
        let gather = Instant::now() + COALESCE;
        match woke {
            Woke::Submission => tokio::time::sleep_until(gather).await,
            // The sends still running are the replies worth waiting for: once they are all
            // in, waiting longer gathers nothing more.
            Woke::Reply => {
                while delivery.sending() > 0 {
                    if tokio::time::timeout_at(gather, delivery.send_finished())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            Woke::Other => {}
        }
    }
    let bound = stop.borrow().unwrap_or_default();
    delivery.stop(bound).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::step::tests::{bench, Fake};

    /// On a paused clock, time moves only when every task waits on a timer. A dashboard
    /// that answers at once has every reply in as soon as the sends ran, so the worker steps
    /// again without waiting: the whole backlog goes on no time at all, where a fixed wait
    /// between steps would take `COALESCE` for each step of `delivery-concurrency` records.
    #[tokio::test(start_paused = true)]
    async fn once_every_reply_is_in_the_next_step_runs_without_waiting() {
        let ids: Vec<String> = (0..40).map(|i| format!("trace-w{i:03}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let b = bench(&ids, &[], Fake::new(&[], false)).await;
        let store = b.store.clone();
        let (stop, stopped) = watch::channel(None);
        let started = Instant::now();
        let worker = tokio::spawn(run(b.d, Arc::new(Notify::new()), stopped));
        while store.counts().unwrap().delivered < 40 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "not delivered: {:?}",
                store.counts().unwrap()
            );
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        let took = started.elapsed();
        stop.send(Some(Duration::from_secs(1))).unwrap();
        worker.await.unwrap();
        assert!(
            took < COALESCE,
            "40 records at a concurrency of 8 took {took:?} of the paused clock"
        );
    }
}
