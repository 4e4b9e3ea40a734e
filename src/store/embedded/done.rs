//! The `done` index: delivered records ordered by delivery time, so the periodic purge finds
//! what has expired without reading every entry.
//!
//! Two key families share the tree, each `family byte ++ delivered_at_ms (u64 BE) ++ trace ID`:
//! - [`TOMBSTONE`] (`t`): every delivered record. Those older than the idempotency window
//!   are purged.
//! - [`HOLDS_PAYLOAD`] (`p`): delivered records that still carry their payload. Those older
//!   than the payload retention lose it. With the default retention of zero the payload is
//!   dropped at delivery, so this family stays empty and costs nothing.
//!
//! Keys are written and removed in the same transaction as the record (see `tx::write`),
//! so a replayed or purged record leaves no stale entry behind.

use super::keys;
use super::record::{Record, Status};
use super::{Change, Store, StoreError, Updated};

pub const TOMBSTONE: u8 = b't';
pub const HOLDS_PAYLOAD: u8 = b'p';

fn key(family: u8, ms: i64, trace_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + trace_id.len());
    k.push(family);
    k.extend(keys::time_key(ms, trace_id));
    k
}

/// The `done` keys a record in this state owns (none unless delivered); `holds_payload`:
/// whether it still keeps its payload (a stored state leaves that to its body).
pub(super) fn done_keys(r: &Record, holds_payload: bool) -> Vec<Vec<u8>> {
    if r.status != Status::Delivered {
        return Vec::new();
    }
    let at = r.delivered_at_ms.unwrap_or(r.received_at_ms);
    let mut out = vec![key(TOMBSTONE, at, &r.trace_id)];
    if holds_payload {
        out.push(key(HOLDS_PAYLOAD, at, &r.trace_id));
    }
    out
}

impl Store {
    /// Up to `limit` delivered records of `family` delivered before `before_ms`, oldest first,
    /// as `(delivered_at_ms, trace_id)`.
    pub fn delivered_before(
        &self,
        family: u8,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let start = key(family, 0, "");
        let end = key(family, before_ms, "");
        let mut out = Vec::new();
        for item in self.gen().trees.done.range(start..end).take(limit) {
            let (k, _) = item?;
            if let Some((t, id)) = keys::split_time_key(&k[1..]) {
                out.push((t, id.to_owned()));
            }
        }
        Ok(out)
    }

    /// Removes up to `limit` records delivered before `before_ms`, oldest first, in one
    /// transaction (a purge of a drained backlog is many small removals); they count as
    /// purged. A `done` entry pointing at nothing goes; a record that does not decode is
    /// quarantined and its entry goes. Returns how many were purged and how many entries
    /// were read (`limit` read: more may be waiting).
    pub fn purge_expired(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, usize), StoreError> {
        let expired = self.delivered_before(TOMBSTONE, before_ms, limit)?;
        let ids: Vec<&str> = expired.iter().map(|(_, id)| id.as_str()).collect();
        let results = self.update_many(&ids, |_, r| match r.status {
            Status::Delivered => Change::Purge,
            _ => Change::Keep,
        })?;
        let mut purged = 0;
        for ((at, id), r) in expired.iter().zip(results) {
            match r {
                Ok(Updated::Purged) => purged += 1,
                Ok(Updated::NotFound) => self.forget_delivered(TOMBSTONE, *at, id)?,
                Ok(_) => {}
                Err(reason) => {
                    self.quarantine(id, &reason)?;
                    self.forget_delivered(TOMBSTONE, *at, id)?;
                }
            }
        }
        Ok((purged, expired.len()))
    }

    /// Removes a `done` entry whose record is gone (for instance quarantined): the purge
    /// calls this when an index entry points at nothing.
    pub fn forget_delivered(
        &self,
        family: u8,
        delivered_at_ms: i64,
        trace_id: &str,
    ) -> Result<(), StoreError> {
        self.on_current(|g| {
            let _gate = g.trees.write_gate()?;
            g.trees
                .done
                .remove(key(family, delivered_at_ms, trace_id))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;
    use crate::store::Change;
    use crate::store::Updated;

    #[test]
    fn delivery_time_orders_tombstones_and_they_follow_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        for (id, at) in [("trace-late", 3_000), ("trace-early", 1_000)] {
            let mut r = sample(id);
            r.status = Status::Delivered;
            r.delivered_at_ms = Some(at);
            r.payload = (id == "trace-late").then(|| "{}".into());
            crate::store::embedded::tx::submit_batch(&s.gen().trees, &[r]).unwrap();
        }
        assert_eq!(
            s.delivered_before(TOMBSTONE, 5_000, 10).unwrap(),
            vec![(1_000, "trace-early".into()), (3_000, "trace-late".into())]
        );
        assert_eq!(
            s.delivered_before(TOMBSTONE, 2_000, 10).unwrap(),
            vec![(1_000, "trace-early".into())]
        );
        assert_eq!(
            s.delivered_before(HOLDS_PAYLOAD, 5_000, 10).unwrap(),
            vec![(3_000, "trace-late".into())]
        );
        // Dropping the payload leaves only the tombstone; purging leaves nothing.
        s.update("trace-late", |r| {
            let mut n = r.clone();
            n.payload = None;
            Change::Put(n)
        })
        .unwrap();
        assert!(s
            .delivered_before(HOLDS_PAYLOAD, 5_000, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            s.update("trace-late", |_| Change::Purge).unwrap(),
            Updated::Purged
        );
        assert_eq!(s.delivered_before(TOMBSTONE, 5_000, 10).unwrap().len(), 1);
        // A record sent back to the queue leaves the index.
        s.update("trace-early", |r| {
            let mut n = r.clone();
            n.status = Status::Pending;
            Change::Put(n)
        })
        .unwrap();
        assert!(s.delivered_before(TOMBSTONE, 5_000, 10).unwrap().is_empty());
        assert!(s.counts().unwrap().balanced());
    }
}
