//! `outbox verify`: checks that the store agrees with itself, and `--repair` makes it so.
//!
//! `entries` is the source of truth. Checked: every entry decodes and is stored under its own
//! trace ID; every queued record has its `due` and `queue` entries and every delivered one
//! its `done` entries, and every index entry points at a record in that state (both ways);
//! the status counters match a recount, `quarantined` matches the quarantine tree, and the
//! accounting identity holds. On a running server the scan runs beside live writes, so a
//! scan that finds problems is repeated with writers held off and only what persists counts.
//!
//! Repair moves undecodable entries to quarantine, then rebuilds the indexes and counters
//! from `entries` (see [`Store::rebuild_indexes`]).

use crate::ops::handler::Progress;
use crate::store::keys;
use crate::store::maintenance::expected_index_keys;
use crate::store::record;
use crate::store::{Counts, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub records: u64,
    pub problems: Vec<String>,
    /// Set by `--repair`: what it did.
    pub repaired: Vec<String>,
    /// Problems left after a repair (empty when it worked).
    pub remaining: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong now (no problems, or all repaired).
    pub fn ok(&self) -> bool {
        if self.repaired.is_empty() {
            self.problems.is_empty()
        } else {
            self.remaining.is_empty()
        }
    }
}

/// Checks the store and, with `repair`, fixes it. Never panics on bad data.
pub fn verify(store: &Store, repair: bool) -> VerifyReport {
    verify_with(store, repair, &|_, _| {})
}

pub fn verify_with(store: &Store, repair: bool, progress: Progress) -> VerifyReport {
    let mut report = VerifyReport::default();
    let (records, mut problems, undecodable) = match check(store, progress) {
        Ok(first) if first.1.is_empty() => first,
        Ok(_) => store
            .exclusive(|| check(store, progress))
            .unwrap_or_else(|e| (0, vec![format!("reading the store failed: {e}")], vec![])),
        Err(e) => (0, vec![format!("reading the store failed: {e}")], vec![]),
    };
    report.records = records;
    report.problems.append(&mut problems);
    if !repair || report.problems.is_empty() {
        return report;
    }
    for id in &undecodable {
        match store.quarantine(id, "does not decode (found by verify --repair)") {
            Ok(()) => report.repaired.push(format!("moved {id} to quarantine")),
            Err(e) => report
                .remaining
                .push(format!("could not quarantine {id}: {e}")),
        }
    }
    match store.rebuild_indexes() {
        Ok((counts, _)) => report.repaired.push(format!(
            "rebuilt the due, queue and done indexes and the counters: {}",
            describe(&counts)
        )),
        Err(e) => report.remaining.push(format!("rebuild failed: {e}")),
    }
    match check(store, &|_, _| {}) {
        Ok((_, left, _)) => report.remaining.extend(left),
        Err(e) => report.remaining.push(format!("re-check failed: {e}")),
    }
    report
}

fn describe(c: &Counts) -> String {
    Counts::NAMES
        .iter()
        .map(|n| format!("{n}={}", c.get(n)))
        .collect::<Vec<_>>()
        .join(" ")
}

type Checked = (u64, Vec<String>, Vec<String>);

fn check(store: &Store, progress: Progress) -> Result<Checked, sled::Error> {
    let t = &store.trees;
    let total = t.entries.len() as u64;
    let mut problems = Vec::new();
    let mut undecodable = Vec::new();
    let mut recount = Counts::default();
    let (mut due, mut queue, mut done) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut n = 0u64;
    for item in t.entries.iter() {
        let (k, v) = item?;
        n += 1;
        if n % 1024 == 0 {
            progress(n, Some(total));
        }
        let key = String::from_utf8_lossy(&k).into_owned();
        let r = match record::decode(&v) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("record {key} does not decode: {e}"));
                undecodable.push(key);
                continue;
            }
        };
        if r.trace_id.as_bytes() != &*k {
            problems.push(format!(
                "record stored under {key} says its trace ID is {}",
                r.trace_id
            ));
        }
        match r.status.as_str() {
            "pending" => recount.pending += 1,
            "in_flight" => recount.in_flight += 1,
            "delivered" => recount.delivered += 1,
            _ => recount.dead += 1,
        }
        let (d, q, dn) = expected_index_keys(&r);
        for (tree, name, want, seen) in [
            (&t.due, "due", d, &mut due),
            (&t.queue, "queue", q, &mut queue),
            (&t.done, "done", dn, &mut done),
        ] {
            for key in want {
                match tree.get(&key)? {
                    Some(_) => {}
                    None => problems.push(format!(
                        "{} record {} has no {name} index entry",
                        r.status.as_str(),
                        r.trace_id
                    )),
                }
                seen.insert(key);
            }
        }
        if r.status.is_queued() {
            let byte = t
                .due
                .get(keys::time_key(r.next_attempt_at_ms, &r.trace_id))?;
            if byte.is_some_and(|b| b.first() != Some(&keys::status_byte(r.status))) {
                problems.push(format!("due entry of {} has the wrong status", r.trace_id));
            }
        }
    }
    progress(n, Some(total));
    for (tree, name, seen) in [
        (&t.due, "due", &due),
        (&t.queue, "queue", &queue),
        (&t.done, "done", &done),
    ] {
        for item in tree.iter() {
            let (k, _) = item?;
            if !seen.contains(k.as_ref()) {
                let shown = show_index_key(name, &k);
                problems.push(format!(
                    "{name} index entry {shown} points at no matching record"
                ));
            }
        }
    }
    let stored = Counts::from_tree(&t.counters)?;
    recount.quarantined = t.quarantine.len() as u64;
    for name in ["pending", "in_flight", "delivered", "dead", "quarantined"] {
        if stored.get(name) != recount.get(name) {
            problems.push(format!(
                "counter {name} is {} but {} records are {name}",
                stored.get(name),
                recount.get(name)
            ));
        }
    }
    if !stored.balanced() {
        problems.push(format!(
            "accounting identity broken: accepted={} but the status counts sum differently ({})",
            stored.accepted,
            describe(&stored)
        ));
    }
    Ok((n, problems, undecodable))
}

fn show_index_key(tree: &str, k: &[u8]) -> String {
    let k = if tree == "done" && !k.is_empty() {
        &k[1..]
    } else {
        k
    };
    match keys::split_time_key(k) {
        Some((t, id)) => format!("({}, {id})", crate::time::rfc3339(t)),
        None => format!("0x{}", hex::encode(k)),
    }
}
