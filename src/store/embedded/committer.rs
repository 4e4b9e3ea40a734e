//! Group commit in two stages, so the disk and the CPU work at the same time:
//!
//! 1. the committer thread takes every submission waiting, stores them in one sled
//!    transaction (the idempotency check and the insert, atomically), then has sled write its
//!    log buffer to the file (`flush()`). While it is busy with submissions, the delivery
//!    worker sends its outcomes here too, and they go in the same transaction: sled writes
//!    its log buffer out twice for every transaction, each time waiting for the disk, and
//!    holds its process-wide lock meanwhile, so a second transaction for them would cost as
//!    much again. Outcomes need no fdatasync (a record whose outcome is lost is delivered
//!    again), so they are answered once written, and outcomes alone get a transaction of
//!    their own and neither flush nor fdatasync. When a batch fails, its submissions and its
//!    outcomes go again apart, so that neither fails for the other;
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

use super::lifecycle::SubmitOutcome;
use super::quarantine::quarantine_on;
use super::tx::{commit_batch, SettleJob, Settled, Submitted};
use super::{gen_of, Current, Gen, Record, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Most submissions in one transaction. Bounds the time one commit holds sled's write lock.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<SubmitOutcome, StoreError>>;

/// What the committer is asked to write. Submissions are most of them, so they are not boxed.
#[allow(clippy::large_enum_variant)]
enum Job {
    Submit(Record, Reply),
    /// Delivery outcomes: written in the next transaction, answered once it is written (they
    /// need no fdatasync: a record whose outcome is lost is delivered again).
    Settle(SettleJob, mpsc::SyncSender<Result<Settled, StoreError>>),
}

/// A stored and flushed batch waiting for its fdatasync: the outcome for each reply, or the
/// batch's error.
struct Stored {
    replies: Vec<Reply>,
    outcomes: Result<Vec<Submitted>, StoreError>,
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
    /// Set when the sync thread has ended (closed, or died): nothing more becomes durable.
    closed: AtomicBool,
    changed: Condvar,
}

/// Held by the sync thread: when it ends, however it ends (a panic included), waiters on
/// [`Durable::wait`] are woken and told, instead of waiting for a sync that never comes.
struct Closes(Arc<Durable>);

impl Drop for Closes {
    fn drop(&mut self) {
        let _s = self.0.synced.lock().unwrap_or_else(|e| e.into_inner());
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.changed.notify_all();
    }
}

impl Durable {
    fn begin(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn synced(&self, seq: u64, ok: bool) {
        let mut s = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.max(seq);
        s.1 |= !ok;
        self.changed.notify_all();
    }

    /// Blocks until every batch that had begun when called is fdatasynced. Errs once syncing
    /// has failed (nothing written since can be made durable), and once the sync thread has
    /// ended with those batches not synced ([`StoreError::Closed`]).
    pub fn wait(&self) -> Result<(), StoreError> {
        let target = self.started.load(Ordering::SeqCst);
        let mut s = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *s {
                (_, true) => {
                    return Err(StoreError::Sync(
                        "an fdatasync of the store failed; see the log".into(),
                    ))
                }
                (synced, false) if synced >= target => return Ok(()),
                _ if self.closed.load(Ordering::SeqCst) => return Err(StoreError::Closed),
                _ => s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

pub(super) struct Committer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub durable: Arc<Durable>,
    /// Set while the committer works through submissions, cleared when it waits for work.
    busy: Arc<AtomicBool>,
}

impl Committer {
    pub fn start(current: Current) -> Committer {
        let durable = Arc::new(Durable::default());
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Job>();
        // Unbounded, yet never long: the committer's own flush paces it to the disk, and the
        // sync thread takes every waiting batch for one fdatasync.
        let (stored_tx, stored_rx) = mpsc::channel::<Stored>();
        let committer = std::thread::Builder::new()
            .name("outbox-committer".into())
            .spawn({
                let (durable, busy) = (durable.clone(), busy.clone());
                move || commit_loop(rx, &current, &durable, &busy, stored_tx)
            })
            .expect("spawn committer thread");
        let sync = std::thread::Builder::new()
            .name("outbox-sync".into())
            .spawn({
                let durable = durable.clone();
                move || {
                    let _closes = Closes(durable.clone());
                    sync_loop(stored_rx, &durable)
                }
            })
            .expect("spawn sync thread");
        Committer {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![committer, sync]),
            durable,
            busy,
        }
    }

    /// Whether submissions are being committed: outcomes sent now ride their transaction.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    pub async fn submit(&self, record: Record) -> Result<SubmitOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Submit(record, reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes delivery outcomes in the committer's next transaction (see [`Job::Settle`]);
    /// blocks until they are written.
    pub fn settle(&self, job: SettleJob) -> Result<Settled, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Settle(job, reply))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let sender = self.tx.lock().unwrap().clone().ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)
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
    rx: mpsc::Receiver<Job>,
    current: &Current,
    durable: &Durable,
    busy: &AtomicBool,
    out: mpsc::Sender<Stored>,
) {
    loop {
        let first = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Empty) => {
                busy.store(false, Ordering::Relaxed);
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        let started = Instant::now();
        let (mut records, mut replies, mut settles) = (vec![], vec![], vec![]);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Submit(r, reply) => {
                    records.push(r);
                    replies.push(reply);
                }
                Job::Settle(job, reply) => settles.push((job, reply)),
            }
            if records.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        busy.store(!records.is_empty(), Ordering::Relaxed);
        if records.is_empty() {
            // Outcomes only: nothing to make durable.
            let (jobs, answers): (Vec<_>, Vec<_>) = settles.into_iter().unzip();
            answer_settles(answers, settle_alone(current, &jobs));
            continue;
        }
        metrics::histogram!("outbox_commit_batch_size").record(records.len() as f64);
        let seq = durable.begin();
        let (gen, outcomes) = commit(current, &records, settles);
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

/// Stores `records` and writes `settles` in one transaction on the current database, then
/// has sled write its log buffer; again on the next database if a compaction replaced it
/// meanwhile. The settles are answered once written. Returns the database written, whose log
/// the sync thread then fdatasyncs. Entries found not to decode under a submission's trace
/// ID are quarantined (see [`quarantine_apart`]).
fn commit(
    current: &Current,
    records: &[Record],
    settles: Vec<(SettleJob, mpsc::SyncSender<Result<Settled, StoreError>>)>,
) -> (Arc<Gen>, Result<Vec<Submitted>, StoreError>) {
    let (jobs, answers): (Vec<_>, Vec<_>) = settles.into_iter().unzip();
    loop {
        let gen = gen_of(current);
        let syncer = &gen.syncer;
        let written = match syncer.failure() {
            // Once failed, nothing reaches sled until a restart.
            Some(e) => Err(StoreError::Sync(e)),
            None => commit_batch(&gen.trees, records, &jobs).inspect_err(|e| fail_on_io(&gen, e)),
        };
        let outcomes = match written {
            Err(StoreError::Moved) => continue,
            Ok((outcomes, settled)) => {
                answer_settles(answers, Ok(settled));
                quarantine_apart(current, records, &outcomes);
                Ok(outcomes)
            }
            // Neither half is held back by the other's failure: each goes again alone.
            Err(_) if !jobs.is_empty() => {
                answer_settles(answers, settle_alone(current, &jobs));
                return commit(current, records, vec![]);
            }
            Err(e) => Err(e),
        };
        let outcomes = outcomes.and_then(|o| syncer.flush().map(|()| o));
        return (gen, outcomes);
    }
}

/// Quarantines, on a thread of its own, each stored entry that did not decode under the trace
/// ID of a submission in `records` (by its slot in `outcomes`): that takes scans of the index
/// trees, which must not hold up the group commits behind this one. The submission itself is
/// answered with a retry; once the entry is gone, a retry stores it.
fn quarantine_apart(current: &Current, records: &[Record], outcomes: &[Submitted]) {
    let bad: Vec<(String, String)> = records
        .iter()
        .zip(outcomes)
        .filter_map(|(r, o)| o.as_ref().err().map(|e| (r.trace_id.clone(), e.clone())))
        .collect();
    if bad.is_empty() {
        return;
    }
    let current = current.clone();
    let spawned = std::thread::Builder::new()
        .name("outbox-quarantine".into())
        .spawn(move || {
            for (id, reason) in bad {
                if let Err(e) = quarantine_on(&current, &id, &reason) {
                    tracing::error!(trace_id = %id, error = %e, "quarantining an entry that does not decode failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start quarantining entries that do not decode");
    }
}

/// Writes `jobs` in one transaction of their own, on the current database.
fn settle_alone(current: &Current, jobs: &[SettleJob]) -> Result<Vec<Settled>, StoreError> {
    let mut gen = gen_of(current);
    loop {
        if let Some(e) = gen.syncer.failure() {
            return Err(StoreError::Sync(e));
        }
        match commit_batch(&gen.trees, &[], jobs) {
            Err(StoreError::Moved) => {
                gen = gen_of(current);
            }
            r => return r.inspect_err(|e| fail_on_io(&gen, e)).map(|(_, s)| s),
        }
    }
}

/// An I/O error or corruption from sled: the store stops acknowledging until a restart.
fn fail_on_io(gen: &Gen, e: &StoreError) {
    if let StoreError::Sled(sled::Error::Io(_) | sled::Error::Corruption { .. }) = e {
        gen.syncer.fail(e.to_string());
    }
}

fn answer_settles(
    answers: Vec<mpsc::SyncSender<Result<Settled, StoreError>>>,
    settled: Result<Vec<Settled>, StoreError>,
) {
    match settled {
        Ok(settled) => {
            for (answer, s) in answers.into_iter().zip(settled) {
                let _ = answer.send(Ok(s));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(StoreError::Commit(msg.clone())));
            }
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
                let _ = reply.send(outcome.map_err(|reason| {
                    StoreError::Commit(format!(
                        "the entry stored under this trace ID does not decode ({reason}) and is being quarantined"
                    ))
                }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::tx::submit_batch;
    use crate::store::record::{sample, Status};
    use crate::store::{Change, Store, Updated};

    fn dead_letter(ids: &[&str]) -> SettleJob {
        SettleJob {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            decide: Box::new(|_, r: &Record| {
                let mut n = r.clone();
                n.status = Status::Dead;
                Change::Put(n)
            }),
        }
    }

    /// Runs `commit` as the committer thread would, with `job` answered on a channel.
    fn commit_with(
        s: &Store,
        records: &[Record],
        job: SettleJob,
    ) -> (
        Result<Vec<Submitted>, StoreError>,
        Result<Settled, StoreError>,
    ) {
        let (answer, settled) = mpsc::sync_channel(1);
        let (_, outcomes) = commit(&s.current, records, vec![(job, answer)]);
        (outcomes, settled.recv().unwrap())
    }

    #[test]
    fn a_wait_for_durability_ends_when_the_sync_thread_dies() {
        let durable = Arc::new(Durable::default());
        durable.begin();
        let (done, waited) = mpsc::channel();
        std::thread::spawn({
            let durable = durable.clone();
            move || done.send(durable.wait())
        });
        let sync = std::thread::spawn({
            let durable = durable.clone();
            move || {
                let _closes = Closes(durable);
                panic!("the sync thread dies");
            }
        });
        assert!(sync.join().is_err());
        let r = waited.recv_timeout(std::time::Duration::from_secs(10));
        assert!(matches!(r, Ok(Err(StoreError::Closed))), "{r:?}");
        durable.synced(1, true);
        assert!(durable.wait().is_ok(), "what was synced stays synced");
    }

    #[test]
    fn outcomes_sent_to_the_committer_are_written_and_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-cm0")]).unwrap();
        let settled = s
            .committer
            .settle(dead_letter(&["trace-cm0", "trace-none"]));
        assert!(matches!(
            settled.unwrap()[..],
            [Ok(Updated::Put(_)), Ok(Updated::NotFound)]
        ));
        assert_eq!(s.get("trace-cm0").unwrap().unwrap().status, Status::Dead);
        assert!(!s.committer.busy(), "no submission is being committed");
    }

    #[test]
    fn new_records_and_outcomes_are_written_in_one_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-cm1")]).unwrap();
        let (outcomes, settled) =
            commit_with(&s, &[sample("trace-cm2")], dead_letter(&["trace-cm1"]));
        assert!(matches!(
            outcomes.unwrap()[..],
            [Ok(SubmitOutcome::Stored(_))]
        ));
        assert!(matches!(settled.unwrap()[..], [Ok(Updated::Put(_))]));
        assert_eq!(s.get("trace-cm1").unwrap().unwrap().status, Status::Dead);
        let c = s.counts().unwrap();
        assert_eq!((c.accepted, c.pending, c.dead), (2, 1, 1));
        assert!(c.balanced());
    }

    /// A submission whose trace ID's stored entry does not decode fails alone: the other
    /// submissions and the outcomes written with it go in, and the bad entry is quarantined,
    /// after which a retry of that submission is stored.
    #[test]
    fn an_undecodable_entry_fails_only_its_own_submission_and_is_quarantined() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-cm3")]).unwrap();
        s.gen()
            .trees
            .entries
            .insert("trace-cm4", &[3, 0xff])
            .unwrap();
        let batch = [
            sample("trace-cm6"),
            sample("trace-cm4"),
            sample("trace-cm7"),
        ];
        let (outcomes, settled) = commit_with(&s, &batch, dead_letter(&["trace-cm3"]));
        let outcomes = outcomes.unwrap();
        assert!(
            matches!(
                outcomes[..],
                [
                    Ok(SubmitOutcome::Stored(_)),
                    Err(_),
                    Ok(SubmitOutcome::Stored(_))
                ]
            ),
            "{outcomes:?}"
        );
        assert!(matches!(settled.unwrap()[..], [Ok(Updated::Put(_))]));
        assert_eq!(s.get("trace-cm3").unwrap().unwrap().status, Status::Dead);
        assert!(s.get("trace-cm6").unwrap().is_some() && s.get("trace-cm7").unwrap().is_some());
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while s.gen().trees.quarantine.get("trace-cm4").unwrap().is_none() {
            assert!(Instant::now() < until, "the bad entry was not quarantined");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let retried = futures_executor::block_on(s.submit(sample("trace-cm4")));
        assert!(
            matches!(retried, Ok(SubmitOutcome::Stored(_))),
            "{retried:?}"
        );
        let c = s.counts().unwrap();
        assert_eq!((c.accepted, c.quarantined), (4, 1));

        // An outcome for a record that does not decode fails nothing: it is reported in its
        // slot, and the new record beside it goes in.
        s.gen()
            .trees
            .entries
            .insert("trace-cm8", &[3, 0xff])
            .unwrap();
        let (outcomes, settled) =
            commit_with(&s, &[sample("trace-cm5")], dead_letter(&["trace-cm8"]));
        assert!(matches!(
            outcomes.unwrap()[..],
            [Ok(SubmitOutcome::Stored(_))]
        ));
        assert!(
            matches!(settled.unwrap()[..], [Err(_)]),
            "reported, not written"
        );
        assert!(s.get("trace-cm5").unwrap().is_some());
    }
}
