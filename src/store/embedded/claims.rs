//! Delivery claims, held in memory by the one process that owns the data directory.
//!
//! sled lets one process open the directory, so the worker that claims a record is the only
//! one that could send it: a claim needs no write, and none is made. A claimed record stays
//! in the store exactly as it was (pending, in `due` under its due time); after a crash it is
//! simply due again, with the same trace ID and so the same `Idempotency-Key`, and the start
//! needs no pass over the index. The write comes at the settle, and only what changed.
//!
//! While a record is claimed, [`Store::update`] leaves it alone ([`super::Updated::Busy`]),
//! so an operator's edit, replay or purge can never change what is being sent. The claim set
//! is also what [`Store::counts`] reports as `in_flight`: the lock that guards it is held
//! across each settle's transaction, so the accounting identity holds at every read.
//!
//! Only durable records are claimed: [`Store::claim_due`] returns after the fdatasync that
//! covers every batch it could have read (see [`super::committer`]).

use super::record::Record;
use super::tx::{write_many_in, SettleJob};
use super::{Change, Claimed, Store, StoreError, Updated};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub(crate) struct Claims(Mutex<HashSet<String>>);

impl Claims {
    pub fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Claims up to `want` records due at or before `now_ms` that are not claimed already,
    /// earliest due first. Blocks until they are durable (at most one group commit). On an
    /// error nothing stays claimed.
    pub fn claim_due(&self, now_ms: i64, want: usize) -> Result<Claimed, StoreError> {
        let out = {
            let mut claims = self.claims.lock();
            let due = self.due_until(now_ms, want + claims.len())?;
            let g = self.gen();
            claim_from(&mut claims, due, now_ms, want, |id| {
                match g.trees.entries.get(id.as_bytes())? {
                    Some(v) => Ok(Some(g.trees.decode(&v).map_err(|e| e.to_string()))),
                    None => Ok(None),
                }
            })?
        };
        if let Err(e) = self.committer.durable.wait() {
            self.release(out.records.iter().map(|r| r.trace_id.as_str()));
            return Err(e);
        }
        Ok(out)
    }

    /// Gives claims back unsent: the records are due as they were, no attempt spent.
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut claims = self.claims.lock();
        for id in ids {
            claims.remove(id);
        }
    }

    /// Writes the outcomes of claimed records and releases their claims. While submissions
    /// are being committed, the outcomes go to the committer and ride the transaction of its
    /// next group commit (one sled transaction instead of two); otherwise they are written
    /// here, which spares a hand-off between threads. `decide` gets each record's index in
    /// `ids` and the stored record; the results are as for [`Store::update`], with
    /// `Err(reason)` for a record that does not decode.
    pub fn settle<F: Fn(usize, &Record) -> Change + Send + 'static>(
        &self,
        ids: &[&str],
        decide: F,
    ) -> Result<Vec<Result<Updated, String>>, StoreError> {
        let release = |claims: &mut HashSet<String>| {
            for id in ids {
                claims.remove(*id);
            }
        };
        if !self.committer.busy() {
            return self.on_current(|g| {
                self.claims_and_gate(g, |claims, gate| {
                    let out = write_many_in(g, gate, ids, &decide);
                    release(claims);
                    out
                })
            });
        }
        // The committer's transaction waits for the gate on its thread, with the claims held
        // here: a reader of the claims may wait for that (see `counts`), never for longer.
        let mut claims = self.claims.lock();
        let out = self.committer.settle(SettleJob {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            decide: Box::new(decide),
        });
        release(&mut claims);
        out
    }

    /// [`Store::update`], waiting up to `patience` for a delivery of the record to end (for
    /// changes that must not be skipped, like an erasure). Still [`Updated::Busy`] after it.
    pub fn update_when_settled<F: Fn(&Record) -> Change>(
        &self,
        trace_id: &str,
        decide: F,
        patience: std::time::Duration,
    ) -> Result<Updated, StoreError> {
        let until = std::time::Instant::now() + patience;
        loop {
            match self.update(trace_id, &decide)? {
                Updated::Busy(_) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                out => return Ok(out),
            }
        }
    }

    /// Whether the delivery worker is sending this record now.
    pub fn is_claimed(&self, trace_id: &str) -> bool {
        self.claims.lock().contains(trace_id)
    }

    /// The trace IDs claimed now.
    pub fn claimed(&self) -> HashSet<String> {
        self.claims.lock().clone()
    }
}

/// A stored record as read for a claim: `None` if gone, `Err(reason)` if it does not decode.
type Read = Option<Result<Record, String>>;

