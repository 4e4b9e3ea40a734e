//! Transactions: every change to a record moves its index entries and counters with it.

use super::counters::{self, Counts, Deltas};
use super::done::done_keys;
use super::keys;
use super::lifecycle::{Change, SubmitOutcome, Updated};

use super::record::{self, Record, Status};
use super::{Gen, Store, StoreError, Trees};
use crate::time::now_ms;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use std::collections::HashSet;
use std::sync::RwLockReadGuard;

type TxTrees = (
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
);

/// The trees of a record transaction, by name.
struct Tx<'a> {
    entries: &'a TransactionalTree,
    due: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    counters: &'a TransactionalTree,
    done: &'a TransactionalTree,
    bodies: &'a TransactionalTree,
    trees: &'a Trees,
}

/// A record as read inside a transaction, with the `bodies` key of its body.
struct Stored {
    record: Record,
    body: Option<u64>,
}

impl Tx<'_> {
    fn new<'a>(t: &'a TxTrees, trees: &'a Trees) -> Tx<'a> {
        Tx {
            entries: &t.0,
            due: &t.1,
            queue: &t.2,
            counters: &t.3,
            done: &t.4,
            bodies: &t.5,
            trees,
        }
    }

    /// The whole record under `trace_id`; `Err(reason)` if it does not decode.
    fn read(
        &self,
        trace_id: &str,
    ) -> Result<Option<Result<Stored, String>>, UnabortableTransactionError> {
        let Some(v) = self.entries.get(trace_id.as_bytes())? else {
            return Ok(None);
        };
        let entry = match record::decode_entry(&v) {
            Ok(e) => e,
            Err(e) => return Ok(Some(Err(e.to_string()))),
        };
        let body = entry.body_key();
        let bytes = match body {
            Some(k) => self.bodies.get(record::body_key(k))?,
            None => None,
        };
        Ok(Some(
            entry
                .complete(bytes.as_deref())
                .map(|record| Stored { record, body })
                .map_err(|e| e.to_string()),
        ))
    }

    /// Writes `new` over `old` (either may be absent), keeping the body, `due`, `queue`,
    /// `done` and the status counters in step. Only index entries that exist are removed,
    /// and a body is written only when it is new or changed: a delivery writes the small
    /// state, removes the body and one `due` key, and adds one `done` key.
    fn write(
        &self,
        old: Option<&Stored>,
        new: Option<&Record>,
        deltas: &mut Deltas,
    ) -> Result<(), UnabortableTransactionError> {
        let mut keep_body = None;
        if let Some(Stored { record: o, body }) = old {
            deltas.status(o.status, -1);
            if o.status.is_queued() {
                self.due
                    .remove(keys::time_key(o.next_attempt_at_ms, &o.trace_id))?;
            }
            if o.in_queue_index() {
                self.queue
                    .remove(keys::time_key(o.received_at_ms, &o.trace_id))?;
            }
            for k in done_keys(o, o.payload.is_some()) {
                self.done.remove(k)?;
            }
            if let Some(b) = *body {
                match new {
                    Some(n) if record::has_body(n) && record::same_body(o, n) => {
                        keep_body = Some(b)
                    }
                    _ => {
                        self.bodies.remove(&record::body_key(b))?;
                    }
                }
            }
        }
        match new {
            Some(n) => {
                deltas.status(n.status, 1);
                if n.status.is_queued() {
                    self.due.insert(
                        keys::time_key(n.next_attempt_at_ms, &n.trace_id),
                        &[keys::status_byte(n.status)],
                    )?;
                }
                if n.in_queue_index() {
                    self.queue
                        .insert(keys::time_key(n.received_at_ms, &n.trace_id), &[])?;
                }
                for k in done_keys(n, n.payload.is_some()) {
                    self.done.insert(k, &[])?;
                }
                let body = match keep_body {
                    Some(b) => Some(b),
                    None if record::has_body(n) => {
                        let b = self.trees.next_body_key();
                        self.bodies
                            .insert(&record::body_key(b), record::encode_body(n))?;
                        Some(b)
                    }
                    None => None,
                };
                self.entries
                    .insert(n.trace_id.as_bytes(), record::encode_state(n, body))?;
            }
            None => {
                if let Some(o) = old {
                    self.entries.remove(o.record.trace_id.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Carries out one decided change.
    fn apply(
        &self,
        old: Stored,
        change: Change,
        deltas: &mut Deltas,
    ) -> Result<Updated, UnabortableTransactionError> {
        Ok(match change {
            Change::Keep => Updated::Kept(old.record),
            Change::Put(new) => {
                self.write(Some(&old), Some(&new), deltas)?;
                Updated::Put(new)
            }
            Change::Purge => {
                self.write(Some(&old), None, deltas)?;
                deltas.add(counters::PURGED, 1);
                Updated::Purged
            }
        })
    }
}

pub(super) fn flatten<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    })
}

fn undecodable(trace_id: &str, reason: String) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Undecodable {
        trace_id: trace_id.to_owned(),
        reason,
    })
}

