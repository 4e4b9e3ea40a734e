//! `outbox compact`: gives disk space back after a backlog drained.
//!
//! sled never shrinks its files, and there is no compaction call: after a million records
//! are delivered and their tombstones purged, most of the data directory is dead space. This
//! command rewrites the store as it is now into a fresh directory beside it (the backup path:
//! a fresh copy holds only live data), checks it against its manifest, and swaps the two
//! directories in one `renameat2(RENAME_EXCHANGE)`, so a crash at any point leaves either the
//! old or the new store in place, never neither. The old store is deleted last.
//!
//! The server must be stopped: sled allows one process per directory. The store stays open
//! (and so locked) until the swap is done, so no server can start on the old directory and
//! accept posts that the swap would then throw away. What is copied is live data only, so
//! after a drain the stop lasts seconds.

use crate::ops::commands::backup::{self, Manifest};
use crate::ops::operation::Progress;
use crate::ops::progress::with_bar;
use crate::ops::socket::route::refuse_if_served;
use crate::ops::target::Target;
use crate::store::{dir_size, Store};
use anyhow::{bail, Context};
use clap::Args;
use nix::fcntl::{renameat2, RenameFlags};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug)]
pub struct Compacted {
    pub manifest: Manifest,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites the stopped store in `dir` into a fresh directory and swaps it in.
pub fn compact(dir: &Path, progress: Progress) -> anyhow::Result<Compacted> {
    if !dir.join("db").exists() {
        bail!(
            "{} holds no outbox store; pass the --data-dir the service uses",
            dir.display()
        );
    }
    let bytes_before = dir_size(dir);
    let store =
        Store::open(dir).with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let name = dir
        .file_name()
        .context("the data directory needs a name (not / or ..)")?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fresh = parent.join(format!(".{name}.compacting-{}", std::process::id()));
    if fresh.exists() {
        fs::remove_dir_all(&fresh)?;
    }
    let manifest = backup::snapshot(&store, &fresh, progress).inspect_err(|_| {
        let _ = fs::remove_dir_all(&fresh);
    })?;
    let counts = store.counts()?;
    if manifest.counts != counts {
        let _ = fs::remove_dir_all(&fresh);
        bail!(
            "the copy's counts differ from the store's ({:?} vs {counts:?}); nothing was changed",
            manifest.counts
        );
    }
    // One atomic exchange: `dir` is the fresh store from here on, `fresh` the old one.
    renameat2(None, &fresh, None, dir, RenameFlags::RENAME_EXCHANGE)
        .with_context(|| format!("cannot swap {} and {}", fresh.display(), dir.display()))?;
    File::open(&parent)?.sync_all()?;
    drop(store);
    fs::remove_dir_all(&fresh)
        .with_context(|| format!("the old store is left in {}; delete it", fresh.display()))?;
    Ok(Compacted {
        manifest,
        bytes_before,
        bytes_after: dir_size(dir),
    })
}

pub fn run(a: CompactArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    refuse_if_served(&dir, "stop it, run `outbox compact`, then start it again")?;
    let r = with_bar("compacting", |progress| compact(&dir, progress))?;
    println!(
        "compacted {}: {} -> {} ({} kept)",
        dir.display(),
        human(r.bytes_before),
        human(r.bytes_after),
        crate::ops::text::count(r.manifest.record_count, "record", "records"),
    );
    Ok(ExitCode::SUCCESS)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