/// Claims, in `claims`, up to `want` of the `due` candidates that are not claimed already and
/// whose record (from `read`) is queued and due by `now_ms`. If `read` fails, the claims this
/// call made are taken back before the error is returned.
fn claim_from(
    claims: &mut HashSet<String>,
    due: Vec<(i64, String)>,
    now_ms: i64,
    want: usize,
    mut read: impl FnMut(&str) -> Result<Read, StoreError>,
) -> Result<Claimed, StoreError> {
    let mut out = Claimed::default();
    for (_, id) in due {
        if out.records.len() == want {
            break;
        }
        if claims.contains(&id) {
            continue;
        }
        match read(&id) {
            Ok(Some(Ok(r))) if r.status.is_queued() && r.next_attempt_at_ms <= now_ms => {
                claims.insert(id);
                out.records.push(r);
            }
            Ok(Some(Ok(_)) | None) => {}
            Ok(Some(Err(reason))) => out.undecodable.push((id, reason)),
            Err(e) => {
                for r in &out.records {
                    claims.remove(&r.trace_id);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::claim_from;
    use crate::store::embedded::tx::tests::open;
    use crate::store::record::{sample, Status};
    use crate::store::{Change, Store, StoreError, Updated};
    use std::collections::HashSet;

    /// An update waiting for the write gate (an ops command holds writers off) does not hold
    /// the claims meanwhile, so the counts (what health and metrics read) still answer.
    #[test]
    fn counts_answer_while_an_update_waits_for_an_exclusive_hold() {
        let (_d, s) = open();
        crate::store::embedded::tx::submit_batch(&s.gen().trees, &[sample("trace-c005")]).unwrap();
        let s = std::sync::Arc::new(s);
        let held = &std::sync::Barrier::new(2);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                s.exclusive(move || {
                    held.wait();
                    wait.recv().unwrap();
                })
            });
            held.wait();
            let writer = scope.spawn(|| s.update("trace-c005", |_| Change::Purge));
            // Let the update reach the gate (a late one only makes this pass trivially).
            std::thread::sleep(std::time::Duration::from_millis(200));
            let (answer, counts) = std::sync::mpsc::channel();
            let s = &s;
            scope.spawn(move || answer.send(s.counts().map(|c| c.pending)));
            let got = counts.recv_timeout(std::time::Duration::from_secs(10));
            release.send(()).unwrap();
            assert!(matches!(got, Ok(Ok(1))), "{got:?}");
            assert_eq!(writer.join().unwrap().unwrap(), Updated::Purged);
        });
    }

    #[test]
    fn a_read_error_after_some_claims_leaves_none_of_them_claimed() {
        let mut claims = HashSet::from(["held-before".to_string()]);
        let due = (0..4).map(|i| (0, format!("trace-e{i}"))).collect();
        let mut reads = 0;
        let r = claim_from(&mut claims, due, i64::MAX, 4, |id| {
            reads += 1;
            match reads {
                3 => Err(StoreError::Closed),
                _ => Ok(Some(Ok(sample(id)))),
            }
        });
        assert!(matches!(r, Err(StoreError::Closed)));
        assert_eq!(claims, HashSet::from(["held-before".to_string()]));
    }

    #[test]
    fn a_claim_writes_nothing_and_shows_as_in_flight() {
        let (_d, s) = open();
        crate::store::embedded::tx::submit_batch(
            &s.gen().trees,
            &[sample("trace-c001"), sample("trace-c002")],
        )
        .unwrap();
        let before = s.gen().trees.entries.get("trace-c001").unwrap();
        let got = s.claim_due(i64::MAX, 1).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].trace_id, "trace-c001");
        assert_eq!(s.gen().trees.entries.get("trace-c001").unwrap(), before);
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.in_flight), (1, 1));
        assert!(c.balanced());
        // Claimed records are not claimed twice.
        let next = s.claim_due(i64::MAX, 5).unwrap();
        assert_eq!(next.records.len(), 1);
        assert_eq!(next.records[0].trace_id, "trace-c002");
        assert!(s.claim_due(i64::MAX, 5).unwrap().records.is_empty());
        s.release(["trace-c002"]);
        assert_eq!(s.counts().unwrap().in_flight, 1);
    }

    #[test]
    fn an_operator_change_to_a_claimed_record_is_refused_until_it_settles() {
        let (_d, s) = open();
        crate::store::embedded::tx::submit_batch(&s.gen().trees, &[sample("trace-c003")]).unwrap();
        s.claim_due(i64::MAX, 1).unwrap();
        let dead = |r: &crate::store::Record| {
            let mut n = r.clone();
            n.status = Status::Dead;
            Change::Put(n)
        };
        assert!(matches!(
            s.update("trace-c003", dead).unwrap(),
            Updated::Busy(r) if r.status == Status::Pending
        ));
        let out = s
            .settle(&["trace-c003"], |_, r| {
                let mut n = r.clone();
                n.status = Status::Delivered;
                n.payload = None;
                Change::Put(n)
            })
            .unwrap();
        assert!(matches!(&out[0], Ok(Updated::Put(r)) if r.status == Status::Delivered));
        assert!(!s.is_claimed("trace-c003"));
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.in_flight, c.delivered), (0, 0, 1));
        assert!(matches!(
            s.update("trace-c003", |_| Change::Purge).unwrap(),
            Updated::Purged
        ));
    }

    #[test]
    fn claimed_records_are_due_again_after_reopen_without_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        {
            let s = Store::open(&path).unwrap();
            crate::store::embedded::tx::submit_batch(&s.gen().trees, &[sample("trace-c004")])
                .unwrap();
            assert_eq!(s.claim_due(i64::MAX, 1).unwrap().records.len(), 1);
            s.sync().unwrap();
        }
        let s = crate::store::when_released(|| Store::open(&path)).unwrap();
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.in_flight), (1, 0));
        assert_eq!(s.claim_due(i64::MAX, 1).unwrap().records.len(), 1);
    }
}
