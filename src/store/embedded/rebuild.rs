//! Rebuilding the index trees and the status counters from `entries` (`verify --repair`),
//! so that a crash in the middle loses nothing.
//!
//! The rebuild clears `due`, `queue` and `done` and writes them again from the records. That
//! cannot be one transaction (a transaction cannot scan), so a crash in between would leave
//! records that no index points to: never delivered, and a plain open would not notice. So
//! the rebuild is marked in `meta` (key `rebuilding`): the mark is made durable (flush and
//! fdatasync) before the first index entry is removed, and removed only once the rebuilt
//! trees and counters are durable. A store opened with the mark still there rebuilds again
//! before anything reads its indexes ([`Store::finish_interrupted_rebuild`]). sled recovers
//! its log in order and stops at the first incomplete write, so whatever state a crash
//! leaves, either the mark is there or the rebuild that removed it is complete.
//!
//! Writers are held off (the exclusive gate) for the whole rebuild: records written while
//! the trees are half rebuilt would otherwise be indexed twice or not at all.

use super::counters::Counts;
use super::maintenance::index_into;
use super::record;
use super::{Gen, Store, StoreError, Trees};

/// The `meta` key present while a rebuild runs.
const MARK: &[u8] = b"rebuilding";

impl Store {
    /// Rebuilds `due`, `queue`, `done` and the status counters from `entries`, writers held
    /// off, crash-safe (see the module doc). Undecodable entries must have been quarantined
    /// first; any left are skipped and returned. Counters that record history (accepted,
    /// purged) are kept, except that the accounting identity is restored: a surplus of
    /// `accepted` counts as purged, a deficit raises `accepted`.
    pub fn rebuild_indexes(&self) -> Result<(Counts, Vec<String>), StoreError> {
        // Not beside a check or a copy, which track writes and do not expect a rebuild.
        let _one = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        self.on_current(|g| {
            let _gate = g.trees.exclusive_gate()?;
            rebuild_marked(g)
        })
    }

    /// At open, before the store is used: redoes a rebuild that a crash interrupted.
    pub(super) fn finish_interrupted_rebuild(&self) -> Result<(), StoreError> {
        let g = self.gen();
        if g.syncer.db.open_tree("meta")?.get(MARK)?.is_none() {
            return Ok(());
        }
        tracing::warn!("an index rebuild (verify --repair) was interrupted; rebuilding the indexes and counters again");
        let _gate = g.trees.exclusive_gate()?;
        let (counts, skipped) = rebuild_marked(&g)?;
        tracing::warn!(counts = %counts.describe(), undecodable = skipped.len(), "indexes and counters rebuilt");
        Ok(())
    }
}

/// The rebuild between its mark and the mark's removal, each made durable.
fn rebuild_marked(g: &Gen) -> Result<(Counts, Vec<String>), StoreError> {
    let meta = g.syncer.db.open_tree("meta")?;
    meta.insert(MARK, &[1])?;
    g.syncer.sync()?;
    let rebuilt = rebuild_indexes_in(&g.trees)?;
    g.syncer.sync()?;
    meta.remove(MARK)?;
    g.syncer.sync()?;
    Ok(rebuilt)
}

/// Clears and rewrites the indexes and status counters of one database from its records.
/// Not atomic: run it only inside [`rebuild_marked`], writers held off.
fn rebuild_indexes_in(t: &Trees) -> Result<(Counts, Vec<String>), StoreError> {
    t.due.clear()?;
    t.queue.clear()?;
    t.done.clear()?;
    let mut recount = Counts::default();
    let mut skipped = Vec::new();
    for item in t.entries.iter() {
        let (k, v) = item?;
        let Ok(e) = record::decode_entry(&v) else {
            skipped.push(String::from_utf8_lossy(&k).into_owned());
            continue;
        };
        index_into(&t.due, &t.queue, &t.done, &e)?;
        match e.state().status.as_str() {
            "pending" => recount.pending += 1,
            "in_flight" => recount.in_flight += 1,
            "delivered" => recount.delivered += 1,
            _ => recount.dead += 1,
        }
    }
    let old = Counts::from_tree(&t.counters)?;
    recount.quarantined = t.quarantine.len() as u64;
    recount.accepted = old.accepted;
    recount.purged = old.purged;
    let sum = recount.pending
        + recount.in_flight
        + recount.delivered
        + recount.dead
        + recount.quarantined
        + recount.purged;
    if recount.accepted >= sum {
        recount.purged += recount.accepted - sum;
    } else {
        recount.accepted = sum;
    }
    for name in Counts::NAMES {
        t.counters.insert(name, &recount.get(name).to_be_bytes())?;
    }
    Ok((recount, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::tx::submit_batch;
    use crate::store::record::sample;

    #[test]
    fn a_rebuild_cut_off_after_clearing_the_indexes_is_redone_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        {
            let s = Store::open(&path).unwrap();
            let recs: Vec<_> = (0..50).map(|i| sample(&format!("trace-r{i:03}"))).collect();
            submit_batch(&s.gen().trees, &recs).unwrap();
            // What a crash leaves between the clear and the rewrite: the mark, no index.
            let g = s.gen();
            g.syncer
                .db
                .open_tree("meta")
                .unwrap()
                .insert(MARK, &[1])
                .unwrap();
            g.trees.due.clear().unwrap();
            s.sync().unwrap();
        }
        let s = crate::store::when_released(|| Store::open(&path)).unwrap();
        assert_eq!(s.due_until(i64::MAX, 100).unwrap().len(), 50);
        assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
        let meta = s.gen().syncer.db.open_tree("meta").unwrap();
        assert!(meta.get(MARK).unwrap().is_none(), "the mark is gone");
    }
}
