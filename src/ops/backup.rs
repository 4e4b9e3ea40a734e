//! `outbox backup` and `outbox restore`.
//!
//! sled rewrites its segment files in place, so copying the directory of a running store
//! gives a torn copy. A running server therefore writes a snapshot itself: it holds writers
//! off (the store's write gate), copies every tree into a fresh sled directory at DEST, and
//! syncs it. A stopped directory is copied file by file while its lock is held (so no server
//! can start meanwhile). Either way DEST gets `outbox-backup.json`, a manifest with the counts
//! by status and a SHA-256 over every record, computed from DEST itself; `restore` recomputes
//! it from the copy before putting the copy in place.

use crate::ops::handler::Progress;
use crate::store::maintenance::{open_raw, sync_raw};
use crate::store::{Counts, Store};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const MANIFEST_NAME: &str = "outbox-backup.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    /// `snapshot of a running server` or `copy of a stopped directory`.
    pub method: String,
    pub counts: Counts,
    pub record_count: u64,
    /// SHA-256 over every `entries` item in key order: for each, the key length (u32 BE), the
    /// key, the value length (u32 BE), the value.
    pub records_sha256: String,
}

/// Counts and checksum of the records in an open database.
pub fn digest(db: &sled::Db) -> anyhow::Result<(Counts, u64, String)> {
    let counts = Counts::from_tree(&db.open_tree("counters")?)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    for item in db.open_tree("entries")?.iter() {
        let (k, v) = item?;
        h.update((k.len() as u32).to_be_bytes());
        h.update(&k);
        h.update((v.len() as u32).to_be_bytes());
        h.update(&v);
        n += 1;
    }
    Ok((counts, n, hex::encode(h.finalize())))
}

/// Creates `dest` (mode 0700) or accepts it empty; refuses anything else.
fn prepare_dest(dest: &Path) -> anyhow::Result<()> {
    if dest.exists() {
        let empty = fs::read_dir(dest)
            .with_context(|| format!("{} exists and is not a readable directory", dest.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is not empty; back up into a new or empty directory",
                dest.display()
            );
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dest)
        .with_context(|| format!("cannot create {}", dest.display()))
}

/// Consistent snapshot of a running store into `dest`.
pub fn snapshot(store: &Store, dest: &Path, progress: Progress) -> anyhow::Result<Manifest> {
    prepare_dest(dest)?;
    let db =
        open_raw(dest).with_context(|| format!("cannot create a store at {}", dest.display()))?;
    let copied = store.copy_into(&db, &|n| progress(n, None))?;
    tracing::info!(items = copied, "backup snapshot copied");
    finish(db, dest, "snapshot of a running server")
}

/// Checksums the copy at `dest`, makes it durable and writes the manifest.
fn finish(db: sled::Db, dest: &Path, method: &str) -> anyhow::Result<Manifest> {
    let (counts, record_count, sum) = digest(&db)?;
    sync_raw(&db, dest)?;
    drop(db);
    private_modes(dest)?;
    let manifest = Manifest {
        format: 1,
        created_at: crate::time::rfc3339(crate::time::now_ms()),
        method: method.into(),
        counts,
        record_count,
        records_sha256: sum,
    };
    write_durably(
        &dest.join(MANIFEST_NAME),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(path.parent().expect("a file in a directory"))?.sync_all()?;
    Ok(())
}

/// Makes everything under `dir` readable by its owner only (files 0600, directories 0700),
/// whatever the umask of the process that wrote it: a backup holds every form post.
fn private_modes(dir: &Path) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))?;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            private_modes(&entry.path())?;
        } else if kind.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Files never copied: a snapshot a crash left half-written, the admin socket, a manifest
/// from an earlier backup.
fn skipped(name: &str) -> bool {
    (name.starts_with("snap.") && name.ends_with(".generating"))
        || name == crate::ops::proto::SOCKET_NAME
        || name == MANIFEST_NAME
}

/// Copies the directory tree `src` into `dest` (which exists), fsyncing every file and
/// directory. Returns the number of files.
pub(crate) fn copy_tree(
    src: &Path,
    dest: &Path,
    progress: Progress,
    copied: &mut u64,
) -> anyhow::Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if skipped(&name.to_string_lossy()) {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&to)?;
            copy_tree(&from, &to, progress, copied)?;
        } else if kind.is_file() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
            File::open(&to)?.sync_all()?;
            *copied += 1;
            progress(*copied, None);
        }
    }
    File::open(dest)?.sync_all()?;
    Ok(())
}

/// Holds sled's own lock on `<dir>/db` (an exclusive `flock`), so no server starts on the
/// directory while it is copied. `advice` ends the error when a server holds it.
pub(crate) fn lock_stopped(dir: &Path, advice: &str) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let file = File::open(dir.join("db"))
        .with_context(|| format!("no outbox data directory at {}", dir.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{} is in use by a running outbox ({e}); {advice}",
            dir.display()
        )
    })
}

/// Offline backup: copies the stopped directory `src` to `dest`.
pub fn copy_stopped(src: &Path, dest: &Path, progress: Progress) -> anyhow::Result<Manifest> {
    prepare_dest(dest)?;
    {
        let _lock = lock_stopped(
            src,
            "use `outbox backup` while it answers on its admin socket, or stop it first",
        )?;
        copy_tree(src, dest, progress, &mut 0)?;
    }
    let db =
        open_raw(dest).with_context(|| format!("the copy at {} does not open", dest.display()))?;
    finish(db, dest, "copy of a stopped directory")
}
