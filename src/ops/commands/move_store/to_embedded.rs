//! From PostgreSQL into a new data directory.
//!
//! The directory is built beside the target under a temporary name (`.<name>.moving`), checked
//! there, made durable, and only then renamed into place: until the move says done there is
//! no half-written data directory a service could be started on, and a rerun after an
//! interruption starts the copy again from the beginning (the source was never changed).
//! Every instance on the database must be stopped: a live lease (an instance delivering) is
//! refused, and a source that changed during the copy fails the check at the end. A trace ID
//! PostgreSQL quarantined more than once (posted again after its first row left) is refused
//! too: a data directory keeps one quarantined entry per trace ID.

use super::digest::{first_named, repeated, Digest};
use super::{Moved, BATCH};
use crate::ops::operation::Progress;
use crate::ops::socket::route::explain;
use crate::ops::text::count;
use crate::store::postgres::PgStore;
use crate::store::Store;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Refuses a target that is not new: it must be absent or an empty directory.
fn check_new(dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        if dir.exists() {
            bail!("{} exists and is not a readable directory", dir.display());
        }
        return Ok(());
    };
    if entries.next().is_some() {
        bail!(
            "{} is not empty: a move writes only into a new data directory; name an absent or empty one with --data-dir (nothing was written)",
            dir.display()
        );
    }
    Ok(())
}

/// Where the new directory is built: beside the target, hidden.
fn staging_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let name = dir
        .file_name()
        .context("the data directory needs a name (not / or ..)")?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(".{name}.moving")))
}

/// Builds a new data directory beside `dir` ([`staging_dir`]), lets `copy` fill it, and puts
/// it in place only once the copy matches its source; otherwise (an error, a difference) it
/// goes, so no half copy is ever found under the data directory's name.
pub fn into_new_dir(
    dir: &Path,
    copy: impl FnOnce(&Store) -> anyhow::Result<Moved>,
) -> anyhow::Result<Moved> {
    check_new(dir)?;
    let staging = staging_dir(dir)?;
    if staging.exists() {
        // What an interrupted run left: never a data directory anyone used.
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let target = Store::open(&staging).map_err(|e| explain(&staging, e.into()))?;
    let moved = copy(&target);
    let whole = moved.as_ref().is_ok_and(|m| m.problems().is_empty());
    let synced = target.sync();
    drop(target);
    wait_released(&staging)?;
    match whole && synced.is_ok() {
        true => put_in_place(&staging, dir)?,
        false => std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?,
    }
    synced?;
    moved
}

/// Waits until sled's background threads have let go of a closed directory, so that it is
/// renamed with nothing left writing into it.
fn wait_released(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if crate::ops::commands::backup::try_lock(dir)?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} is still held open after the copy; it was left there",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Renames the finished copy to the data directory's name (an empty directory there goes).
fn put_in_place(staging: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(staging, dir).with_context(|| {
        format!(
            "cannot move the copy from {} to {}",
            staging.display(),
            dir.display()
        )
    })?;
    let parent = staging.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}

pub async fn run(
    source: &PgStore,
    target: &Store,
    progress: Progress<'_>,
) -> anyhow::Result<Moved> {
    let leases = source.live_leases().await?;
    if leases > 0 {
        bail!(
            "an outbox instance is delivering from this PostgreSQL store ({leases} records under a live lease): stop every instance on it, then move (nothing was written)"
        );
    }
    let quarantined = source.copy_quarantined().await?;
    let twice = repeated(&quarantined);
    if !twice.is_empty() {
        bail!(
            "the PostgreSQL store quarantined {} more than once ({}), and a data directory keeps one quarantined entry per trace ID: save the older rows of outbox_quarantine elsewhere, delete them and lower the quarantined row of outbox_counters by as many, then move (nothing was written)",
            count(twice.len() as u64, "trace ID", "trace IDs"),
            first_named(&twice)
        );
    }
    let source_counts = source.counts().await?;
    // Two passes over the records: copy, read the copy back.
    let n = source_counts.pending + source_counts.delivered + source_counts.dead;
    let total = 2 * n;
    let mut digest = Digest::default();
    let mut after: Option<String> = None;
    let mut done = 0u64;
    loop {
        let page = source.copy_page(after.as_deref(), BATCH).await?;
        page.iter().for_each(|r| digest.add(r));
        target.put_moved(&page)?;
        done += page.len() as u64;
        progress(done.min(n), Some(total));
        match page.last() {
            Some(r) if page.len() == BATCH => after = Some(r.trace_id.clone()),
            _ => break,
        }
    }
    quarantined.iter().for_each(|q| digest.add_quarantined(q));
    target.put_moved_quarantined(&quarantined)?;
    let c = source.moved_counters().await?;
    target.set_moved_counters(c.quarantined, c.purged)?;
    let mut copied = Digest::default();
    for (i, r) in target.entries().enumerate() {
        let e = r?;
        progress(n + (i as u64).min(n), Some(total));
        let r = e.record.map_err(|u| {
            anyhow::anyhow!(
                "record {} does not decode in the copy: {}",
                e.trace_id,
                u.error
            )
        })?;
        copied.add(&r);
    }
    for q in target.quarantined() {
        copied.add_quarantined(&q?);
    }
    // Read again: a source that changed during the copy shows here.
    let source_counts = source.counts().await?;
    Ok(Moved {
        written: digest.records() + digest.quarantined(),
        source: digest,
        target: copied,
        source_counts,
        target_counts: target.counts()?,
        already_there: 0,
    })
}