impl Trees {
    /// Runs `f` as one transaction over the record trees (entries, due, queue, counters,
    /// done, bodies), holding the write gate shared and marking `ids` dirty so a live backup
    /// re-copies them. `f` may run more than once (sled retries conflicts).
    fn record_transaction<'a, T>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        f: impl Fn(&Tx) -> Result<T, ConflictableTransactionError<StoreError>>,
    ) -> Result<T, StoreError> {
        self.record_transaction_held(&self.write_gate()?, ids, f)
    }

    /// [`Trees::record_transaction`] for a caller that holds the write gate already.
    fn record_transaction_held<'a, T>(
        &self,
        _gate: &RwLockReadGuard<'_, ()>,
        ids: impl IntoIterator<Item = &'a str>,
        f: impl Fn(&Tx) -> Result<T, ConflictableTransactionError<StoreError>>,
    ) -> Result<T, StoreError> {
        let t = (
            &self.entries,
            &self.due,
            &self.queue,
            &self.counters,
            &self.done,
            &self.bodies,
        );
        self.mark_dirty(ids);
        flatten(t.transaction(|tx: &TxTrees| f(&Tx::new(tx, self))))
    }
}

/// Stores a batch of new records in one transaction, as the committer does; the first
/// submission whose stored entry does not decode is the error.
#[cfg(test)]
pub(super) fn submit_batch(
    trees: &Trees,
    batch: &[Record],
) -> Result<Vec<SubmitOutcome>, StoreError> {
    let (outcomes, _) = commit_batch(trees, batch, &[])?;
    let slots = batch.iter().zip(outcomes);
    slots
        .map(|(r, o)| {
            o.map_err(|reason| StoreError::Undecodable {
                trace_id: r.trace_id.clone(),
                reason,
            })
        })
        .collect()
}

/// What became of one submission of a [`commit_batch`]: `Err(reason)` when an entry that
/// does not decode is stored under its trace ID (nothing was written for it; the caller
/// quarantines that entry). One such entry fails its own submission, not the batch.
pub(super) type Submitted = Result<SubmitOutcome, String>;

/// What one settle of a [`commit_batch`] wrote: as for [`Store::update_many`].
pub(super) type Settled = Vec<Result<Updated, String>>;

/// A settle for [`commit_batch`]: records the delivery worker claimed, and what to make of
/// each (by its index in `ids`). `decide` may run more than once.
pub(super) struct SettleJob {
    pub ids: Vec<String>,
    pub decide: Decide,
}

/// What a settle makes of each record it names.
pub(super) type Decide = Box<dyn Fn(usize, &Record) -> Change + Send>;

/// The committer's unit of work: new records and delivery outcomes in ONE transaction, since
/// every sled transaction costs two waits on the disk whatever it carries.
pub(super) fn commit_batch(
    trees: &Trees,
    batch: &[Record],
    settles: &[SettleJob],
) -> Result<(Vec<Submitted>, Vec<Settled>), StoreError> {
    let ids = batch.iter().map(|r| r.trace_id.as_str()).chain(
        settles
            .iter()
            .flat_map(|s| s.ids.iter().map(String::as_str)),
    );
    trees.record_transaction(ids, |tx| {
        let mut deltas = Deltas::default();
        let outcomes = submit_in(tx, batch, &mut deltas)?;
        let settled = settles
            .iter()
            .map(|s| {
                let ids: Vec<&str> = s.ids.iter().map(String::as_str).collect();
                write_in(tx, &ids, &s.decide, &mut deltas)
            })
            .collect::<Result<_, _>>()?;
        deltas.apply(tx.counters)?;
        Ok((outcomes, settled))
    })
}

