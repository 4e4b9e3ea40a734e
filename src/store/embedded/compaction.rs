//! Compaction while the store runs: gives disk space back after a backlog drained.
//!
//! sled never shrinks its log file on its own accord once pages are spread over it, and it
//! has no compaction call. A fresh copy holds only live data, so compaction writes one and
//! puts it in place, without a restart and with writers held off only at the end:
//!
//! 1. a point-in-time copy into `<data-dir>/.compacting/` (the backup path: writers go on
//!    while the trees are copied and the copy's indexes are built; see
//!    [`super::maintenance`]). The copy is synced and opened again, which has sled write a
//!    snapshot of it (sled writes snapshots only when it opens a database);
//! 2. writers wait while the records they wrote meanwhile are re-copied; still at that
//!    instant, the copy is synced and closed, the old snapshot files are removed, and
//!    `renameat2(RENAME_EXCHANGE)` swaps the two `db` files (sled's log) in one step; the
//!    copy's snapshot follows its log, so opening the copy's `db` in the data directory reads
//!    only what was written after the snapshot; the copy becomes the current database
//!    ([`super::Gen`]); writers that were waiting go on on it ([`super::StoreError::Moved`]);
//! 3. the old log, now in `.compacting/`, is deleted.
//!
//! So writers are held off for the writes made during the copy and the open, not for the
//! records kept: 37 ms with 33,334 of 100,000 records kept (`cargo bench --bench resources`).
//!
//! The swap happens inside the data directory, so it works where only that directory is
//! writable (systemd's `StateDirectory`, a container volume) and the admin socket stays. A
//! crash at any point leaves a complete store in the data directory: before the exchange the
//! old log (without snapshot files, so sled reads the whole log at the next start), after it
//! the synced copy (with its snapshot once that is moved, which happens only after the
//! exchange is durable; without it until then). A snapshot never meets the other log: if
//! the copy fails to open, its snapshot is removed before the exchange is undone. `conf` is the same in both (the store's fixed sled settings). The next
//! open deletes whatever `.compacting/` holds. If the directory cannot be synced after the
//! exchange, or the exchange cannot be undone after the copy failed to open, the store stops
//! acknowledging writes (as after a failed fsync): both logs hold everything acknowledged up
//! to then, and a restart opens the one the data directory names.
//!
//! sled writes files by path only when it opens (snapshots) and for blobs, which the store
//! never makes (bodies are capped far below the blob threshold), so the old database, still
//! open for readers that hold it, never writes into the data directory after the swap.

use super::maintenance::{open_raw, sync_raw};
use super::{
    dir_size, fsync_dir, space, when_released, Gen, Store, StoreError, Trees, SEGMENT_SIZE,
};
use nix::fcntl::{renameat2, RenameFlags};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a compaction writes its copy, inside the data directory.
pub const COMPACTING_DIR: &str = ".compacting";

/// How long the old database may stay in use by readers before its files are deleted
/// anyway (deleting open files is safe: they stay readable until closed).
const OLD_USERS_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compacted {
    /// Whether the copy was put in place: not when it came out no smaller than the log it
    /// would replace (a store whose records are mostly still kept).
    pub swapped: bool,
    /// Bytes in the data directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records (entries) kept.
    pub records: u64,
    /// How long writers were held off at the end, in milliseconds.
    pub writers_held_ms: u64,
}

