//! The consistency check behind `outbox verify`, run beside live writers.
//!
//! A check reads the whole store, which takes seconds at a million records; writers must not
//! wait that long (every post would). So it works as a live backup does (see
//! [`super::maintenance`]): the scan runs without the write gate while every writer notes the
//! trace IDs it touches. Then the records touched are checked again by point reads, still
//! beside writers, and the ones touched meanwhile again, for a few rounds while they get
//! fewer; the last round runs with writers held off, and the counters are compared then. A
//! record no writer touched since a round checked it is what that round saw; the findings
//! of earlier rounds for it are replaced. The status recount is corrected the same way: the
//! scan remembers, per record, the status it counted (a 128-bit hash of the trace ID to one
//! byte, so about 32 bytes a record while it runs), and each round takes off what was counted
//! for the records it checks and adds what they are now. Between rounds the list of touched
//! records is swapped for a fresh one under the exclusive gate, which only waits for the
//! transactions under way. So the hold grows with the writes made during the last round, not
//! with the store.

use super::counters::Counts;
use super::keys;
use super::maintenance::{expected_index_keys, Tracking};
use super::record::{self, Status};
use super::{Store, StoreError, Trees};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

/// What [`Store::check`] found: the entries it read, each problem in words, the trace IDs of
/// entries that do not decode (what a repair quarantines) and the keys of bodies no record
/// points to (which stay so: body keys are never handed out twice).
#[derive(Debug, Clone, Default)]
pub struct Check {
    pub records: u64,
    pub problems: Vec<String>,
    pub undecodable: Vec<String>,
    pub orphan_bodies: Vec<u64>,
}

/// The statuses a scan counts a record under, as one byte; [`UNDECODABLE`] for none.
const UNDECODABLE: u8 = u8::MAX;

fn status_code(s: Option<Status>) -> u8 {
    s.map_or(UNDECODABLE, keys::status_byte)
}

/// Trace IDs as 128-bit hashes (two independent keyed hashes): the scan keeps one per record.
struct IdHash(RandomState, RandomState);

impl IdHash {
    fn of(&self, id: &[u8]) -> u128 {
        (u128::from(self.0.hash_one(id)) << 64) | u128::from(self.1.hash_one(id))
    }
}

/// One record checked against its index entries.
struct RecordCheck {
    status: Option<Status>,
    problems: Vec<String>,
    /// The `due`, `queue` and `done` keys it must have.
    expected: [Vec<Vec<u8>>; 3],
    body: Option<u64>,
}

const INDEXES: [&str; 3] = ["due", "queue", "done"];

/// Records touched during a round, at most, for the next round to run with writers held off.
/// A round checks a few thousand records in some milliseconds.
const FEW: usize = 256;
/// Rounds beside writers, at most, before the last one (a steady stream of writes to the
/// same records would otherwise keep them going).
const ROUNDS: usize = 4;

fn index_trees(t: &Trees) -> [&sled::Tree; 3] {
    [&t.due, &t.queue, &t.done]
}

/// Checks the record stored under `key` (value `v`): it decodes, names its own trace ID,
/// has the index entries its state calls for, and its `due` entry the right status.
fn check_record(t: &Trees, key: &[u8], v: &[u8]) -> Result<RecordCheck, StoreError> {
    let shown = String::from_utf8_lossy(key);
    let mut out = RecordCheck {
        status: None,
        problems: vec![],
        expected: Default::default(),
        body: None,
    };
    let decoded = record::decode_entry(v).and_then(|e| {
        out.body = e.body_key();
        t.complete(e)
    });
    let r = match decoded {
        Ok(r) => r,
        Err(e) => {
            out.problems
                .push(format!("record {shown} does not decode: {e}"));
            return Ok(out);
        }
    };
    out.status = Some(r.status);
    if r.trace_id.as_bytes() != key {
        out.problems.push(format!(
            "record stored under {shown} says its trace ID is {}",
            r.trace_id
        ));
    }
    let (d, q, dn) = expected_index_keys(&r);
    out.expected = [d, q, dn];
    for ((tree, name), want) in index_trees(t).into_iter().zip(INDEXES).zip(&out.expected) {
        for k in want {
            if tree.get(k)?.is_none() {
                out.problems.push(format!(
                    "{} record {} has no {name} index entry",
                    r.status.as_str(),
                    r.trace_id
                ));
            }
        }
    }
    if r.status.is_queued() {
        let byte = t
            .due
            .get(keys::time_key(r.next_attempt_at_ms, &r.trace_id))?;
        if byte.is_some_and(|b| b.first() != Some(&keys::status_byte(r.status))) {
            out.problems
                .push(format!("due entry of {} has the wrong status", r.trace_id));
        }
    }
    Ok(out)
}

/// The trace ID an index key names, if it is well formed.
fn index_id(tree: usize, k: &[u8]) -> Option<&str> {
    let k = if INDEXES[tree] == "done" {
        k.get(1..)?
    } else {
        k
    };
    keys::split_time_key(k).map(|(_, id)| id)
}

