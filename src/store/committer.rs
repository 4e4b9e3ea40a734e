//! Group commit in two stages, so the disk and the CPU work at the same time:
//!
//! 1. the committer thread takes every submission waiting and stores them in one sled
//!    transaction (the idempotency check and the insert, atomically);
//! 2. the sync thread takes every batch the committer has finished, makes them durable with one
//!    `flush()` + `fdatasync` of `<data-dir>/db`, then answers them all.
//!
//! While batch N is being synced, batch N+1's transaction runs. sled has no group commit of
//! its own (32 writers each flushing gave about one sync per write); here the batch size grows
//! with load and a lone request is committed at once.
//!
//! Why this is safe: a batch is answered only after a sync that started after its transaction
//! had finished, so that sync covers it. A duplicate found in a batch is answered after that
//! batch's sync, which covers the original too (it was written earlier), so "already stored"
//! is only said once the original is on disk.

use super::tx::{submit_batch, SubmitOutcome};
use super::{Record, StoreError, Syncer, Trees};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Most submissions in one transaction. Bounds the time one commit holds sled's write lock.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<SubmitOutcome, StoreError>>;

/// A stored batch waiting for its sync: the outcome for each reply, or the batch's error.
struct Stored {
    replies: Vec<Reply>,
    outcomes: Result<Vec<SubmitOutcome>, StoreError>,
    started: Instant,
}

pub(super) struct Committer {
    tx: Mutex<Option<mpsc::Sender<(Record, Reply)>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Committer {
    pub fn start(trees: Trees, syncer: Arc<Syncer>) -> Committer {
        let (tx, rx) = mpsc::channel::<(Record, Reply)>();
        // A rendezvous channel: the committer hands over a stored batch only when the sync
        // thread takes it, so at most one batch waits for a sync. Meanwhile submissions pile
        // up and the next transaction is larger: sled pays per transaction (it hands a log
        // write to its thread pool each time), so few large transactions leave CPU for HTTP.
        let (stored_tx, stored_rx) = mpsc::sync_channel::<Stored>(0);
        let committer = std::thread::Builder::new()
            .name("outbox-committer".into())
            .spawn({
                let syncer = syncer.clone();
                move || commit_loop(rx, &trees, &syncer, stored_tx)
            })
            .expect("spawn committer thread");
        let sync = std::thread::Builder::new()
            .name("outbox-sync".into())
            .spawn(move || sync_loop(stored_rx, &syncer))
            .expect("spawn sync thread");
        Committer {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![committer, sync]),
        }
    }

    pub async fn submit(&self, record: Record) -> Result<SubmitOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.tx.lock().unwrap().clone().ok_or(StoreError::Closed)?;
        sender
            .send((record, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops taking submissions, answers those already queued, and waits for both threads.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(
    rx: mpsc::Receiver<(Record, Reply)>,
    trees: &Trees,
    syncer: &Syncer,
    out: mpsc::SyncSender<Stored>,
) {
    while let Ok((r, reply)) = rx.recv() {
        let started = Instant::now();
        let mut records = vec![r];
        let mut replies = vec![reply];
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((r, reply)) => {
                    records.push(r);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("outbox_commit_batch_size").record(records.len() as f64);
        let outcomes = match syncer.failure() {
            // Once failed, nothing reaches sled until a restart.
            Some(e) => Err(StoreError::Sync(e)),
            None => submit_batch(trees, &records).inspect_err(|e| {
                if let StoreError::Sled(sled::Error::Io(_) | sled::Error::Corruption { .. }) = e {
                    syncer.fail(e.to_string());
                }
            }),
        };
        if out
            .send(Stored {
                replies,
                outcomes,
                started,
            })
            .is_err()
        {
            return;
        }
    }
}

fn sync_loop(rx: mpsc::Receiver<Stored>, syncer: &Syncer) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let sync_started = Instant::now();
        let synced = syncer.sync();
        metrics::histogram!("outbox_sync_seconds").record(sync_started.elapsed().as_secs_f64());
        for batch in batches {
            metrics::histogram!("outbox_commit_seconds")
                .record(batch.started.elapsed().as_secs_f64());
            answer(batch, &synced);
        }
    }
}

fn answer(batch: Stored, synced: &Result<(), StoreError>) {
    match (batch.outcomes, synced) {
        (Ok(outcomes), Ok(())) => {
            for (reply, outcome) in batch.replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        (Err(StoreError::Sync(msg)), _) => {
            for reply in batch.replies {
                let _ = reply.send(Err(StoreError::Sync(msg.clone())));
            }
        }
        (Err(e), _) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "a group commit failed; its submissions were not stored");
            for reply in batch.replies {
                let _ = reply.send(Err(StoreError::Commit(msg.clone())));
            }
        }
        (Ok(_), Err(e)) => {
            let msg = e.to_string();
            for reply in batch.replies {
                let _ = reply.send(Err(StoreError::Sync(msg.clone())));
            }
        }
    }
}