fn submit_in(
    tx: &Tx,
    batch: &[Record],
    deltas: &mut Deltas,
) -> Result<Vec<Submitted>, ConflictableTransactionError<StoreError>> {
    let mut out = Vec::with_capacity(batch.len());
    for r in batch {
        // Reads see this transaction's own earlier writes, so a trace ID repeated within one
        // batch is a duplicate too. The state alone answers: no body read.
        let outcome = match tx.entries.get(r.trace_id.as_bytes())? {
            Some(v) => match record::decode_entry(&v) {
                Ok(old) if old.state().payload_hash == r.payload_hash => {
                    Ok(SubmitOutcome::Duplicate(old.state().receipt()))
                }
                Ok(old) => Ok(SubmitOutcome::Conflict(old.state().receipt())),
                Err(e) => Err(e.to_string()),
            },
            None => {
                tx.write(None, Some(r), deltas)?;
                deltas.add(counters::ACCEPTED, 1);
                Ok(SubmitOutcome::Stored(r.receipt()))
            }
        };
        out.push(outcome);
    }
    Ok(out)
}

/// Reads, decides and writes each of `ids` inside `tx`; see [`write_many_in`].
fn write_in(
    tx: &Tx,
    ids: &[&str],
    decide: &dyn Fn(usize, &Record) -> Change,
    deltas: &mut Deltas,
) -> Result<Settled, ConflictableTransactionError<StoreError>> {
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let old = match tx.read(id)? {
            None => Ok(Updated::NotFound),
            Some(Err(reason)) => Err(reason),
            Some(Ok(old)) => {
                let change = decide(i, &old.record);
                Ok(tx.apply(old, change, deltas)?)
            }
        };
        out.push(old);
    }
    Ok(out)
}

/// [`Store::update_many`] without the claim check, on `g`, its write gate held.
pub(super) fn write_many_in(
    g: &Gen,
    gate: &RwLockReadGuard<'_, ()>,
    ids: &[&str],
    decide: impl Fn(usize, &Record) -> Change,
) -> Result<Vec<Result<Updated, String>>, StoreError> {
    g.trees
        .record_transaction_held(gate, ids.iter().copied(), |tx| {
            let mut deltas = Deltas::default();
            let out = write_in(tx, ids, &decide, &mut deltas)?;
            deltas.apply(tx.counters)?;
            Ok(out)
        })
}

impl Store {
    /// Reads, decides and writes one record atomically. `decide` may run more than once
    /// (sled retries conflicting transactions), so it must not have side effects. A record
    /// the delivery worker has claimed is not changed: [`Updated::Busy`].
    pub fn update<F: Fn(&Record) -> Change>(
        &self,
        trace_id: &str,
        decide: F,
    ) -> Result<Updated, StoreError> {
        self.on_current(|g| {
            // Both held across the write, so a claim cannot slip in between the check and the change.
            self.claims_and_gate(g, |claims, gate| {
                if claims.contains(trace_id) {
                    // Read as stored (`get` would take the claims lock again).
                    return Ok(match g.trees.read(trace_id)? {
                        Some(r) => Updated::Busy(r),
                        None => Updated::NotFound,
                    });
                }
                g.trees.record_transaction_held(gate, [trace_id], |tx| {
                    let old = match tx.read(trace_id)? {
                        None => return Ok(Updated::NotFound),
                        Some(Err(reason)) => return Err(undecodable(trace_id, reason)),
                        Some(Ok(old)) => old,
                    };
                    let mut deltas = Deltas::default();
                    let change = decide(&old.record);
                    let result = tx.apply(old, change, &mut deltas)?;
                    deltas.apply(tx.counters)?;
                    Ok(result)
                })
            })
        })
    }

    /// Runs `f` with the claims locked and the write gate of `g` held shared, without ever
    /// holding the claims while waiting for the gate: an exclusive hold (an ops command's
    /// patch-up) then holds up writers only, never readers of the claims (counts, health).
    pub(super) fn claims_and_gate<R>(
        &self,
        g: &Gen,
        f: impl FnOnce(&mut HashSet<String>, &RwLockReadGuard<'_, ()>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        loop {
            let mut claims = self.claims.lock();
            match g.trees.try_write_gate()? {
                Some(gate) => return f(&mut claims, &gate),
                None => {
                    drop(claims);
                    // Waits out the exclusive hold, then tries again.
                    drop(g.trees.write_gate()?);
                }
            }
        }
    }

