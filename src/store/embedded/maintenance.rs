//! Store-level helpers for the ops commands: the write gate, point-in-time copies, and raw
//! access for checks (index and counter rebuilds are in [`super::rebuild`]).
//!
//! # Write gate
//! sled has no snapshot isolation across trees, and a transaction cannot scan. So every write
//! path (the committer's batch, `update`, `quarantine`) holds [`Trees::write_gate`] shared
//! while its transaction runs, and a copy or a rebuild holds it exclusively: while it does, no
//! record, index entry or counter changes, and what it reads is one point in time. Writers
//! only wait; reads never take the gate.
//!
//! # Snapshots without stopping intake for the whole copy
//! A backup copies `entries`, `quarantine` and `bodies` while writers go on, with every writer
//! noting the trace IDs it touches ([`Trees::mark_dirty`], called under the shared gate), and
//! builds the copy's index trees from the records it copied (they are a function of the
//! records). Then, with the gate held exclusively, it re-copies just those IDs, undoing their
//! earlier index entries and body in the copy and writing their current ones, and copies the
//! counters and small trees: the copy now equals the store at that instant. So intake waits
//! for the writes made during the copy, not for the whole store.

use super::counters;
use super::done::done_keys;
use super::keys;
use super::record::{self, Record};
use super::{fsync_dir, Gen, Store, StoreError, Trees};
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

/// Trees a snapshot copies while writers run and then patches by trace ID.
const TRACKED: [&str; 2] = ["entries", "quarantine"];
/// Copied while writers run too, then patched through the entries of the trace IDs written
/// meanwhile (a body never changes under its key); bodies no entry of the copy points to
/// are dropped from the copy when it is indexed.
const BODIES: &str = "bodies";
/// Trees a snapshot builds from the copied records instead of copying.
const INDEXES: [&str; 3] = ["due", "queue", "done"];

/// Items per batch when copying trees: bounds memory while keeping sled's per-batch cost low.
const COPY_BATCH: usize = 4096;

impl Trees {
    /// Held shared by every write transaction. [`StoreError::Moved`] if a compaction put
    /// another database in place of this one meanwhile: write to the current one instead.
    pub(crate) fn write_gate(&self) -> Result<RwLockReadGuard<'_, ()>, StoreError> {
        let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        self.still_current()?;
        Ok(gate)
    }

    /// [`Trees::write_gate`] if it can be had now; `None` while an exclusive hold is held or
    /// waited for.
    pub(crate) fn try_write_gate(&self) -> Result<Option<RwLockReadGuard<'_, ()>>, StoreError> {
        let gate = match self.gate.try_read() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        self.still_current()?;
        Ok(Some(gate))
    }

    /// Held by copies and rebuilds; [`StoreError::Moved`] as for [`Trees::write_gate`].
    pub(crate) fn exclusive_gate(&self) -> Result<RwLockWriteGuard<'_, ()>, StoreError> {
        let gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.still_current()?;
        Ok(gate)
    }

    fn still_current(&self) -> Result<(), StoreError> {
        match self.retired.load(std::sync::atomic::Ordering::Acquire) {
            true => Err(StoreError::Moved),
            false => Ok(()),
        }
    }

    /// Notes trace IDs about to be written while a snapshot is being copied. Call it with
    /// the shared gate held: tracking starts under the exclusive gate, so a writer that saw
    /// it off had committed before the copy began.
    pub(crate) fn mark_dirty<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = dirty.as_mut() {
            set.extend(ids.into_iter().map(str::to_owned));
        }
    }
}

/// Turns dirty tracking off however a snapshot ends.
pub(super) struct Tracking<'a>(&'a Trees);

impl Tracking<'_> {
    /// Starts noting the trace IDs writers touch. Call it with the exclusive gate held.
    pub(super) fn start(trees: &Trees) -> Tracking<'_> {
        *trees.dirty.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashSet::new());
        Tracking(trees)
    }

    /// Gives the trace IDs written since tracking started (or was last renewed) and goes on
    /// with an empty set. Call it with the exclusive gate held, so that every writer that
    /// noted an ID given here has committed.
    pub(super) fn renew(&self) -> HashSet<String> {
        let mut dirty = self.0.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.replace(HashSet::new()).unwrap_or_default()
    }

    /// Ends tracking and gives the trace IDs written since it started.
    pub(super) fn take(&self) -> HashSet<String> {
        let mut dirty = self.0.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.take().unwrap_or_default()
    }
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        self.take();
    }
}

