//! Group commit in two stages, so the disk and the CPU work at the same time:
//!
//! 1. the committer thread takes every submission waiting, stores them in one sled
//!    transaction (the idempotency check and the insert, atomically), then has sled write its
//!    log buffer to the file (`flush()`);
//! 2. the sync thread takes every batch flushed so far, makes them durable with one
//!    `fdatasync` of `<data-dir>/db`, then answers them all.
//!
//! While batch N is fdatasynced, batch N+1's transaction runs. The flush stays on the
//! committer because sled holds its global lock shared while a flush waits for the disk, and a
//! transaction needs it exclusively: a flush on another thread would stall the next
//! transaction anyway, and cost two thread hand-offs more. sled has no group commit of its own
//! (32 writers each flushing gave about one sync per write); here the batch size grows with
//! load and a lone request is committed at once.
//!
//! Why this is safe: a batch is answered only after an fdatasync that started after its own
//! flush had finished, and that flush started after its transaction. A duplicate found in a
//! batch is answered after that batch's flush and fdatasync, which cover the original too (it
//! was written earlier), so "already stored" is only said once the original is on disk.
//!
//! The delivery worker sends only what is durable: every batch gets a sequence number before
//! its transaction, and [`Durable::wait`] blocks until the batches that had started when it
//! was called are fdatasynced. A record the worker has read was written by such a batch, so
//! no power cut can erase a record the dashboard already has.

use super::tx::{submit_batch, SubmitOutcome};
use super::{Current, Gen, Record, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Most submissions in one transaction. Bounds the time one commit holds sled's write lock.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<SubmitOutcome, StoreError>>;

/// A stored and flushed batch waiting for its fdatasync: the outcome for each reply, or the
/// batch's error.
struct Stored {
    replies: Vec<Reply>,
    outcomes: Result<Vec<SubmitOutcome>, StoreError>,
    started: Instant,
    seq: u64,
    /// The database it was written to: its log is the file to fdatasync.
    gen: Arc<Gen>,
}

/// Which committed batches are durable (see the module doc).
#[derive(Default)]
pub(super) struct Durable {
    /// Sequence number of the last batch whose transaction began.
    started: AtomicU64,
    /// The last batch fdatasynced, and whether syncing failed.
    synced: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Durable {
    fn begin(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn synced(&self, seq: u64, ok: bool) {
        let mut s = self.synced.lock().unwrap();
        s.0 = s.0.max(seq);
        s.1 |= !ok;
        self.changed.notify_all();
    }

    /// Blocks until every batch that had begun when called is fdatasynced. Errs once syncing
    /// has failed: nothing written since can be made durable.
    pub fn wait(&self) -> Result<(), StoreError> {
        let target = self.started.load(Ordering::SeqCst);
        let mut s = self.synced.lock().unwrap();
        loop {
            match *s {
                (_, true) => {
                    return Err(StoreError::Sync(
                        "an fdatasync of the store failed; see the log".into(),
                    ))
                }
                (synced, false) if synced >= target => return Ok(()),
                _ => s = self.changed.wait(s).unwrap(),
            }
        }
    }
}

pub(super) struct Committer {
    tx: Mutex<Option<mpsc::Sender<(Record, Reply)>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub durable: Arc<Durable>,
}

impl Committer {
    pub fn start(current: Current) -> Committer {
        let durable = Arc::new(Durable::default());
        let (tx, rx) = mpsc::channel::<(Record, Reply)>();
        // Unbounded, yet never long: the committer's own flush paces it to the disk, and the
        // sync thread takes every waiting batch for one fdatasync.
        let (stored_tx, stored_rx) = mpsc::channel::<Stored>();
        let committer = std::thread::Builder::new()
            .name("outbox-committer".into())
            .spawn({
                let durable = durable.clone();
                move || commit_loop(rx, &current, &durable, stored_tx)
            })
            .expect("spawn committer thread");
        let sync = std::thread::Builder::new()
            .name("outbox-sync".into())
            .spawn({
                let durable = durable.clone();
                move || sync_loop(stored_rx, &durable)
            })
            .expect("spawn sync thread");
        Committer {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![committer, sync]),
            durable,
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
    current: &Current,
    durable: &Durable,
    out: mpsc::Sender<Stored>,
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
        let seq = durable.begin();
        let (gen, outcomes) = commit(current, &records);
        if out
            .send(Stored {
                replies,
                outcomes,
                started,
                seq,
                gen,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Stores `records` in one transaction on the current database and has sled write its log
/// buffer; again on the next database if a compaction replaced it meanwhile. Returns the
/// database written, whose log the sync thread then fdatasyncs.
fn commit(
    current: &Current,
    records: &[Record],
) -> (Arc<Gen>, Result<Vec<SubmitOutcome>, StoreError>) {
    loop {
        let gen = current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let syncer = &gen.syncer;
        let outcomes = match syncer.failure() {
            // Once failed, nothing reaches sled until a restart.
            Some(e) => Err(StoreError::Sync(e)),
            None => submit_batch(&gen.trees, records)
                .inspect_err(|e| {
                    if let StoreError::Sled(sled::Error::Io(_) | sled::Error::Corruption { .. }) = e
                    {
                        syncer.fail(e.to_string());
                    }
                })
                .and_then(|outcomes| syncer.flush().map(|()| outcomes)),
        };
        if !matches!(outcomes, Err(StoreError::Moved)) {
            return (gen, outcomes);
        }
    }
}

fn sync_loop(rx: mpsc::Receiver<Stored>, durable: &Durable) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let sync_started = Instant::now();
        // One database but for the batches around a compaction's swap.
        let mut logs: Vec<&Arc<Gen>> = Vec::with_capacity(1);
        for b in &batches {
            if !logs.iter().any(|g| Arc::ptr_eq(g, &b.gen)) {
                logs.push(&b.gen);
            }
        }
        let synced = logs.iter().try_for_each(|g| g.syncer.sync_data());
        metrics::histogram!("outbox_sync_seconds").record(sync_started.elapsed().as_secs_f64());
        let last = batches.last().map_or(0, |b| b.seq);
        durable.synced(last, synced.is_ok());
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