fn stray(tree: usize, k: &[u8]) -> String {
    let name = INDEXES[tree];
    format!(
        "{name} index entry {} points at no matching record",
        super::read::show_index_key(name, k)
    )
}

/// What the scan without the gate found.
#[derive(Default)]
struct Scan {
    records: u64,
    /// Problems of one record, by its trace ID (dropped if it was written meanwhile).
    of_record: Vec<(String, String)>,
    /// Index keys no record of the scan called for: `(trace ID, tree, key)`.
    strays: Vec<(String, usize, Vec<u8>)>,
    /// Index keys that name no trace ID (no writer makes those).
    malformed: Vec<String>,
    undecodable: Vec<String>,
    recount: Counts,
    /// The status counted for each record, by [`IdHash`].
    counted: HashMap<u128, u8>,
    orphans: Vec<u64>,
    /// The latest check of each record touched since the scan read it (`None`: gone).
    rechecked: HashMap<String, Option<RecordCheck>>,
}

impl Scan {
    /// Checks `touched` again as they are now, in place of what was found for them before,
    /// the recount corrected.
    fn recheck(
        &mut self,
        t: &Trees,
        hash: &IdHash,
        touched: HashSet<String>,
    ) -> Result<(), StoreError> {
        for id in touched {
            let h = hash.of(id.as_bytes());
            if let Some(code) = self.counted.remove(&h) {
                self.recount.count(code, -1);
            }
            let now = match t.entries.get(&id)? {
                Some(v) => Some(check_record(t, id.as_bytes(), &v)?),
                None => None,
            };
            if let Some(c) = &now {
                self.recount.count(status_code(c.status), 1);
                self.counted.insert(h, status_code(c.status));
            }
            self.rechecked.insert(id, now);
        }
        Ok(())
    }
}

impl Counts {
    fn count(&mut self, code: u8, by: i64) {
        let Some(s) = keys::status_from_byte(code) else {
            return;
        };
        let c = match s {
            Status::Pending => &mut self.pending,
            Status::InFlight => &mut self.in_flight,
            Status::Delivered => &mut self.delivered,
            Status::Dead => &mut self.dead,
        };
        *c = c.saturating_add_signed(by);
    }
}

impl Store {
    /// Checks that the store agrees with itself: every entry decodes and is stored under its
    /// own trace ID; every record has exactly the index entries its state calls for, and
    /// every index entry points at such a record; no body is without a record; the counters
    /// match a recount and the accounting identity holds. Writers are held off only at the
    /// end, for the records written during the scan (see the module doc). `progress` gets
    /// entries read and the total.
    pub fn check(&self, progress: &dyn Fn(u64, Option<u64>)) -> Result<Check, StoreError> {
        // One tracked scan at a time (backups and compactions track writes too).
        let _one = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        let g = self.gen();
        let t = &g.trees;
        let (tracking, last_body) = {
            let _gate = t.exclusive_gate()?;
            (Tracking::start(t), self.last_body_key())
        };
        let hash = IdHash(RandomState::new(), RandomState::new());
        let mut scan = self.scan(t, &hash, last_body, progress)?;
        for _ in 0..ROUNDS {
            let touched = {
                let _gate = t.exclusive_gate()?;
                tracking.renew()
            };
            let few = touched.len() <= FEW;
            scan.recheck(t, &hash, touched)?;
            if few {
                break;
            }
        }
        let _gate = t.exclusive_gate()?;
        scan.recheck(t, &hash, tracking.take())?;
        finish(t, scan)
    }

    fn scan(
        &self,
        t: &Trees,
        hash: &IdHash,
        last_body: u64,
        progress: &dyn Fn(u64, Option<u64>),
    ) -> Result<Scan, StoreError> {
        let total = t.entries.len() as u64;
        let mut out = Scan::default();
        let mut seen: [HashSet<Vec<u8>>; 3] = Default::default();
        let mut bodies = HashSet::new();
        for item in t.entries.iter() {
            let (k, v) = item?;
            out.records += 1;
            if out.records % 1024 == 0 {
                progress(out.records, Some(total));
            }
            let id = String::from_utf8_lossy(&k).into_owned();
            let c = check_record(t, &k, &v)?;
            out.counted.insert(hash.of(&k), status_code(c.status));
            out.recount.count(status_code(c.status), 1);
            if c.status.is_none() {
                out.undecodable.push(id.clone());
            }
            bodies.extend(c.body);
            for (set, keys) in seen.iter_mut().zip(c.expected) {
                set.extend(keys);
            }
            out.of_record
                .extend(c.problems.into_iter().map(|p| (id.clone(), p)));
        }
        progress(out.records, Some(total));
        for (i, tree) in index_trees(t).into_iter().enumerate() {
            for item in tree.iter() {
                let (k, _) = item?;
                if seen[i].contains(k.as_ref()) {
                    continue;
                }
                match index_id(i, &k) {
                    Some(id) => out.strays.push((id.to_owned(), i, k.to_vec())),
                    None => out.malformed.push(stray(i, &k)),
                }
            }
        }
        out.orphans = self
            .bodies_not_in(&bodies, last_body)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok(out)
    }
}

