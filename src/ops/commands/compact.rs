//! `outbox compact`: gives disk space back after a backlog drained.
//!
//! sled does not shrink its log once live pages are spread over it, and it has no
//! compaction call: after a million records are delivered and their tombstones purged, most
//! of the data directory can be dead space. This command has the store rewrite itself into a
//! fresh copy inside the data directory and swap that in ([`crate::store::compaction`]): on
//! a running server through its admin socket, with intake going on and held off only while
//! the records written during the copy are re-copied and the logs are swapped; on a stopped
//! directory by opening it. What is copied is live data only, so after a drain that takes
//! seconds.

use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::print_json;
use crate::ops::socket::route::{call, Place};
use crate::ops::target::Target;
use crate::store::compaction::Compacted;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

/// Compact the store in place (socket `op`: `compact`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactRequest {}

impl Operation for CompactRequest {
    const NAME: &'static str = "compact";
    type Output = Compacted;

    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<Compacted> {
        Ok(ctx.store.compact(&|n| progress(n, None))?)
    }
}

pub fn run(a: CompactArgs) -> anyhow::Result<ExitCode> {
    let dir = Place::require_directory(
        &a.target,
        "outbox compact rewrites the embedded store's files; PostgreSQL gives space back with its own tools: autovacuum (on by default) reuses the space of deleted rows, VACUUM runs that by hand, and VACUUM FULL returns it to the operating system (it locks the table while it runs)",
    )?;
    let r = call(&dir, CompactRequest {}, "compacting")?;
    if a.json {
        print_json(&r);
    } else if !r.swapped {
        println!(
            "not compacted: a fresh copy of {} would not be smaller ({} now, {} kept); nothing was changed",
            dir.display(),
            human(r.bytes_before),
            crate::ops::text::count(r.records, "record", "records"),
        );
    } else {
        println!(
            "compacted {}: {} -> {} ({} kept; writers held off {} ms)",
            dir.display(),
            human(r.bytes_before),
            human(r.bytes_after),
            crate::ops::text::count(r.records, "record", "records"),
            r.writers_held_ms,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes in MiB, or in KiB under one MiB (a new store would show as 0.0 MiB).
fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_under_a_mebibyte_are_given_in_kibibytes() {
        assert_eq!(super::human(0), "0.0 KiB");
        assert_eq!(super::human(20_480), "20.0 KiB");
        assert_eq!(super::human(8_390_266), "8.0 MiB");
    }
}