impl Store {
    /// Rewrites the store into a fresh copy and puts it in place (see the module doc).
    /// `progress` gets the items copied so far.
    pub fn compact(&self, progress: &dyn Fn(u64)) -> Result<Compacted, StoreError> {
        let dir = self.path.clone();
        let bytes_before = dir_size(&dir);
        let fresh = dir.join(COMPACTING_DIR);
        remove_leftover(&dir).map_err(io(&fresh))?;
        // Said before anything is written: a copy that fills the disk half-way helps no one.
        let (live, records) = live_bytes(&self.gen().trees)?;
        space::room_to_compact(&dir, live, records)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(io(&fresh))?;
        let dest = open_raw(&fresh)?;
        let mut held = Duration::ZERO;
        // Before writers are held off: the bulk of the copy goes to disk now, and a copy
        // already no smaller than the store is not worth holding writers off for. Opening
        // the copy again makes sled write a snapshot of it, which goes with its log: the open
        // at the swap then reads only what the hold adds.
        let worth_it = |dest: sled::Db| {
            sync_raw(&dest, &fresh)?;
            let copy = dir_size(&fresh);
            if !gives_space_back(copy, dir_size(&dir).saturating_sub(copy)) {
                return Ok(None);
            }
            drop(dest);
            when_released(|| open_raw(&fresh)).map(Some)
        };
        let copied = self.copy_at_instant(dest, progress, worth_it, |old, dest, held_from| {
            let swapped = swap_in(&dir, &fresh, dest, old);
            held = held_from.elapsed();
            let Some(new) = swapped? else {
                return Ok(None);
            };
            old.trees
                .retired
                .store(true, std::sync::atomic::Ordering::Release);
            let old = std::mem::replace(
                &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
                Arc::new(new),
            );
            Ok(Some(old))
        });
        let old = match copied {
            Ok(Some((_, old))) => old,
            Ok(None) => None,
            Err(e) => {
                // Nothing was swapped: the copy is only in the way.
                let _ = fs::remove_dir_all(&fresh);
                if e.to_string().contains("No space left on device") {
                    return Err(StoreError::NoRoom(format!(
                        "not compacted: the disk filled while the copy was written; nothing was changed and the copy was removed. It needs more than the estimated {} free beside the log in {}: free more there, or compact on a larger filesystem (ops/RUNBOOK.md, \"The disk fills\")",
                        space::mib(space::compaction_needs(live)),
                        dir.display()
                    )));
                }
                return Err(e);
            }
        };
        let swapped = old.is_some();
        if let Some(old) = old {
            // The committer may still fdatasync a batch it wrote to the old log; readers
            // finish.
            let deadline = Instant::now() + OLD_USERS_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        let records = self.gen().trees.entries.len() as u64;
        let bytes_after = dir_size(&dir);
        tracing::info!(
            swapped,
            bytes_before,
            bytes_after,
            records,
            writers_held_ms = held.as_millis() as u64,
            "store compaction done"
        );
        Ok(Compacted {
            swapped,
            bytes_before,
            bytes_after,
            records,
            writers_held_ms: held.as_millis() as u64,
        })
    }
}

/// Whether a copy of `copy` bytes makes a store of `store` bytes smaller (logged when not).
/// sled writes a bulk load with garbage of its own (every leaf is rewritten as it fills), so
/// a copy of a store that still keeps most of its records can come out larger; and sled
/// opens a log into a new segment, so the copy takes one more once in use.
fn gives_space_back(copy: u64, store: u64) -> bool {
    let smaller = copy + (SEGMENT_SIZE as u64) < store;
    if !smaller {
        tracing::info!(
            copy,
            store,
            "compaction: a copy would be no smaller than the store; it is not used"
        );
    }
    smaller
}

/// Bytes of the records kept (keys and values of `entries` and `bodies`) and their number:
/// what a copy holds, less sled's own overhead. A scan of what is kept, which after a drain
/// is little.
fn live_bytes(trees: &Trees) -> Result<(u64, u64), StoreError> {
    let mut bytes = 0u64;
    for tree in [&trees.entries, &trees.bodies] {
        for item in tree.iter() {
            let (k, v) = item?;
            bytes += (k.len() + v.len()) as u64;
        }
    }
    Ok((bytes, trees.entries.len() as u64))
}

/// The error for an I/O failure on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Prepare { path, source }
}

