//! Group commit: one thread takes every submission waiting, stores them in one transaction,
//! makes them durable with one `flush()` + `fdatasync`, then answers them all.
//!
//! sled has no group commit of its own (32 writers each flushing gave about one sync per
//! write). While a commit is syncing, new submissions queue up and form the next batch, so
//! the batch size grows with load and a lone request is committed at once.
//!
//! A duplicate is answered from the same thread after the sync of its batch, so "already
//! stored" is only said once the original is on disk.

use super::tx::{submit_batch, SubmitOutcome};
use super::{Record, StoreError, Syncer, Trees};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most submissions in one transaction. Bounds the time one commit holds sled's write lock.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<SubmitOutcome, StoreError>>;

pub(super) struct Committer {
    tx: Mutex<Option<mpsc::Sender<(Record, Reply)>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Committer {
    pub fn start(trees: Trees, syncer: Arc<Syncer>) -> Committer {
        let (tx, rx) = mpsc::channel::<(Record, Reply)>();
        let thread = std::thread::Builder::new()
            .name("outbox-committer".into())
            .spawn(move || run(rx, &trees, &syncer))
            .expect("spawn committer thread");
        Committer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
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

    /// Stops taking submissions, answers those already queued, and waits for the thread.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(rx: mpsc::Receiver<(Record, Reply)>, trees: &Trees, syncer: &Syncer) {
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Ok((r, reply)) = rx.recv() {
        records.push(r);
        replies.push(reply);
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((r, reply)) => {
                    records.push(r);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result =
            submit_batch(trees, &records).and_then(|outcomes| syncer.sync().map(|_| outcomes));
        metrics::histogram!("outbox_commit_batch_size").record(records.len() as f64);
        metrics::histogram!("outbox_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(StoreError::Sync(msg.clone())));
                }
            }
        }
        records.clear();
    }
}
