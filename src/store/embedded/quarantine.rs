//! Quarantine: an entry that does not decode leaves `entries` for the `quarantine` tree with
//! the reason, its index entries and body with it, in one transaction that keeps the
//! accounting identity: the status counter it leaves is decremented as `quarantined` goes up.

use super::counters::{self, Deltas};
use super::keys;
use super::read::QuarantineEntry;
use super::record::{self, Status};
use super::tx::flatten;
use super::{on_current, Current, Store, StoreError, Trees};
use crate::time::now_ms;
use sled::Transactional;

/// The status a record leaving for quarantine is counted under: its state's where that
/// decodes; else the one its `due` entry records (queued records only); else delivered if
/// it has a `done` entry; else dead, the one status that owns no index entry.
fn previous_status(
    decoded: Option<Status>,
    due_hits: &[(Vec<u8>, Vec<u8>)],
    in_done: bool,
) -> Status {
    let from_due = || {
        due_hits
            .iter()
            .find_map(|(_, v)| v.first().and_then(|b| keys::status_from_byte(*b)))
    };
    decoded.or_else(from_due).unwrap_or(match in_done {
        true => Status::Delivered,
        false => Status::Dead,
    })
}

/// [`Store::quarantine`] on the database `current` holds.
pub(super) fn quarantine_on(
    current: &Current,
    trace_id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    on_current(current, |g| {
        Store::quarantine_in(&g.trees, trace_id, reason)
    })?;
    tracing::error!(trace_id, reason, "record quarantined: it does not decode");
    Ok(())
}

impl Store {
    /// Moves an undecodable entry to the `quarantine` tree with the reason, keeping the
    /// accounting: the status it leaves is the one its state says where the state decodes
    /// (only its body does not), else the one its index entries say (see [`previous_status`]).
    pub fn quarantine(&self, trace_id: &str, reason: &str) -> Result<(), StoreError> {
        quarantine_on(&self.current, trace_id, reason)
    }

    pub(super) fn quarantine_in(
        trees: &Trees,
        trace_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let find = |tree: &sled::Tree, skip: usize| -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            let mut hits = Vec::new();
            for item in tree.iter() {
                let (k, v) = item?;
                let id = k.get(skip..).and_then(keys::split_time_key);
                if id.is_some_and(|(_, id)| id == trace_id) {
                    hits.push((k.to_vec(), v.to_vec()));
                }
            }
            Ok(hits)
        };
        // Rare path: a scan of the index trees finds the stale index entries (`done` keys
        // start with their family byte).
        let due_hits = find(&trees.due, 0)?;
        let queue_hits = find(&trees.queue, 0)?;
        let done_hits = find(&trees.done, 1)?;
        // A state that does not decode cannot say where its body is; the body names its
        // record, so a scan finds it.
        let mut lost_body = None;
        if let Some(v) = trees.entries.get(trace_id)? {
            if record::decode_entry(&v).is_err() {
                for item in trees.bodies.iter() {
                    let (k, b) = item?;
                    if record::decode_body(&b).is_ok_and(|b| b.trace_id == trace_id) {
                        lost_body = Some(k);
                        break;
                    }
                }
            }
        }
        let t = (
            &trees.entries,
            &trees.due,
            &trees.queue,
            &trees.counters,
            &trees.quarantine,
            &trees.bodies,
            &trees.done,
        );
        let _gate = trees.write_gate()?;
        trees.mark_dirty([trace_id]);
        flatten(t.transaction(
            |(entries, due, queue, counters, quarantine, bodies, done)| {
                let Some(raw) = entries.remove(trace_id.as_bytes())? else {
                    return Ok(());
                };
                // A state that decodes but whose body does not: the body goes along.
                let decoded = record::decode_entry(&raw).ok();
                let body = match &decoded {
                    Some(e) => match e.body_key() {
                        Some(k) => bodies.remove(&record::body_key(k))?,
                        None => None,
                    },
                    None => match &lost_body {
                        Some(k) => bodies.remove(k)?,
                        None => None,
                    },
                };
                for (k, _) in &due_hits {
                    due.remove(k.as_slice())?;
                }
                for (k, _) in &queue_hits {
                    queue.remove(k.as_slice())?;
                }
                for (k, _) in &done_hits {
                    done.remove(k.as_slice())?;
                }
                let status = previous_status(
                    decoded.as_ref().map(|e| e.state().status),
                    &due_hits,
                    !done_hits.is_empty(),
                );
                let mut deltas = Deltas::default();
                deltas.status(status, -1);
                deltas.add(counters::QUARANTINED, 1);
                let mut entry = QuarantineEntry::new(reason, now_ms(), Some(status), &raw);
                entry.original_body_hex = body.as_deref().map(hex::encode);
                quarantine.insert(trace_id.as_bytes(), entry.encode())?;
                deltas.apply(counters)?;
                Ok(())
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::tx::{submit_batch, tests::open};
    use crate::store::record::sample;
    use crate::store::Change;

    /// A store holding one record, `trace-st`, in `status`.
    fn one_in(status: Status) -> (tempfile::TempDir, Store) {
        let (d, s) = open();
        submit_batch(&s.gen().trees, &[sample("trace-st")]).unwrap();
        s.update("trace-st", |r| {
            let mut n = r.clone();
            n.status = status;
            n.delivered_at_ms = Some(r.received_at_ms + 5);
            Change::Put(n)
        })
        .unwrap();
        (d, s)
    }

    /// Quarantines `trace-st` and checks the accounting: it left `status` for `quarantined`,
    /// and no index entry of it is left behind.
    fn quarantined_from(s: &Store, status: Status) {
        s.quarantine("trace-st", "test").unwrap();
        let c = s.counts().unwrap();
        assert_eq!((c.get(status.as_str()), c.quarantined), (0, 1), "{c:?}");
        assert!(c.balanced(), "{c:?}");
        let t = &s.gen().trees;
        assert_eq!((t.due.len(), t.queue.len(), t.done.len()), (0, 0, 0));
        let q = QuarantineEntry::decode(&t.quarantine.get("trace-st").unwrap().unwrap());
        assert_eq!(q.previous_status.as_deref(), Some(status.as_str()));
    }

    #[test]
    fn a_record_whose_state_does_not_decode_leaves_the_status_its_indexes_show() {
        for status in [Status::Pending, Status::Delivered, Status::Dead] {
            let (_d, s) = one_in(status);
            s.gen()
                .trees
                .entries
                .insert("trace-st", &[1, 0xff, 0xff])
                .unwrap();
            quarantined_from(&s, status);
        }
    }

    #[test]
    fn a_record_whose_body_does_not_decode_leaves_the_status_its_state_says() {
        for status in [Status::Pending, Status::Delivered, Status::Dead] {
            let (_d, s) = one_in(status);
            let t = s.gen().trees.clone();
            // A delivered record drops its payload, so it keeps no body: give it a bad one.
            let bad = [9u8, 9, 9];
            match t.bodies.iter().keys().next() {
                Some(k) => t.bodies.insert(k.unwrap(), &bad).unwrap(),
                None => {
                    let mut r = s.get("trace-st").unwrap().unwrap();
                    r.payload = Some(sample("x").payload.unwrap());
                    t.bodies.insert(record::body_key(77), &bad).unwrap();
                    t.entries
                        .insert("trace-st", record::encode_state(&r, Some(77)))
                        .unwrap()
                }
            };
            assert!(record::decode_entry(&t.entries.get("trace-st").unwrap().unwrap()).is_ok());
            assert!(s.get("trace-st").is_err(), "the body does not decode");
            quarantined_from(&s, status);
        }
    }
}