/// Removes what an interrupted compaction left in `dir`: never the live store (see the
/// module doc).
pub(super) fn remove_leftover(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir.join(COMPACTING_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// sled's snapshot files in `dir` (`snap.*`, finished or not).
fn snapshot_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("snap.") {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Step 2 of the module doc, with writers held off: makes the copy in `fresh` durable,
/// exchanges the two logs, and opens the copy in `dir`. Undoes the exchange if the copy does
/// not open, so the old database stays in place and current. `None`: the copy is no smaller
/// than the store, and nothing was changed.
fn swap_in(dir: &Path, fresh: &Path, dest: sled::Db, old: &Gen) -> Result<Option<Gen>, StoreError> {
    sync_raw(&dest, fresh)?;
    drop(dest);
    let copy = dir_size(fresh);
    if !gives_space_back(copy, dir_size(dir).saturating_sub(copy)) {
        return Ok(None);
    }
    for f in walk_files(fresh).map_err(io(fresh))? {
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).map_err(io(&f))?;
    }
    // Without snapshot files the old log is still a whole store; a snapshot describes one
    // log only, so none may outlive the exchange.
    remove_snapshots(dir).map_err(io(dir))?;
    let exchange = |what: &str| {
        renameat2(
            None,
            &fresh.join("db"),
            None,
            &dir.join("db"),
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| StoreError::Prepare {
            path: dir.join("db"),
            source: std::io::Error::other(format!("{what}: {e}")),
        })?;
        // The names are exchanged now, durably or not: either log holds everything
        // acknowledged so far (writers are held off), but once writes go on, only the one
        // the data directory names at the next start counts. Unsure which, stop acknowledging.
        if let Err(e) = fsync_dir(dir).and_then(|()| fsync_dir(fresh)) {
            old.syncer.fail(format!(
                "syncing {} after a compaction's swap failed ({e}); restart outbox",
                dir.display()
            ));
        }
        Ok::<(), StoreError>(())
    };
    exchange("cannot put the compacted log in place")?;
    if old.syncer.failure().is_none() {
        // Only once the exchange is durable: a snapshot must never meet the other log.
        move_snapshots(fresh, dir);
    }
    match when_released(|| Gen::open(dir, Some(old))) {
        Ok(new) => Ok(Some(new)),
        Err(e) => {
            tracing::error!(error = %e, "the compacted store does not open; the old one stays");
            // They describe the copy's log, which goes back.
            if let Err(undo) = remove_snapshots(dir)
                .map_err(io(dir))
                .and_then(|()| exchange("cannot put the old log back after a failed compaction"))
            {
                // The data directory holds the copy, complete as of now (writers are held
                // off); what the old log takes from here would not be there at the next
                // start, so nothing more is acknowledged.
                old.syncer.fail(format!(
                    "{undo}; the data directory holds the compacted copy: restart outbox to open it"
                ));
                return Err(undo);
            }
            Err(e)
        }
    }
}

/// Removes sled's snapshot files from `dir`, durably.
fn remove_snapshots(dir: &Path) -> std::io::Result<()> {
    snapshot_files(dir)?.iter().try_for_each(fs::remove_file)?;
    fsync_dir(dir)
}

/// Moves the copy's finished snapshot files from `fresh` into `dir`, whose log the copy's is
/// now. One that cannot be moved only makes the next open read the whole log.
fn move_snapshots(fresh: &Path, dir: &Path) {
    let moved = snapshot_files(fresh).and_then(|snaps| {
        for snap in snaps
            .iter()
            .filter(|s| s.extension() != Some("generating".as_ref()))
        {
            fs::rename(snap, dir.join(snap.file_name().unwrap_or_default()))?;
        }
        fsync_dir(dir)
    });
    if let Err(e) = moved {
        tracing::warn!(error = %e, "compaction: the copy's snapshot stays behind; opening it reads its whole log");
    }
}

fn walk_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(walk_files(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::tx::submit_batch;
    use crate::store::record::{sample, Status};
    use crate::store::{Change, Record, Updated};

    #[test]
    fn writes_after_a_compaction_reach_the_new_log_and_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let s = Store::open(&dir).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-k1"), sample("trace-k2")]).unwrap();
        // A drained backlog of 4,000 4-KB forms: the space the copy gives back. (A store
        // opened again writes into a new 8 MiB segment, so the backlog must be larger.)
        let gone: Vec<String> = (0..4000).map(|i| format!("trace-gone-{i:05}")).collect();
        let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(4000));
        for chunk in gone.chunks(500) {
            let recs: Vec<_> = chunk
                .iter()
                .map(|id| Record {
                    payload: Some(big.clone()),
                    ..sample(id)
                })
                .collect();
            submit_batch(&s.gen().trees, &recs).unwrap();
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            s.update_many(&ids, |_, _| Change::Purge).unwrap();
        }
        let old = s.gen();
        let r = s.compact(&|_| {}).unwrap();
        assert!(r.swapped, "{r:?}");
        assert!(r.bytes_after < r.bytes_before, "{r:?}");
        assert_eq!(r.records, 2);
        assert!(!Arc::ptr_eq(&old, &s.gen()), "a new database is current");
        assert!(
            !snapshot_files(&dir).unwrap().is_empty(),
            "the copy's snapshot came with its log"
        );
        assert!(
            matches!(
                submit_batch(&old.trees, &[sample("trace-k3")]),
                Err(StoreError::Moved)
            ),
            "a writer holding the old database is sent to the new one"
        );
        drop(old);
        let dead = s
            .update("trace-k1", |r| {
                let mut n = r.clone();
                n.status = Status::Dead;
                Change::Put(n)
            })
            .unwrap();
        assert!(matches!(dead, Updated::Put(_)));
        submit_batch(&s.gen().trees, &[sample("trace-k3")]).unwrap();
        s.sync().unwrap();
        assert!(!dir.join(COMPACTING_DIR).exists());
        drop(s);
        let s = crate::store::when_released(|| Store::open(&dir)).unwrap();
        assert_eq!(s.get("trace-k1").unwrap().unwrap().status, Status::Dead);
        assert!(s.get("trace-k2").unwrap().is_some());
        assert!(s.get("trace-k3").unwrap().is_some());
        let c = s.counts().unwrap();
        assert_eq!((c.accepted, c.pending, c.dead), (4003, 2, 1));
    }

    #[test]
    fn a_copy_that_would_not_be_smaller_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let s = Store::open(&dir).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-n1")]).unwrap();
        let before = s.gen();
        let r = s.compact(&|_| {}).unwrap();
        assert!(!r.swapped, "{r:?}");
        assert_eq!(r.writers_held_ms, 0, "known before writers were held off");
        assert!(Arc::ptr_eq(&before, &s.gen()), "the same database goes on");
        assert!(!dir.join(COMPACTING_DIR).exists());
        submit_batch(&s.gen().trees, &[sample("trace-n2")]).unwrap();
        assert_eq!(s.counts().unwrap().pending, 2);
    }

    /// The crash window before the exchange: the old log without its snapshot files.
    #[test]
    fn a_log_without_its_snapshot_files_opens_with_every_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let s = Store::open(&dir).unwrap();
        let recs: Vec<_> = (0..3000)
            .map(|i| sample(&format!("trace-s{i:05}")))
            .collect();
        for chunk in recs.chunks(100) {
            submit_batch(&s.gen().trees, chunk).unwrap();
        }
        let gone: Vec<String> = (0..3000)
            .step_by(2)
            .map(|i| format!("trace-s{i:05}"))
            .collect();
        let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        s.update_many(&gone, |_, _| Change::Purge).unwrap();
        s.sync().unwrap();
        drop(s);
        // Opened twice: the second open writes a snapshot of the first's log.
        drop(crate::store::when_released(|| Store::open(&dir)).unwrap());
        let snaps = snapshot_files(&dir).unwrap();
        assert!(!snaps.is_empty(), "sled wrote a snapshot");
        for f in snaps {
            fs::remove_file(f).unwrap();
        }
        let s = crate::store::when_released(|| Store::open(&dir)).unwrap();
        let c = s.counts().unwrap();
        assert_eq!((c.accepted, c.pending, c.purged), (3000, 1500, 1500));
        for i in 0..3000 {
            let id = format!("trace-s{i:05}");
            assert_eq!(s.get(&id).unwrap().is_some(), i % 2 == 1, "{id}");
        }
        assert!(s.check(&|_, _| {}).unwrap().problems.is_empty());
    }

    #[test]
    fn a_copy_left_by_an_interrupted_compaction_is_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let s = Store::open(&dir).unwrap();
        submit_batch(&s.gen().trees, &[sample("trace-k4")]).unwrap();
        s.sync().unwrap();
        drop(s);
        fs::create_dir(dir.join(COMPACTING_DIR)).unwrap();
        fs::write(dir.join(COMPACTING_DIR).join("db"), b"half a copy").unwrap();
        let s = crate::store::when_released(|| Store::open(&dir)).unwrap();
        assert!(!dir.join(COMPACTING_DIR).exists());
        assert!(s.get("trace-k4").unwrap().is_some());
    }
}
