//! `outbox restore SRC --data-dir DIR`: puts a backup in place, after checking it.
//!
//! The backup is copied next to DIR first and its records are checked against the manifest
//! there (opening a sled directory writes to it, so the backup itself is never opened). Only
//! then is the copy renamed into place. A non-empty DIR needs `force`, and even then it is
//! moved aside, not deleted.

use crate::ops::commands::backup::{copy_tree, try_lock, Manifest, MANIFEST_NAME};
use crate::ops::operation::Progress;
use crate::ops::progress::with_bar;
use crate::ops::socket::route::{refuse_if_served, Place};
use crate::ops::target::Target;
use crate::ops::text;
use crate::store::maintenance::open_raw;
use crate::store::read::digest;
use anyhow::{bail, Context};
use clap::Args;
use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: Target,
    /// A directory written by `outbox backup`
    pub src: PathBuf,
    /// Replace a non-empty data directory (its contents are moved aside, not deleted)
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let dir = Place::require_directory(
        &a.target,
        "outbox restore puts back a backup of the embedded store's data directory; restore PostgreSQL with its own tools: start from a pg_basebackup copy, or pg_restore a pg_dump, and replay the WAL archive for point-in-time recovery (restore_command, recovery_target_time)",
    )?;
    refuse_if_served(&dir, "stop it before restoring")?;
    let r = with_bar("restoring", |progress| {
        restore(&a.src, &dir, a.force, progress)
    })?;
    println!(
        "restored {} from {} (backup of {}) into {}",
        text::count(r.manifest.record_count, "record", "records"),
        a.src.display(),
        r.manifest.created_at,
        dir.display()
    );
    if let Some(aside) = r.moved_aside {
        println!("the previous contents are in {}", aside.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the previous contents of the target went (with `force`).
    pub moved_aside: Option<PathBuf>,
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    Ok(fs::read_dir(dir)
        .with_context(|| format!("{} is not a readable directory", dir.display()))?
        .next()
        .is_none())
}

pub fn restore(
    src: &Path,
    target: &Path,
    force: bool,
    progress: Progress,
) -> anyhow::Result<Restored> {
    let text = fs::read(src.join(MANIFEST_NAME)).with_context(|| {
        format!(
            "{} has no {MANIFEST_NAME}; is it a backup made by `outbox backup`?",
            src.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{MANIFEST_NAME} in {} is not a valid manifest",
            src.display()
        )
    })?;
    let exists = target.exists();
    let _lock = if target.join("db").exists() {
        // A server that is still starting holds the lock before its admin socket answers.
        let lock = try_lock(target)?;
        Some(lock.with_context(|| {
            format!(
                "{} is in use by a running outbox; stop it before restoring",
                target.display()
            )
        })?)
    } else {
        None
    };
    if exists && !is_empty_dir(target)? && !force {
        bail!(
            "{} is not empty; pass --force to replace it (its contents are moved aside, not deleted)",
            target.display()
        );
    }
    let name = target
        .file_name()
        .context("the target data directory needs a name (not / or ..)")?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let checked = (|| {
        copy_tree(src, &staging, progress, &mut 0)?;
        let db = open_raw(&staging).context("the copied backup does not open")?;
        let d = digest(&db)?;
        let (n, sum) = (d.records, d.sha256);
        db.flush()?;
        drop(db);
        if n != manifest.record_count || sum != manifest.records_sha256 {
            bail!(
                "backup {} does not match its manifest ({n} records, checksum {sum}; the manifest says {} records, {}): it is damaged or was changed; nothing was restored",
                src.display(),
                manifest.record_count,
                manifest.records_sha256
            );
        }
        File::open(staging.join("db"))?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = checked {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let mut moved_aside = None;
    if exists {
        if is_empty_dir(target)? {
            fs::remove_dir(target)?;
        } else {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let aside = parent.join(format!("{name}.replaced-{stamp}"));
            fs::rename(target, &aside)
                .with_context(|| format!("cannot move {} aside", target.display()))?;
            moved_aside = Some(aside);
        }
    }
    fs::rename(&staging, target)
        .with_context(|| format!("cannot move the restored copy to {}", target.display()))?;
    File::open(&parent)?.sync_all()?;
    Ok(Restored {
        manifest,
        moved_aside,
    })
}