fn copy_tree(
    from: &sled::Tree,
    to: &sled::Tree,
    progress: &dyn Fn(u64),
    copied: &mut u64,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for item in from.iter() {
        let (k, v) = item?;
        batch.insert(k, v);
        in_batch += 1;
        if in_batch == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            *copied += in_batch as u64;
            in_batch = 0;
            progress(*copied);
        }
    }
    to.apply_batch(batch)?;
    *copied += in_batch as u64;
    progress(*copied);
    Ok(())
}

/// Opens a data directory with the store's sled settings but none of its machinery (no
/// committer, no requeue): for copies being written or checked. The settings must match the
/// ones the directory was created with, or sled refuses to open it.
pub fn open_raw(dir: &Path) -> Result<sled::Db, StoreError> {
    super::open_sled(dir)
}

/// flush + fdatasync of `<dir>/db` and an fsync of the directory: makes a copy durable.
pub fn sync_raw(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    db.flush()?;
    let io = |source| StoreError::Prepare {
        path: dir.to_path_buf(),
        source,
    };
    File::open(dir.join("db"))
        .and_then(|f| f.sync_data())
        .map_err(io)?;
    fsync_dir(dir).map_err(io)
}

impl Store {
    /// Runs `f` while no write can start or be in progress (see the module doc).
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        loop {
            let g = self.gen();
            // Moved: a compaction swapped databases while this waited; the gate is the same.
            let Ok(_gate) = g.trees.exclusive_gate() else {
                continue;
            };
            return f();
        }
    }

    /// The names of every tree in the database, sled's default tree included.
    pub fn tree_names(&self) -> Vec<sled::IVec> {
        self.gen().syncer.db.tree_names()
    }

    /// Opens a tree by name (for ops scans of every tree).
    pub fn open_tree(&self, name: &[u8]) -> Result<sled::Tree, StoreError> {
        Ok(self.gen().syncer.db.open_tree(name)?)
    }

    /// Copies the store, as it is at one instant, into `dest` (open on an empty directory).
    /// Writers wait only for the final patch-up (see the module doc). `progress` gets the
    /// items copied so far.
    pub fn copy_into(&self, dest: &sled::Db, progress: &dyn Fn(u64)) -> Result<u64, StoreError> {
        let copy =
            self.copy_at_instant(dest.clone(), progress, |d| Ok(Some(d)), |_, _, _| Ok(()))?;
        let (copied, ()) = copy.expect("a backup always goes on to the instant");
        Ok(copied)
    }

    /// The copy of [`Store::copy_into`]. `go_on` gets the copy once its bulk is copied and
    /// indexed, before writers are held off, and gives back the copy to go on with (the same,
    /// or reopened) or ends the copy there (`None`). `at_instant` runs last, with writers
    /// still held off, on the database copied, the copy (its only handle left) and the moment
    /// writers were held off: what it does happens at the instant the copy shows. One copy
    /// runs at a time.
    pub(super) fn copy_at_instant<R>(
        &self,
        dest: sled::Db,
        progress: &dyn Fn(u64),
        go_on: impl FnOnce(sled::Db) -> Result<Option<sled::Db>, StoreError>,
        at_instant: impl FnOnce(&Arc<Gen>, sled::Db, Instant) -> Result<R, StoreError>,
    ) -> Result<Option<(u64, R)>, StoreError> {
        let _one = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        let g = self.gen();
        let src = &g.syncer.db;
        let tracking = {
            let _gate = g.trees.exclusive_gate()?;
            Tracking::start(&g.trees)
        };
        let mut copied = 0u64;
        for name in TRACKED.into_iter().chain([BODIES]) {
            copy_tree(
                &src.open_tree(name)?,
                &dest.open_tree(name)?,
                progress,
                &mut copied,
            )?;
        }
        // The indexes are built before writers are held off; under the gate only the records
        // written meanwhile are patched, so the hold grows with those writes, not the store.
        index_copy(&dest)?;
        dest.flush()?;
        let Some(dest) = go_on(dest)? else {
            return Ok(None);
        };
        // Copies never overlap and a compaction swaps only inside one, so `g` is current.
        let _gate = g.trees.exclusive_gate()?;
        let held_from = Instant::now();
        let dirty = tracking.take();
        {
            // Scoped: a tree handle keeps the copy open, and `at_instant` gets its last one.
            let copy = Patch::open(&dest)?;
            for id in &dirty {
                match g.trees.quarantine.get(id)? {
                    Some(v) => copy.quarantine.insert(id.as_bytes(), v)?,
                    None => copy.quarantine.remove(id.as_bytes())?,
                };
                copy.replace(id, g.trees.entries.get(id)?, &g.trees.bodies)?;
            }
        }
        for name in src.tree_names() {
            let n = String::from_utf8_lossy(&name);
            if !TRACKED.contains(&&*n) && !INDEXES.contains(&&*n) && n != BODIES {
                copy_tree(
                    &src.open_tree(&name)?,
                    &dest.open_tree(&name)?,
                    progress,
                    &mut copied,
                )?;
            }
        }
        tracing::info!(
            rewritten = dirty.len(),
            "snapshot: records written during the copy re-copied"
        );
        Ok(Some((copied, at_instant(&g, dest, held_from)?)))
    }

    /// Removes one quarantined copy (privacy erasure), moving it from the quarantined count
    /// to the purged count in the same transaction. Returns whether it existed.
    pub fn drop_quarantined(&self, key: &[u8]) -> Result<bool, StoreError> {
        use sled::transaction::ConflictableTransactionError as E;
        use sled::Transactional;
        self.on_current(|g| {
            let t = &g.trees;
            let _gate = t.write_gate()?;
            t.mark_dirty([String::from_utf8_lossy(key).as_ref()]);
            let found = (&t.quarantine, &t.counters)
                .transaction(|(q, c)| {
                    if q.remove(key)?.is_none() {
                        return Ok(false);
                    }
                    let mut d = counters::Deltas::default();
                    d.add(counters::QUARANTINED, -1);
                    d.add(counters::PURGED, 1);
                    d.apply(c)?;
                    Ok::<_, E<()>>(true)
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                    sled::transaction::TransactionError::Abort(()) => unreachable!("never aborts"),
                })?;
            Ok(found)
        })
    }

    /// Bodies no record points to, with their bytes. Transactions keep records and bodies in
    /// step, so only a hand edit or a damaged record leaves one. Bodies whose key was handed
    /// out after the scan began are not considered. Exact only with writers held off
    /// ([`Store::exclusive`]): a transaction that took its body key before the scan began and
    /// commits during it may show its body here. Keys are never handed out twice while the
    /// store is open, so a body found here with writers held off stays without a record.
    pub fn orphan_bodies(&self) -> Result<Vec<(u64, sled::IVec)>, StoreError> {
        let last = self.last_body_key();
        let mut referenced = HashSet::new();
        for item in self.gen().trees.entries.iter() {
            let (_, v) = item?;
            if let Ok(e) = record::decode_entry(&v) {
                referenced.extend(e.body_key());
            }
        }
        self.bodies_not_in(&referenced, last)
    }

    /// The last `bodies` key handed out so far: the bound of an orphan scan that starts now.
    pub(super) fn last_body_key(&self) -> u64 {
        self.gen()
            .trees
            .next_body
            .load(std::sync::atomic::Ordering::SeqCst)
            .saturating_sub(1)
    }

    /// Bodies with keys up to `last` that are not in `referenced` (see
    /// [`Store::orphan_bodies`]).
    pub(super) fn bodies_not_in(
        &self,
        referenced: &HashSet<u64>,
        last: u64,
    ) -> Result<Vec<(u64, sled::IVec)>, StoreError> {
        let mut orphans = Vec::new();
        for item in self.gen().trees.bodies.range(..=record::body_key(last)) {
            let (k, v) = item?;
            let key = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            if !referenced.contains(&key) {
                orphans.push((key, v));
            }
        }
        Ok(orphans)
    }

    /// Removes a body found by [`Store::orphan_bodies`] (erasure).
    pub fn drop_orphan_body(&self, key: u64) -> Result<bool, StoreError> {
        self.on_current(|g| {
            let _gate = g.trees.write_gate()?;
            Ok(g.trees.bodies.remove(record::body_key(key))?.is_some())
        })
    }

    /// Moves a body found by [`Store::orphan_bodies`] into the quarantined copy of its record
    /// (as `original_body_hex`), where an operator finds it beside the state that did not
    /// decode. Returns the trace ID, or `None` (body left as it is) if the body does not say
    /// whose it is or no quarantined record has that trace ID.
    pub fn attach_orphan_body(&self, key: u64) -> Result<Option<String>, StoreError> {
        use sled::transaction::ConflictableTransactionError as E;
        use sled::Transactional;
        self.on_current(|g| {
            let t = &g.trees;
            let k = record::body_key(key);
            let Some(bytes) = t.bodies.get(k)? else {
                return Ok(None);
            };
            let Ok(body) = record::decode_body(&bytes) else {
                return Ok(None);
            };
            let id = body.trace_id;
            let _gate = t.write_gate()?;
            t.mark_dirty([id.as_str()]);
            let attached = (&t.quarantine, &t.bodies)
                .transaction(|(q, b)| {
                    let Some(doc) = q.get(id.as_bytes())? else {
                        return Ok(false);
                    };
                    let Some(raw) = b.remove(&k)? else {
                        return Ok(false);
                    };
                    let mut doc: serde_json::Value =
                        serde_json::from_slice(&doc).unwrap_or_else(|_| serde_json::json!({}));
                    doc["original_body_hex"] = hex::encode(&raw).into();
                    q.insert(id.as_bytes(), serde_json::to_vec(&doc).expect("json"))?;
                    Ok::<_, E<()>>(true)
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                    sled::transaction::TransactionError::Abort(()) => unreachable!("never aborts"),
                })?;
            Ok(attached.then_some(id))
        })
    }
}

