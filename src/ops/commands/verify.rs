//! `outbox verify`: checks that the store agrees with itself, and `--repair` makes it so.
//!
//! `entries` is the source of truth. Checked: every entry decodes and is stored under its own
//! trace ID; every queued record has its `due` and `queue` entries and every delivered one
//! its `done` entries, and every index entry points at a record in that state (both ways);
//! the status counters match a recount, `quarantined` matches the quarantine tree, and the
//! accounting identity holds. On a running server the scan runs beside live writes, and
//! writers are held off only for a moment at its end, while the last of the records written
//! during it are checked again (see [`crate::store::check`]).
//!
//! The check itself is the store's ([`Store::check`]); it also reports bodies no record
//! points to. Repair moves undecodable entries to quarantine, moves such bodies to their
//! quarantined record, then rebuilds the indexes and counters from `entries` (see
//! [`Store::rebuild_indexes`]; that rebuild holds writers off while it runs).

use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::{print_json, status};
use crate::ops::shared::Shared;
use crate::ops::socket::route::Place;
use crate::ops::target::Target;
use crate::ops::text;
use crate::store::check::Check;
use crate::store::{RecordStore, Store, StoreError};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Rebuild the indexes and counters; quarantine records that do not decode
    #[arg(long)]
    pub repair: bool,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let place = Place::of(&a.target)?;
    let r = place.call(VerifyRequest { repair: a.repair }, "verifying")?;
    if a.json {
        print_json(&r);
    } else {
        for p in &r.problems {
            println!("problem: {p}");
        }
        for p in &r.repaired {
            println!("repaired: {p}");
        }
        for p in &r.remaining {
            println!("still wrong: {p}");
        }
        println!(
            "{} checked, {}",
            text::count(r.records, "record", "records"),
            text::count(r.problems.len() as u64, "problem", "problems")
        );
        if !r.problems.is_empty() && r.repaired.is_empty() && place.dir().is_some() {
            println!("run `outbox verify --repair` to rebuild the indexes and counters");
        }
    }
    Ok(status(!r.ok()))
}

/// Check, and with `repair` fix, the store (socket `op`: `verify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub repair: bool,
}

impl Operation for VerifyRequest {
    const NAME: &'static str = "verify";
    type Output = VerifyReport;

    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<VerifyReport> {
        Ok(verify_with(&ctx.store, self.repair, progress))
    }

    /// The store's own check (every row decodes, the counters agree with the rows, the
    /// accounting identity). There is nothing to rebuild: PostgreSQL keeps its indexes.
    fn run_shared(self, store: &Shared, _: Progress) -> anyhow::Result<VerifyReport> {
        anyhow::ensure!(
            !self.repair,
            "verify --repair rebuilds the embedded store's own indexes and counters; the PostgreSQL store has none to rebuild (PostgreSQL keeps its indexes; REINDEX is PostgreSQL's tool for a damaged one): run outbox verify without --repair"
        );
        let found = store.block(store.engine().verify())?;
        Ok(VerifyReport {
            records: found.records,
            problems: found.problems,
            ..Default::default()
        })
    }
}

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
    let found = store.check(progress).unwrap_or_else(failed);
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
    // Bodies found without a record stay so: body keys are never handed out twice.
    for &key in &found.orphan_bodies {
        match store.attach_orphan_body(key) {
            Ok(Some(id)) => report
                .repaired
                .push(format!("moved body {key} to the quarantined record {id}")),
            Ok(None) => {}
            Err(e) => report
                .remaining
                .push(format!("could not move body {key}: {e}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::sample;
    use crate::store::Change;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Writers go on while verify reads the store: each write made from its progress report
    /// (so, while it scans) finishes without waiting for the scan to end.
    #[test]
    fn writers_are_not_held_off_while_verify_scans() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        for i in 0..3000 {
            futures_executor::block_on(s.submit(sample(&format!("trace-v{i:05}")))).unwrap();
        }
        let stalled = std::sync::Mutex::new(vec![]);
        let n = std::sync::atomic::AtomicU64::new(0);
        let report = std::thread::scope(|scope| {
            verify_with(&s, false, &|_, _| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("trace-v{:05}", (i * 613) % 3000);
                let (done, written) = mpsc::channel();
                let s = &s;
                scope.spawn(move || done.send(s.update(&id, |_| Change::Purge).is_ok()));
                if written.recv_timeout(Duration::from_secs(10)) != Ok(true) {
                    stalled.lock().unwrap().push(i);
                }
            })
        });
        assert!(n.into_inner() >= 3, "progress came during the scan");
        assert_eq!(stalled.into_inner().unwrap(), Vec::<u64>::new());
        assert_eq!(report.problems, Vec::<String>::new());
    }
}