/// With writers held off, after the last round: the findings for the records touched since
/// the scan are those of their latest check, and the counters are compared (see the module
/// doc).
fn finish(t: &Trees, scan: Scan) -> Result<Check, StoreError> {
    let mut out = Check {
        records: scan.records,
        ..Check::default()
    };
    let now = &scan.rechecked;
    let untouched = |id: &String| !now.contains_key(id);
    out.problems = scan
        .of_record
        .into_iter()
        .filter(|(id, _)| untouched(id))
        .map(|(_, p)| p)
        .collect();
    out.undecodable = scan.undecodable.into_iter().filter(untouched).collect();
    for (id, c) in now {
        let Some(c) = c else { continue };
        if c.status.is_none() {
            out.undecodable.push(id.clone());
        }
        out.problems.extend(c.problems.iter().cloned());
    }
    for (id, tree, k) in scan.strays {
        // Gone meanwhile (the purge drops index entries of records already gone), or now
        // called for by its record as written during the scan: not a problem.
        let expected =
            |c: &Option<RecordCheck>| c.as_ref().is_some_and(|c| c.expected[tree].contains(&k));
        if !now.get(&id).is_some_and(expected) && index_trees(t)[tree].get(&k)?.is_some() {
            out.problems.push(stray(tree, &k));
        }
    }
    out.problems.extend(scan.malformed);
    for key in scan.orphans {
        let Some(bytes) = t.bodies.get(record::body_key(key))? else {
            continue;
        };
        let owner = record::decode_body(&bytes).ok().map(|b| b.trace_id);
        let points_here = |c: &Option<RecordCheck>| c.as_ref().is_some_and(|c| c.body == Some(key));
        if owner.is_some_and(|id| now.get(&id).is_some_and(points_here)) {
            continue;
        }
        out.problems
            .push(format!("body {key} belongs to no record"));
        out.orphan_bodies.push(key);
    }
    let mut recount = scan.recount;
    let stored = Counts::from_tree(&t.counters)?;
    recount.quarantined = t.quarantine.len() as u64;
    for name in ["pending", "in_flight", "delivered", "dead", "quarantined"] {
        if stored.get(name) != recount.get(name) {
            out.problems.push(format!(
                "counter {name} is {} but {} records are {name}",
                stored.get(name),
                recount.get(name)
            ));
        }
    }
    if !stored.balanced() {
        out.problems.push(format!(
            "accounting identity broken: accepted={} but the status counts sum differently ({})",
            stored.accepted,
            stored.describe()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::store::embedded::tx::{submit_batch, tests::open};
    use crate::store::record::{sample, Status};
    use crate::store::{keys, Change, Store};
    use std::cell::Cell;

    /// Changes a spread of records the way the worker and operators do.
    fn write_some(s: &Store, round: u64) {
        let put = |id: &str, status: Status| {
            s.update(id, |r| {
                let mut n = r.clone();
                n.status = status;
                n.delivered_at_ms = Some(r.received_at_ms + 1);
                n.payload = None;
                Change::Put(n)
            })
            .unwrap();
        };
        let at = |i: u64| format!("trace-{:05}", (i * 397 + round * 31) % 3000);
        put(&at(1), Status::Delivered);
        put(&at(2), Status::Dead);
        s.update(&at(3), |_| Change::Purge).unwrap();
        // More records touched than one round with writers held off takes.
        let late: Vec<_> = (0..super::FEW as u64 + 50)
            .map(|i| sample(&format!("trace-late-{round}-{i}")))
            .collect();
        submit_batch(&s.gen().trees, &late).unwrap();
    }

    #[test]
    fn writes_during_the_scan_are_judged_as_they_are_at_its_end() {
        let (_d, s) = open();
        let recs: Vec<_> = (0..3000)
            .map(|i| sample(&format!("trace-{i:05}")))
            .collect();
        for chunk in recs.chunks(500) {
            submit_batch(&s.gen().trees, chunk).unwrap();
        }
        // One real problem, on a record nobody writes during the check.
        let broken = s.get("trace-00007").unwrap().unwrap();
        let due = keys::time_key(broken.next_attempt_at_ms, &broken.trace_id);
        s.gen().trees.due.remove(due).unwrap();
        let round = Cell::new(0);
        let found = s
            .check(&|_, _| {
                round.set(round.get() + 1);
                write_some(&s, round.get());
            })
            .unwrap();
        assert!(round.get() >= 3, "progress came during the scan");
        assert_eq!(
            found.problems,
            ["pending record trace-00007 has no due index entry"]
        );
        s.gen()
            .trees
            .due
            .insert(
                keys::time_key(broken.next_attempt_at_ms, &broken.trace_id),
                &[keys::status_byte(Status::Pending)],
            )
            .unwrap();
        assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
        assert!(s.counts().unwrap().balanced());
    }
}
