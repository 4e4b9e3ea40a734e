//! `outbox backup DEST`: a consistent copy of the data directory.
//!
//! sled rewrites its segment files in place, so copying the directory of a running store
//! gives a torn copy. A running server therefore writes a snapshot itself: it holds writers
//! off (the store's write gate), copies every tree into a fresh sled directory at DEST, and
//! syncs it. A stopped directory is copied file by file while its lock is held (so no server
//! can start meanwhile). Either way DEST gets `outbox-backup.json`, a manifest with the counts
//! by status and a SHA-256 over every record, computed from DEST itself; `outbox restore`
//! recomputes it from its copy before putting that in place, with the file helpers here.
//!
//! Which of the two happens is the usual server-or-offline choice ([`route`]); offline, the
//! directory is not opened but locked and copied.

use crate::ops::operation::{Operation, OpsContext, Progress};
use crate::ops::output::print_json;
use crate::ops::progress::with_bar;
use crate::ops::socket::protocol::SOCKET_NAME;
use crate::ops::socket::route::{require_data_dir, route, InUse, Place, Route};
use crate::ops::target::Target;
use crate::ops::text;
use crate::store::maintenance::{open_raw, sync_raw};
use crate::store::read::digest;
use crate::store::{Counts, Store};
use anyhow::{bail, Context};
use clap::Args;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const MANIFEST_NAME: &str = "outbox-backup.json";

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: Target,
    /// New or empty directory for the backup; it works as a --data-dir afterwards
    pub dest: PathBuf,
    /// Print JSON (shapes in the README, section Operations)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let dir = Place::require_directory(
        &a.target,
        "outbox backup copies the embedded store's data directory; back up PostgreSQL with its own tools: pg_basebackup (a physical copy of the cluster) or pg_dump -t 'outbox_*' (a logical copy of outbox's tables), with WAL archiving (archive_command) for point-in-time recovery",
    )?;
    let dest = std::path::absolute(&a.dest)
        .with_context(|| format!("cannot resolve {}", a.dest.display()))?;
    let manifest = match route(&dir, lock_offline)? {
        Route::Server(conn) => {
            let q = SnapshotRequest { dest: dest.clone() };
            with_bar("backing up", |progress| conn.call(&q, progress))?
        }
        Route::Offline(lock) => with_bar("copying", |progress| {
            copy_stopped(&lock, &dir, &dest, progress)
        })?,
    };
    if a.json {
        print_json(&manifest);
    } else {
        println!(
            "backup written to {} ({}): {}, checksum {}",
            dest.display(),
            manifest.method,
            text::count(manifest.record_count, "record", "records"),
            manifest.records_sha256
        );
        println!("start a server on it with --data-dir {}", dest.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Snapshot the running store into `dest`, an absolute path the server can write (socket
/// `op`: `backup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub dest: PathBuf,
}

impl Operation for SnapshotRequest {
    const NAME: &'static str = "backup";
    type Output = Manifest;

    fn run(self, ctx: &OpsContext, progress: Progress) -> anyhow::Result<Manifest> {
        anyhow::ensure!(
            self.dest.is_absolute(),
            "backup destination must be an absolute path"
        );
        snapshot(&ctx.store, &self.dest, progress)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    /// `snapshot of a running server` or `copy of a stopped directory`.
    pub method: String,
    pub counts: Counts,
    pub record_count: u64,
    /// SHA-256 over every `entries` item in key order, then every `bodies` item in key order:
    /// for each, the key length (u32 BE), the key, the value length (u32 BE), the value.
    pub records_sha256: String,
    /// When an address was last erased from this backup (`outbox purge --erase-email` run on
    /// it, which rewrites it); the address itself is never written down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<String>,
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
    let sum = digest(&db)?;
    sync_raw(&db, dest)?;
    drop(db);
    private_modes(dest)?;
    let manifest = Manifest {
        format: 1,
        created_at: crate::time::rfc3339(crate::time::now_ms()),
        method: method.into(),
        counts: sum.counts,
        record_count: sum.records,
        records_sha256: sum.sha256,
        erased_at: None,
    };
    write_durably(
        &dest.join(MANIFEST_NAME),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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
/// from an earlier backup, what an interrupted compaction left.
fn skipped(name: &str) -> bool {
    (name.starts_with("snap.") && name.ends_with(".generating"))
        || name == SOCKET_NAME
        || name == MANIFEST_NAME
        || name == crate::store::compaction::COMPACTING_DIR
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
/// directory while it is copied. `None` while a process holds it.
pub(crate) fn try_lock(dir: &Path) -> anyhow::Result<Option<Flock<File>>> {
    let file = File::open(dir.join("db"))
        .with_context(|| format!("no outbox data directory at {}", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", dir.display())),
    }
}

/// The offline way of a backup: the stopped directory, locked. A server holding it is
/// [`InUse`], so the route waits for its socket as for any command.
fn lock_offline(dir: &Path) -> anyhow::Result<Flock<File>> {
    require_data_dir(dir)?;
    try_lock(dir)?.ok_or_else(|| InUse::at(dir).into())
}

/// Offline backup: copies the stopped directory `src`, locked by `_lock`, to `dest`.
pub fn copy_stopped(
    _lock: &Flock<File>,
    src: &Path,
    dest: &Path,
    progress: Progress,
) -> anyhow::Result<Manifest> {
    prepare_dest(dest)?;
    copy_tree(src, dest, progress, &mut 0)?;
    let db =
        open_raw(dest).with_context(|| format!("the copy at {} does not open", dest.display()))?;
    finish(db, dest, "copy of a stopped directory")
}
