//! Erasure in a backup directory. Backups (`outbox backup`, `ops/backup.sh`) hold every
//! address the store held when they were taken, so an erasure is run against each of them
//! too: `outbox purge --erase-email ADDRESS --yes --data-dir BACKUP`. Erasing inside a sled
//! directory is not enough there: sled may keep the old bytes in its log until it reuses
//! the space, and the backup's manifest would no longer match its records, so `outbox
//! restore` would refuse it. After erasing, the backup is therefore rewritten: a fresh
//! snapshot of what remains (live data only) beside it, with a manifest computed from it
//! that keeps the original `created_at` and adds `erased_at`, then exchanged with the old
//! directory in one `renameat2(RENAME_EXCHANGE)`, and the old one removed.

use crate::ops::commands::backup::{snapshot, try_lock, write_durably, Manifest, MANIFEST_NAME};
use crate::store::{when_released, Store};
use anyhow::Context;
use nix::fcntl::{renameat2, RenameFlags};
use std::fs;
use std::path::{Path, PathBuf};

/// Rewrites `dir` as above when it is a backup (it holds a manifest); `None` otherwise.
pub fn rewrite_if_backup(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let manifest_path = dir.join(MANIFEST_NAME);
    if !manifest_path.exists() {
        return Ok(None);
    }
    let old: Manifest = serde_json::from_slice(&fs::read(&manifest_path)?)
        .with_context(|| format!("{} is not a valid manifest", manifest_path.display()))?;
    let fresh = beside(dir, "erasing")?;
    if fresh.exists() {
        // Left by an interrupted run: never the backup itself, which keeps its name.
        fs::remove_dir_all(&fresh).with_context(|| format!("cannot remove {}", fresh.display()))?;
    }
    let store = when_released(|| Store::open(dir)).with_context(|| {
        format!(
            "cannot reopen the backup {} to rewrite it (is a server running on it?)",
            dir.display()
        )
    })?;
    let made = snapshot(&store, &fresh, &|_, _| {});
    drop(store);
    let mut manifest = made?;
    manifest.created_at = old.created_at;
    manifest.method = old.method;
    manifest.erased_at = Some(crate::time::rfc3339(crate::time::now_ms()));
    write_durably(
        &fresh.join(MANIFEST_NAME),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    // Wait for sled's threads to let go of the old directory before it is swapped and removed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while try_lock(dir)?.is_none() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} stays locked; the erased copy is at {}",
            dir.display(),
            fresh.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    renameat2(None, &fresh, None, dir, RenameFlags::RENAME_EXCHANGE).with_context(|| {
        format!(
            "cannot put the rewritten backup in place of {}",
            dir.display()
        )
    })?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent).and_then(|d| d.sync_all())?;
    }
    fs::remove_dir_all(&fresh).with_context(|| {
        format!(
            "the backup {} was rewritten, but its old copy {} could not be removed: remove it",
            dir.display(),
            fresh.display()
        )
    })?;
    Ok(Some(manifest))
}

/// `<parent>/.<name>.<what>`: hidden, so `ops/backup.sh` (which lists `outbox-*`) ignores it.
fn beside(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no directory name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{}.{what}", name.to_string_lossy())))
}