    /// [`Store::update`] for many records in ONE transaction (sled writes one log buffer per
    /// transaction). Claimed records are left alone ([`Updated::Busy`]). `decide` gets each
    /// record's index in `ids`. A record that does not decode is left as it is and reported
    /// as `Err(reason)` in its slot (the caller quarantines it); the others still commit.
    pub fn update_many<F: Fn(usize, &Record) -> Change>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, StoreError> {
        self.on_current(|g| {
            self.claims_and_gate(g, |claims, gate| {
                let busy: Vec<bool> = ids.iter().map(|id| claims.contains(*id)).collect();
                let mut out = write_many_in(g, gate, ids, |i, r| match busy[i] {
                    true => Change::Keep,
                    false => decide(i, r),
                })?;
                for (slot, busy) in out.iter_mut().zip(busy) {
                    if let (true, Ok(Updated::Kept(r))) = (busy, &slot) {
                        *slot = Ok(Updated::Busy(r.clone()));
                    }
                }
                Ok(out)
            })
        })
    }

    /// Makes every in-flight record due now. Claims are no longer written, so only a store
    /// written by an earlier release (which persisted leases) can hold in-flight records; its
    /// `in_flight` counter says so, and a store without any is not scanned.
    pub(super) fn requeue_in_flight(&self) -> Result<usize, StoreError> {
        if Counts::from_tree(&self.gen().trees.counters)?.in_flight == 0 {
            return Ok(0);
        }
        let now = now_ms();
        let in_flight: Vec<String> = self
            .gen()
            .trees
            .due
            .iter()
            .filter_map(|item| item.ok())
            .filter(|(_, v)| v.first() == Some(&keys::status_byte(Status::InFlight)))
            .filter_map(|(k, _)| keys::split_time_key(&k).map(|(_, id)| id.to_owned()))
            .collect();
        for id in &in_flight {
            let r = self.update(id, |r| {
                if r.status != Status::InFlight {
                    return Change::Keep;
                }
                let mut n = r.clone();
                n.status = Status::Pending;
                n.next_attempt_at_ms = now;
                Change::Put(n)
            });
            if let Err(StoreError::Undecodable { reason, .. }) = r {
                self.quarantine(id, &reason)?;
            } else {
                r?;
            }
        }
        Ok(in_flight.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::record::sample;

    /// A store in a fresh temporary directory.
    pub(crate) fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_batch_stores_new_records_and_recognises_repeats_within_it() {
        let (_d, s) = open();
        let a = sample("trace-aaaa");
        let mut conflict = sample("trace-aaaa");
        conflict.payload_hash = [9; 32];
        let out = submit_batch(&s.gen().trees, &[a.clone(), a.clone(), conflict]).unwrap();
        assert!(matches!(out[0], SubmitOutcome::Stored(_)));
        assert!(matches!(out[1], SubmitOutcome::Duplicate(_)));
        assert!(matches!(out[2], SubmitOutcome::Conflict(_)));
        let c = s.counts().unwrap();
        assert_eq!((c.accepted, c.pending), (1, 1));
        assert_eq!(
            s.due_until(i64::MAX, 10).unwrap(),
            vec![(a.next_attempt_at_ms, a.trace_id.clone())]
        );
    }

    #[test]
    fn updates_move_index_entries_and_counters_together() {
        let (_d, s) = open();
        submit_batch(&s.gen().trees, &[sample("trace-bbbb")]).unwrap();
        s.update("trace-bbbb", |r| {
            let mut n = r.clone();
            n.status = Status::Delivered;
            Change::Put(n)
        })
        .unwrap();
        assert!(s.due_until(i64::MAX, 10).unwrap().is_empty());
        assert_eq!(s.oldest_queued_ms().unwrap(), None);
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.delivered), (0, 1));
        assert!(c.balanced());
        assert_eq!(
            s.update("trace-bbbb", |_| Change::Purge).unwrap(),
            Updated::Purged
        );
        let c = s.counts().unwrap();
        assert_eq!((c.delivered, c.purged, c.accepted), (0, 1, 1));
        assert!(c.balanced());
    }

