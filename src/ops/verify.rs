//! `outbox verify`: checks that the store agrees with itself, and `--repair` makes it so.
//!
//! `entries` is the source of truth. Checked: every entry decodes and is stored under its own
//! trace ID; every queued record has its `due` and `queue` entries and every delivered one
//! its `done` entries, and every index entry points at a record in that state (both ways);
//! the status counters match a recount, `quarantined` matches the quarantine tree, and the
//! accounting identity holds. On a running server the scan runs beside live writes, so a
//! scan that finds problems is repeated with writers held off and only what persists counts.
//!
//! The check itself is the store's ([`Store::check`]). Repair moves undecodable entries to
//! quarantine, then rebuilds the indexes and counters from `entries` (see
//! [`Store::rebuild_indexes`]).

use crate::ops::handler::Progress;
use crate::store::read::Check;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

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
    let failed = |e: StoreError| Check {
        problems: vec![format!("reading the store failed: {e}")],
        ..Check::default()
    };
    let found = match store.check(progress) {
        Ok(first) if first.problems.is_empty() => first,
        Ok(_) => store
            .exclusive(|| store.check(progress))
            .unwrap_or_else(failed),
        Err(e) => failed(e),
    };
    report.records = found.records;
    report.problems = found.problems;
    if !repair || report.problems.is_empty() {
        return report;
    }
    for id in &found.undecodable {
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
            counts.describe()
        )),
        Err(e) => report.remaining.push(format!("rebuild failed: {e}")),
    }
    match store.check(&|_, _| {}) {
        Ok(left) => report.remaining.extend(left.problems),
        Err(e) => report.remaining.push(format!("re-check failed: {e}")),
    }
    report
}