/// Builds the index trees of a copy from its records (they are a function of the records),
/// and drops the bodies no record of the copy points to.
pub(super) fn index_copy(dest: &sled::Db) -> Result<(), StoreError> {
    let copy = Patch::open(dest)?;
    let mut referenced = HashSet::new();
    for item in copy.entries.iter() {
        let (_, v) = item?;
        if let Ok(e) = record::decode_entry(&v) {
            index_into(&copy.due, &copy.queue, &copy.done, &e)?;
            referenced.extend(e.body_key());
        }
    }
    for k in copy.bodies.iter().keys() {
        let k = k?;
        let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
        if !referenced.contains(&seq) {
            copy.bodies.remove(k)?;
        }
    }
    Ok(())
}

/// A copy's trees that follow `entries`: indexed from it, and patched one record at a time.
struct Patch {
    entries: sled::Tree,
    quarantine: sled::Tree,
    bodies: sled::Tree,
    due: sled::Tree,
    queue: sled::Tree,
    done: sled::Tree,
}

impl Patch {
    fn open(db: &sled::Db) -> Result<Patch, StoreError> {
        Ok(Patch {
            entries: db.open_tree("entries")?,
            quarantine: db.open_tree("quarantine")?,
            bodies: db.open_tree(BODIES)?,
            due: db.open_tree("due")?,
            queue: db.open_tree("queue")?,
            done: db.open_tree("done")?,
        })
    }