    #[test]
    fn oldest_queued_follows_arrival_through_claims_retries_and_deliveries() {
        let (_d, s) = open();
        let at = |id: &str, ms: i64| {
            let mut r = sample(id);
            r.received_at_ms = ms;
            r.next_attempt_at_ms = ms;
            r
        };
        let set = |id: &str, status: Status, next: i64| {
            s.update(id, |r| {
                let mut n = r.clone();
                n.status = status;
                n.next_attempt_at_ms = next;
                Change::Put(n)
            })
            .unwrap();
        };
        submit_batch(
            &s.gen().trees,
            &[
                at("trace-q001", 1_000),
                at("trace-q002", 2_000),
                at("trace-q003", 3_000),
            ],
        )
        .unwrap();
        // Fresh records are ordered by `due` alone: intake writes no `queue` entry.
        assert_eq!(s.gen().trees.queue.len(), 0);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(1_000));
        // Claimed under a lease far ahead: `due` no longer shows its arrival, `queue` does.
        set("trace-q001", Status::InFlight, 50_000);
        assert_eq!(s.gen().trees.queue.len(), 1);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(1_000));
        // A failed attempt: due again later, still the oldest.
        set("trace-q001", Status::Pending, 40_000);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(1_000));
        set("trace-q002", Status::InFlight, 60_000);
        assert_eq!(s.gen().trees.queue.len(), 2);
        set("trace-q001", Status::Delivered, 40_000);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(2_000));
        set("trace-q002", Status::Dead, 60_000);
        assert_eq!(s.gen().trees.queue.len(), 0);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(3_000));
        // A dead record replayed is due now, after its arrival: back in `queue`.
        set("trace-q002", Status::Pending, 70_000);
        assert_eq!(s.oldest_queued_ms().unwrap(), Some(2_000));
        s.update("trace-q003", |_| Change::Purge).unwrap();
        s.update("trace-q002", |_| Change::Purge).unwrap();
        assert_eq!(s.oldest_queued_ms().unwrap(), None);
        assert_eq!((s.gen().trees.queue.len(), s.gen().trees.due.len()), (0, 0));
    }

    #[test]
    fn update_many_changes_several_records_in_one_transaction_and_reports_bad_ones() {
        let (_d, s) = open();
        let ids = ["trace-m001", "trace-m002", "trace-m003"];
        submit_batch(&s.gen().trees, &ids.map(sample)).unwrap();
        s.gen()
            .trees
            .entries
            .insert("trace-m002", &[1, 0xff])
            .unwrap();
        let out = s
            .update_many(
                &["trace-m001", "trace-m002", "trace-m003", "trace-none"],
                |i, r| {
                    let mut n = r.clone();
                    n.status = if i == 0 {
                        Status::Delivered
                    } else {
                        Status::Dead
                    };
                    Change::Put(n)
                },
            )
            .unwrap();
        assert!(matches!(&out[0], Ok(Updated::Put(r)) if r.status == Status::Delivered));
        assert!(out[1].is_err());
        assert!(matches!(&out[2], Ok(Updated::Put(r)) if r.status == Status::Dead));
        assert_eq!(out[3], Ok(Updated::NotFound));
        let c = s.counts().unwrap();
        assert_eq!((c.delivered, c.dead, c.pending), (1, 1, 1));
    }

    #[test]
    fn an_undecodable_record_is_quarantined_not_deleted() {
        let (_d, s) = open();
        submit_batch(&s.gen().trees, &[sample("trace-cccc")]).unwrap();
        s.gen()
            .trees
            .entries
            .insert("trace-cccc", &[1, 0xff, 0xff])
            .unwrap();
        let err = s.update("trace-cccc", |_| Change::Keep).unwrap_err();
        assert!(matches!(err, StoreError::Undecodable { .. }));
        s.quarantine("trace-cccc", "test").unwrap();
        assert!(s
            .gen()
            .trees
            .quarantine
            .get("trace-cccc")
            .unwrap()
            .is_some());
        assert!(s.due_until(i64::MAX, 10).unwrap().is_empty());
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.quarantined), (0, 1));
        assert!(c.balanced());
    }

    #[test]
    fn in_flight_records_are_due_again_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        {
            let s = Store::open(&path).unwrap();
            submit_batch(&s.gen().trees, &[sample("trace-dddd")]).unwrap();
            s.update("trace-dddd", |r| {
                let mut n = r.clone();
                n.status = Status::InFlight;
                n.next_attempt_at_ms = i64::MAX / 2;
                Change::Put(n)
            })
            .unwrap();
            s.sync().unwrap();
        }
        let s = crate::store::when_released(|| Store::open(&path)).unwrap();
        assert_eq!(
            s.get("trace-dddd").unwrap().unwrap().status,
            Status::Pending
        );
        assert_eq!(s.due_until(now_ms(), 10).unwrap().len(), 1);
    }
}
