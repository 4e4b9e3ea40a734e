//! Writing an outbox moved from another store (`outbox move-store --to embedded`) into a new
//! data directory.
//!
//! Records are written as they are, whatever their status (pending with its retry state,
//! dead, delivered tombstones), each with its index entries and status counter in the same
//! transaction as a new submission's, so the new directory is what this store would have
//! written itself. Quarantined entries go to the `quarantine` tree as they were. The counters
//! of what left the records before the move (`quarantined`, `purged`) are then set to the
//! source's figures, and `accepted` to the sum, so the accounting identity holds with the
//! source's numbers.

use super::counters::{self, Counts};
use super::record::Record;
use super::tx::commit_batch;
use super::{Quarantined, Store, StoreError, SubmitOutcome};

impl Store {
    /// Writes records moved from another store. A trace ID already stored is an error: a
    /// move writes only into a new directory.
    pub fn put_moved(&self, records: &[Record]) -> Result<(), StoreError> {
        let (outcomes, _) = self.on_current(|g| commit_batch(&g.trees, records, &[]))?;
        for (r, o) in records.iter().zip(outcomes) {
            if !matches!(o, Ok(SubmitOutcome::Stored(_))) {
                return Err(StoreError::Commit(format!(
                    "record {} is stored twice in the source",
                    r.trace_id
                )));
            }
        }
        Ok(())
    }

    /// Writes quarantined entries moved from another store (the counter is set by
    /// [`Store::set_moved_counters`]).
    pub fn put_moved_quarantined(&self, items: &[Quarantined]) -> Result<(), StoreError> {
        self.on_current(|g| {
            let _gate = g.trees.write_gate()?;
            let mut batch = sled::Batch::default();
            for q in items {
                batch.insert(q.trace_id.as_bytes(), q.entry.encode());
            }
            Ok(g.trees.quarantine.apply_batch(batch)?)
        })
    }

    /// Sets `quarantined` and `purged` to the source's figures and `accepted` to the sum of
    /// every counter, and makes everything written durable. Returns the counts.
    pub fn set_moved_counters(&self, quarantined: u64, purged: u64) -> Result<Counts, StoreError> {
        let counts = self.on_current(|g| {
            let t = &g.trees;
            let _gate = t.exclusive_gate()?;
            let mut c = Counts::from_tree(&t.counters)?;
            c.quarantined = quarantined;
            c.purged = purged;
            c.accepted = c.pending + c.in_flight + c.delivered + c.dead + quarantined + purged;
            for (name, value) in [
                (counters::QUARANTINED, quarantined),
                (counters::PURGED, purged),
                (counters::ACCEPTED, c.accepted),
            ] {
                t.counters.insert(name, &value.to_be_bytes())?;
            }
            Ok(c)
        })?;
        self.sync()?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{sample, Status};
    use crate::store::QuarantineEntry;

    #[test]
    fn moved_records_keep_their_status_and_the_accounting_holds_with_the_sources_figures() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        let mut dead = sample("trace-moved-dead");
        dead.status = Status::Dead;
        dead.attempts = 3;
        let mut tomb = sample("trace-moved-tomb");
        tomb.status = Status::Delivered;
        tomb.payload = None;
        tomb.delivered_at_ms = Some(1_700_000_000_500);
        let mut retrying = sample("trace-moved-retry");
        retrying.attempts = 2;
        retrying.next_attempt_at_ms += 60_000;
        retrying.last_error = Some("dashboard answered 503".into());
        let records = [dead, tomb, retrying];
        s.put_moved(&records).unwrap();
        let q = Quarantined {
            trace_id: "trace-moved-q".into(),
            entry: QuarantineEntry::new("bad", 5, Some(Status::Pending), &[1, 0xff]),
        };
        s.put_moved_quarantined(std::slice::from_ref(&q)).unwrap();
        let c = s.set_moved_counters(1, 7).unwrap();
        let want = Counts {
            accepted: 11,
            pending: 1,
            in_flight: 0,
            delivered: 1,
            dead: 1,
            quarantined: 1,
            purged: 7,
        };
        assert_eq!(c, want);
        assert_eq!(s.counts().unwrap(), c);
        for r in &records {
            let mut want = r.clone();
            if r.status == Status::Delivered {
                want.enrichment.client_ip = String::new();
                want.enrichment.user_agent = None;
            }
            assert_eq!(s.get(&r.trace_id).unwrap().unwrap(), want);
        }
        let back: Vec<_> = s.quarantined().map(Result::unwrap).collect();
        assert_eq!(
            (back[0].trace_id.as_str(), &back[0].entry),
            ("trace-moved-q", &q.entry)
        );
        assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
        assert!(
            s.put_moved(&records[..1]).is_err(),
            "a trace ID already there is refused"
        );
    }
}