    /// Makes the record `id` what `now` is (`None`: gone), with its index entries and its
    /// body (from `bodies`), undoing what the copy held for it.
    fn replace(
        &self,
        id: &str,
        now: Option<sled::IVec>,
        bodies: &sled::Tree,
    ) -> Result<(), StoreError> {
        if let Some(before) = self.entries.get(id)? {
            if let Ok(e) = record::decode_entry(&before) {
                let (d, q, dn) = entry_index_keys(&e);
                for (tree, keys) in [(&self.due, d), (&self.queue, q), (&self.done, dn)] {
                    for k in keys {
                        tree.remove(k)?;
                    }
                }
                if let Some(k) = e.body_key() {
                    self.bodies.remove(record::body_key(k))?;
                }
            }
        }
        let Some(now) = now else {
            self.entries.remove(id)?;
            return Ok(());
        };
        self.entries.insert(id, &now)?;
        // An entry that does not decode is copied as it is, unindexed (as `index_copy` does).
        if let Ok(e) = record::decode_entry(&now) {
            index_into(&self.due, &self.queue, &self.done, &e)?;
            if let Some(k) = e.body_key().map(record::body_key) {
                if let Some(v) = bodies.get(k)? {
                    self.bodies.insert(k, v)?;
                }
            }
        }
        Ok(())
    }
}

/// The index entries a stored record owns, as `tx::write` makes them.
pub(super) fn index_into(
    due: &sled::Tree,
    queue: &sled::Tree,
    done: &sled::Tree,
    e: &record::Entry,
) -> Result<(), StoreError> {
    let (d, q, dn) = entry_index_keys(e);
    for k in d {
        due.insert(k, &[keys::status_byte(e.state().status)])?;
    }
    for k in q {
        queue.insert(k, &[])?;
    }
    for k in dn {
        done.insert(k, &[])?;
    }
    Ok(())
}

/// The index keys of a stored record. Its state leaves the payload to the body, and a
/// delivered record keeps a body only while it holds its payload ([`record::has_body`]).
fn entry_index_keys(e: &record::Entry) -> IndexKeys {
    let r = e.state();
    index_keys(r, r.payload.is_some() || e.body_key().is_some())
}

/// Keys of the `due`, `queue` and `done` trees, in that order.
pub type IndexKeys = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The index keys a record in this state must have, for checks.
pub fn expected_index_keys(r: &Record) -> IndexKeys {
    index_keys(r, r.payload.is_some())
}

fn index_keys(r: &Record, holds_payload: bool) -> IndexKeys {
    let done = done_keys(r, holds_payload);
    if !r.status.is_queued() {
        return (vec![], vec![], done);
    }
    let queue = if r.in_queue_index() {
        vec![keys::time_key(r.received_at_ms, &r.trace_id)]
    } else {
        vec![]
    };
    (
        vec![keys::time_key(r.next_attempt_at_ms, &r.trace_id)],
        queue,
        done,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{sample, Status};
    use crate::store::Change;
    use std::cell::Cell;

    #[test]
    fn a_body_left_by_a_lost_state_goes_to_quarantine_with_its_record() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        let recs = [sample("trace-orph-1"), sample("trace-orph-2")];
        super::super::tx::submit_batch(&s.gen().trees, &recs).unwrap();
        assert!(s.orphan_bodies().unwrap().is_empty());
        // The first record's state is damaged: it can no longer say where its body is.
        s.gen()
            .trees
            .entries
            .insert("trace-orph-1", &[3, 0xff])
            .unwrap();
        let orphans = s.orphan_bodies().unwrap();
        assert_eq!(orphans.len(), 1);
        let (key, bytes) = orphans[0].clone();
        assert_eq!(
            record::decode_body(&bytes).unwrap().trace_id,
            "trace-orph-1"
        );
        assert_eq!(
            s.attach_orphan_body(key).unwrap(),
            None,
            "nothing to attach it to yet"
        );
        // Quarantine finds the body by the trace ID it carries and keeps it with the state.
        s.quarantine("trace-orph-1", "test").unwrap();
        assert!(s.orphan_bodies().unwrap().is_empty());
        let doc = |s: &Store| -> serde_json::Value {
            serde_json::from_slice(
                &s.gen()
                    .trees
                    .quarantine
                    .get("trace-orph-1")
                    .unwrap()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(doc(&s)["original_body_hex"], hex::encode(&bytes));
        assert_eq!(doc(&s)["original_hex"], "03ff");
        let second = s.get("trace-orph-2").unwrap().unwrap();
        assert_eq!(
            second.payload, recs[1].payload,
            "the other record is untouched"
        );
        // A stray body of a quarantined record (a hand edit) is moved to it by repair.
        s.gen()
            .trees
            .bodies
            .insert(record::body_key(99), &bytes)
            .unwrap();
        assert_eq!(
            s.orphan_bodies().unwrap().len(),
            0,
            "written after the scan's bound"
        );
        s.gen()
            .trees
            .next_body
            .store(100, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(s.orphan_bodies().unwrap()[0].0, 99);
        assert_eq!(
            s.attach_orphan_body(99).unwrap().as_deref(),
            Some("trace-orph-1")
        );
        assert!(s.orphan_bodies().unwrap().is_empty());
    }

    /// Every tree by name, with its items.
    type Dump = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

    fn dump(db: &sled::Db) -> Dump {
        let mut names: Vec<_> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let items = db
                    .open_tree(&n)
                    .unwrap()
                    .iter()
                    .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                    .collect();
                (n, items)
            })
            .collect()
    }

    /// A new store in a temporary directory with `n` pending records, `trace-0000` onwards.
    fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        let recs: Vec<_> = (0..n).map(|i| sample(&format!("trace-{i:04}"))).collect();
        super::super::tx::submit_batch(&s.gen().trees, &recs).unwrap();
        (tmp, s)
    }

    #[test]
    fn writes_made_while_a_snapshot_copies_are_in_it() {
        let (tmp, s) = store_with(50);
        let dest = open_raw(&tmp.path().join("copy")).unwrap();
        let first = Cell::new(true);
        // The first progress call comes after `entries` was read: everything written here
        // reaches the copy only through the dirty-ID patch-up.
        s.copy_into(&dest, &|_| {
            if first.replace(false) {
                super::super::tx::submit_batch(&s.gen().trees, &[sample("trace-late")]).unwrap();
                s.update("trace-0001", |r| {
                    let mut n = r.clone();
                    n.status = Status::Dead;
                    Change::Put(n)
                })
                .unwrap();
                s.update("trace-0002", |_| Change::Purge).unwrap();
                s.gen()
                    .trees
                    .entries
                    .insert("trace-0003", &[1, 0xff])
                    .unwrap();
                s.quarantine("trace-0003", "test").unwrap();
            }
        })
        .unwrap();
        assert!(!first.get(), "progress was reported");
        assert!(
            s.gen().trees.dirty.lock().unwrap().is_none(),
            "tracking is off again"
        );
        // The raw overwrite of trace-0003 left its body (the fourth) without a record: the
        // copy drops it and is otherwise equal.
        let mut want = dump(&s.gen().syncer.db);
        for (name, items) in &mut want {
            if name.as_slice() == BODIES.as_bytes() {
                items.retain(|(k, _)| k.as_slice() != record::body_key(4));
            }
        }
        assert!(dump(&dest) == want, "the copy equals the store");
    }

    #[test]
    fn writes_made_after_the_copy_was_indexed_move_its_index_entries() {
        let (tmp, s) = store_with(20);
        let put = |id: &str, f: &dyn Fn(&mut Record)| {
            s.update(id, |r| {
                let mut n = r.clone();
                f(&mut n);
                Change::Put(n)
            })
            .unwrap();
        };
        // Delivered before the copy, payload kept: the copy's `done` index has a tombstone
        // and a holds-payload entry for each.
        for id in ["trace-0004", "trace-0006"] {
            put(id, &|n| {
                n.status = Status::Delivered;
                n.delivered_at_ms = Some(1_700_000_100_000);
            });
        }
        let dest = open_raw(&tmp.path().join("copy")).unwrap();
        let indexed = Cell::new(false);
        let copied = s.copy_at_instant(
            dest,
            &|_| {},
            |dest| {
                // The copy's indexes are built from the records as they were copied.
                let due = dest.open_tree("due").unwrap();
                indexed.set(due.len() == 18 && dest.open_tree("done").unwrap().len() == 4);
                super::super::tx::submit_batch(&s.gen().trees, &[sample("trace-late")]).unwrap();
                put("trace-0001", &|n| {
                    n.status = Status::Delivered;
                    n.delivered_at_ms = Some(1_700_000_200_000);
                });
                put("trace-0002", &|n| {
                    n.attempts = 1;
                    n.next_attempt_at_ms += 60_000;
                });
                put("trace-0003", &|n| n.status = Status::Dead);
                s.update("trace-0004", |_| Change::Purge).unwrap();
                s.update("trace-0005", |_| Change::Purge).unwrap();
                Ok(Some(dest))
            },
            |_, dest, _| Ok(dump(&dest)),
        );
        let (_, copy) = copied.unwrap().unwrap();
        assert!(
            indexed.get(),
            "indexes were built before writers were held off"
        );
        assert!(
            copy == dump(&s.gen().syncer.db),
            "the copy equals the store, indexes and bodies included"
        );
        let queue = s.gen().trees.queue.len();
        assert_eq!(queue, 1, "the retried record is in the queue index");
    }

    #[test]
    fn rebuilt_indexes_keep_a_delivered_record_that_holds_its_payload() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("data")).unwrap();
        super::super::tx::submit_batch(&s.gen().trees, &[sample("trace-kept")]).unwrap();
        s.update("trace-kept", |r| {
            let mut n = r.clone();
            n.status = Status::Delivered;
            n.delivered_at_ms = Some(1_700_000_100_000);
            Change::Put(n)
        })
        .unwrap();
        let before = dump(&s.gen().syncer.db);
        s.rebuild_indexes().unwrap();
        assert_eq!(
            s.gen().trees.done.len(),
            2,
            "tombstone and holds-payload keys"
        );
        let indexes = |d: Dump| -> Dump {
            d.into_iter()
                .filter(|(n, _)| INDEXES.iter().any(|i| i.as_bytes() == n.as_slice()))
                .collect()
        };
        assert!(
            indexes(dump(&s.gen().syncer.db)) == indexes(before),
            "a rebuild of sound indexes changes none"
        );
        assert_eq!(s.check(&|_, _| {}).unwrap().problems, Vec::<String>::new());
    }
}
