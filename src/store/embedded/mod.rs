//! The embedded engine behind the store boundary: sled 0.34.7 in the data directory.
//!
//! # Trees
//! | tree         | key                                   | value                                  |
//! |--------------|---------------------------------------|----------------------------------------|
//! | `entries`    | trace ID (UTF-8)                      | format byte + postcard: the state (see [`record`]) |
//! | `bodies`     | sequence number (u64 BE)              | format byte + postcard: payload, client (see [`record`]) |
//! | `due`        | next attempt ms (u64 BE) ++ trace ID   | one status byte (`p`, `i`)             |
//! | `queue`      | received ms (u64 BE) ++ trace ID       | empty                                  |
//! | `counters`   | counter name                           | u64 BE                                 |
//! | `quarantine` | original key                           | JSON [`read::QuarantineEntry`]         |
//! | `done`       | `t`/`p` ++ delivered ms (u64 BE) ++ ID | empty (see [`done`])                   |
//! | `meta`       | `format`                              | store format (u64 BE, see [`mod@format`])  |
//! | `meta`       | `rebuilding`                          | present while indexes are rebuilt (see [`rebuild`]) |
//!
//! `entries` is the source of truth. A record is in `due` exactly while its status is pending
//! (or in flight, in stores from releases that wrote claims; see [`claims`]). `queue` orders by arrival the queued records that `due` cannot: those whose due
//! time is no longer their receipt time ([`Record::in_queue_index`]). A new submission is due
//! at its receipt time, so intake writes no `queue` entry; its first claim adds one. The oldest
//! queued receipt time is then the earlier of `queue`'s first key and `due`'s first key when
//! that record is still fresh (see [`Store::oldest_queued_ms`]).
//! Every change to a record, its index entries and the counters is one sled transaction.
//!
//! # A record's life in writes
//! - intake: the state (~150 bytes), the body (payload and client, once) and one `due` key
//!   (and the counters), in the committer's batch;
//! - claim: nothing (claims are held in memory, see [`claims`]);
//! - delivery: the state rewritten as delivered, the body removed, its `due` key removed and
//!   one `done` key added, in one transaction for the worker's step; while intake runs, in
//!   the committer's next transaction beside that group commit's submissions instead (every
//!   sled transaction writes the log buffer out twice, whatever it carries);
//! - a failed attempt: the state with its retry state, its `due` key moved and a `queue` key
//!   (see above); the body stays as it is;
//! - purge after the idempotency window: the state and its `done` key removed.
//!
//! Bodies are keyed in arrival order, so they are added at one end of their tree and removed
//! from the other as the backlog drains. Against records kept whole (benches/README.md): a
//! drain runs 17 to 22% faster, and the disk takes about 15% more bytes per record (two values
//! with their own log headers instead of one).
//!
//! # Durability
//! sled's `flush()` is not an fsync (it ends in `sync_file_range`). A submission is answered
//! only after the group committer ([`committer`]) has run `flush()` and then `fdatasync` on
//! `<data-dir>/db`, the file sled writes its log into. Segments are 8 MiB and bodies are
//! capped well below 2 MiB so that no value ever goes to sled's never-fsynced `blobs/` files.

pub mod check;
pub mod claims;
mod committer;
pub mod compaction;
pub mod done;
pub mod format;
pub mod keys;
pub mod maintenance;
mod moved;
mod quarantine;
pub mod read;
mod rebuild;
mod sled_store;
pub mod space;
mod tx;

pub use read::{Entry, QuarantineEntry, Quarantined, Undecodable};

// The shared lifecycle, under the names the engine's modules use for it (`super::record`).
use super::{counters, lifecycle, record};
use super::{Change, Claimed, Counts, Record, Status, SubmitOutcome, Updated};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// sled's page cache budget. It counts on-disk page bytes, and a cached page takes more in
/// memory. Draining 1M pending (`cargo bench --bench resources`), RSS peaked at 209.8 MiB
/// with 64 MiB, 144.5 with 24 and 136.2 with 16, at 2,134, 2,110 and 2,043 deliveries/s: the
/// records a drain reads are read once, and the OS page cache holds the log file anyway. Once
/// the worker drained four times faster, 24 MiB gave 155.6 MiB at 8,474/s and 12 MiB 136.3 at
/// 8,525/s (about 122 for most of the drain). 4 and 6 MiB: see benches/README.md.
const CACHE_CAPACITY: u64 = 12 << 20;
/// Fixed at creation. Items over about a quarter segment go to unsynced blob files, so this
/// must stay far above the largest record (bodies are capped at 1 MiB by configuration).
const SEGMENT_SIZE: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {0} is in use by another outbox process; stop it, or use the ops commands, which talk to it")]
    InUse(PathBuf),
    #[error("cannot prepare data directory {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} was written by a newer outbox (store format {found}; this release reads formats up to {known}): run that release or a newer one, or restore a backup taken before the upgrade")]
    NewerFormat {
        path: PathBuf,
        found: u64,
        known: u64,
    },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("writing to disk failed ({0}); the store stopped acknowledging writes: fix the disk and restart outbox")]
    Sync(String),
    #[error("the submission could not be stored ({0}); retry later")]
    Commit(String),
    #[error("record {trace_id} does not decode: {reason}")]
    Undecodable { trace_id: String, reason: String },
    #[error("the store is shutting down")]
    Closed,
    /// A writer got the gate after a compaction replaced its database; it goes again on the
    /// new one and this never reaches a caller outside the store.
    #[error("the store was compacted while this ran; run it again")]
    Moved,
    /// The disk has too little free space for what was asked; the text says how much.
    #[error("{0}")]
    NoRoom(String),
    /// A capability of the store boundary this engine does not have; the text says what
    /// does that job instead.
    #[error("{0}")]
    NotSupported(&'static str),
    /// A change that must not be skipped (an erasure) waited this long for the delivery of
    /// the record to end.
    #[error("record {trace_id} was being delivered for over {waited:?}; run the erasure again")]
    StillDelivering {
        trace_id: String,
        waited: std::time::Duration,
    },
}

/// Whether the store can still make writes durable. Once a flush or fdatasync fails it stays
/// failed: after a failed fsync the kernel may have dropped dirty pages, so later successes
/// would not prove that earlier writes reached the disk.
#[derive(Debug, Default)]
pub struct SyncHealth {
    failed: AtomicBool,
    error: Mutex<Option<String>>,
}

impl SyncHealth {
    pub fn is_ok(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }
    /// Latches the first failure and logs it once.
    fn fail(&self, e: String) {
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            tracing::error!(error = %e, "the store can no longer make writes durable; acknowledgements stop until restart");
            *slot = Some(e);
            self.failed.store(true, Ordering::Release);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Trees {
    pub entries: sled::Tree,
    pub due: sled::Tree,
    pub queue: sled::Tree,
    pub counters: sled::Tree,
    pub quarantine: sled::Tree,
    pub done: sled::Tree,
    pub bodies: sled::Tree,
    /// The next `bodies` key: one past the last at open, then counted up.
    pub next_body: Arc<AtomicU64>,
    /// Writers hold it shared, point-in-time copies exclusively (see [`maintenance`]).
    pub gate: Arc<RwLock<()>>,
    /// Trace IDs written while a snapshot is copied (see [`maintenance`]).
    pub dirty: Arc<Mutex<Option<std::collections::HashSet<String>>>>,
    /// Set when a compaction has put a fresh database in place of this one; writers that
    /// then get the gate go again on the current one (see [`compaction`]).
    pub retired: Arc<AtomicBool>,
}

impl Trees {
    /// The next unused `bodies` key.
    pub(crate) fn next_body_key(&self) -> u64 {
        self.next_body.fetch_add(1, Ordering::Relaxed)
    }

    /// Decodes an `entries` value into the whole record, reading its body if stored apart.
    pub(crate) fn decode(&self, value: &[u8]) -> Result<Record, record::DecodeError> {
        self.complete(record::decode_entry(value)?)
    }

    /// The whole record of a decoded `entries` value, its body read if stored apart.
    pub(crate) fn complete(&self, entry: record::Entry) -> Result<Record, record::DecodeError> {
        let body = match entry.body_key() {
            Some(k) => self
                .bodies
                .get(record::body_key(k))
                .map_err(|e| record::DecodeError::BodyRead(e.to_string()))?,
            None => None,
        };
        entry.complete(body.as_deref())
    }

    /// The whole record under `trace_id`, as stored.
    pub(crate) fn read(&self, trace_id: &str) -> Result<Option<Record>, StoreError> {
        let Some(v) = self.entries.get(trace_id)? else {
            return Ok(None);
        };
        self.decode(&v)
            .map(Some)
            .map_err(|e| StoreError::Undecodable {
                trace_id: trace_id.into(),
                reason: e.to_string(),
            })
    }
}

/// The time part of a time-keyed index's first key.
fn first_time(tree: &sled::Tree) -> sled::Result<Option<i64>> {
    Ok(tree
        .first()?
        .and_then(|(k, _)| keys::split_time_key(&k).map(|(t, _)| t)))
}

/// Makes sled's log durable: `flush()` then `fdatasync` on `<data-dir>/db`.
pub(crate) struct Syncer {
    db: sled::Db,
    log: File,
    health: Arc<SyncHealth>,
}

impl Syncer {
    pub fn sync(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.sync_data()
    }

    /// Writes sled's log buffers to the file (sled's `flush()`: a write and a
    /// `sync_file_range`, not a durable sync on its own). While it waits for the disk it
    /// holds sled's global lock shared, so no transaction can commit meanwhile.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.checked(|| self.db.flush().map(drop).map_err(|e| e.to_string()))
    }

    /// `fdatasync` of the log file: makes durable what earlier `flush` calls wrote. Takes no
    /// sled lock, so it runs beside the next transaction.
    pub fn sync_data(&self) -> Result<(), StoreError> {
        self.checked(|| self.log.sync_data().map_err(|e| e.to_string()))
    }

    fn checked(&self, step: impl FnOnce() -> Result<(), String>) -> Result<(), StoreError> {
        if let Some(e) = self.health.error() {
            return Err(StoreError::Sync(e));
        }
        step().map_err(|e| {
            self.health.fail(e.clone());
            StoreError::Sync(e)
        })
    }

    /// Records a storage I/O error met outside `sync` (sled latches them: every later write
    /// fails the same way, so the store is done until a restart).
    pub fn fail(&self, e: String) {
        self.health.fail(e);
    }

    pub fn failure(&self) -> Option<String> {
        self.health.error()
    }
}

/// The sled database the store runs on, and its handles. A compaction replaces it whole
/// (see [`compaction`]); the write gate, dirty tracking, body keys and sync health carry over.
pub(crate) struct Gen {
    pub trees: Trees,
    pub syncer: Syncer,
}

/// The current [`Gen`]. Read it for each use: a handle kept across a compaction reads the
/// database it replaced, and a writer on it gets [`StoreError::Moved`].
pub(crate) type Current = Arc<RwLock<Arc<Gen>>>;

/// The database `current` holds now.
pub(crate) fn gen_of(current: &Current) -> Arc<Gen> {
    current.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// [`Store::on_current`] for holders of `current` alone (the committer).
pub(crate) fn on_current<R>(
    current: &Current,
    write: impl Fn(&Gen) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    loop {
        match write(&gen_of(current)) {
            Err(StoreError::Moved) => continue,
            r => return r,
        }
    }
}

/// Opens the sled database in `dir` with the store's fixed settings, and nothing else.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY)
        .segment_size(SEGMENT_SIZE)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                StoreError::InUse(dir.to_path_buf())
            }
            other => StoreError::Sled(other),
        })
}

/// Opens a database once the previous handles on its directory are gone: sled releases its
/// lock on a closed database when its last background user lets go, which can take a moment.
pub(crate) fn when_released<T>(open: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

impl Gen {
    /// Opens the sled database in `dir` with the store's settings. The shared parts come from
    /// `like` (the database being replaced), or are new.
    fn open(dir: &Path, like: Option<&Gen>) -> Result<Gen, StoreError> {
        let db = open_sled(dir)?;
        let log = File::open(dir.join("db")).map_err(|source| StoreError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
        format::check_and_mark(&db, dir)?;
        let bodies = db.open_tree("bodies")?;
        let (gate, dirty, next_body, health) = match like {
            Some(g) => (
                g.trees.gate.clone(),
                g.trees.dirty.clone(),
                g.trees.next_body.clone(),
                g.syncer.health.clone(),
            ),
            None => (
                Arc::default(),
                Arc::default(),
                Arc::new(AtomicU64::new(format::next_body_key(&bodies)?)),
                Arc::default(),
            ),
        };
        let trees = Trees {
            entries: db.open_tree("entries")?,
            due: db.open_tree("due")?,
            queue: db.open_tree("queue")?,
            counters: db.open_tree("counters")?,
            quarantine: db.open_tree("quarantine")?,
            done: db.open_tree("done")?,
            next_body,
            bodies,
            gate,
            dirty,
            retired: Arc::default(),
        };
        Ok(Gen {
            trees,
            syncer: Syncer { db, log, health },
        })
    }
}

pub struct Store {
    path: PathBuf,
    current: Current,
    committer: committer::Committer,
    claims: claims::Claims,
    /// Held by a point-in-time copy (backup, compaction) from start to end.
    copying: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let fresh = prepare_dir(dir)?;
        space::check_room_to_open(dir).map_err(|source| StoreError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
        let gen = Gen::open(dir, None)?;
        let prep = |source| StoreError::Prepare {
            path: dir.to_path_buf(),
            source,
        };
        if fresh {
            // New directory entries (conf, db, the data directory itself) must be durable too.
            fsync_dir(dir).map_err(prep)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent).map_err(prep)?;
            }
        }
        let current: Current = Arc::new(RwLock::new(Arc::new(gen)));
        let committer = committer::Committer::start(current.clone());
        let store = Store {
            path: dir.to_path_buf(),
            current,
            committer,
            claims: claims::Claims::default(),
            copying: Mutex::default(),
        };
        store.finish_interrupted_rebuild()?;
        let requeued = store.requeue_in_flight()?;
        if requeued > 0 {
            tracing::warn!(requeued, "records in flight at the last stop are due again");
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sync_health(&self) -> Arc<SyncHealth> {
        self.gen().syncer.health.clone()
    }

    /// The database the store runs on now.
    pub(crate) fn gen(&self) -> Arc<Gen> {
        gen_of(&self.current)
    }

    /// Runs a write on the current database, again on the next one if a compaction replaced
    /// it while the write waited for the gate ([`StoreError::Moved`] comes before any change).
    pub(crate) fn on_current<R>(
        &self,
        write: impl Fn(&Gen) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        on_current(&self.current, write)
    }

    /// Stores a new record durably, or reports the existing one under its trace ID.
    /// Resolves only after the group commit that covers it has been fsynced.
    pub async fn submit(&self, record: Record) -> Result<SubmitOutcome, StoreError> {
        self.committer.submit(record).await
    }

    /// flush + fdatasync now (shutdown, backups, tests).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.gen().syncer.sync()
    }

    /// The record under `trace_id`, shown as in flight while the delivery worker sends it.
    pub fn get(&self, trace_id: &str) -> Result<Option<Record>, StoreError> {
        let Some(mut r) = self.gen().trees.read(trace_id)? else {
            return Ok(None);
        };
        if r.status == Status::Pending && self.is_claimed(trace_id) {
            r.status = Status::InFlight;
        }
        Ok(Some(r))
    }

    /// The accounting counters. Claimed records are stored as pending and counted here as
    /// in flight (see [`claims`]).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let claims = self.claims.lock();
        let mut c = Counts::from_tree(&self.gen().trees.counters)?;
        let claimed = claims.len() as u64;
        c.pending = c.pending.saturating_sub(claimed);
        c.in_flight += claimed;
        Ok(c)
    }

    /// Receipt time (ms) of the oldest record still waiting for delivery: the earlier of the
    /// first keys of `due` and `queue`.
    ///
    /// Fresh records (never claimed) sit in `due` under their receipt time; every other queued
    /// record is in `queue` under its receipt time and in `due` under a later time. So if
    /// `due`'s first record is fresh, its key is the oldest fresh receipt; if it is not, it is
    /// in `queue` with an earlier key. `due` is read first: a claim in between moves a record
    /// from fresh into `queue`, never out of both.
    pub fn oldest_queued_ms(&self) -> Result<Option<i64>, StoreError> {
        let due = first_time(&self.gen().trees.due)?;
        let queue = first_time(&self.gen().trees.queue)?;
        Ok(match (due, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Time (ms) of the earliest next attempt, leases included.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(first_time(&self.gen().trees.due)?)
    }

    /// Up to `limit` trace IDs due at or before `now_ms`, earliest first.
    pub fn due_until(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let end = keys::time_key(now_ms.saturating_add(1), "");
        let mut out = Vec::new();
        for item in self.gen().trees.due.range(..end).take(limit) {
            let (k, _) = item?;
            if let Some((t, id)) = keys::split_time_key(&k) {
                out.push((t, id.to_owned()));
            }
        }
        Ok(out)
    }

    /// Sizes of the files in the data directory, in bytes, without a compaction's copy in
    /// the making (temporary; counting it would refuse intake under `--max-outbox-bytes`
    /// while space is being given back). Free-disk checks still see it.
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.path).saturating_sub(dir_size(&self.path.join(compaction::COMPACTING_DIR)))
    }
}

/// Creates `dir` (mode 0700) if needed, tightens its mode, and removes snapshot files that a
/// crash left half-written (sled 0.34.7 refuses to open with them). Returns whether the store
/// is new.
fn prepare_dir(dir: &Path) -> Result<bool, StoreError> {
    let prep = |source| StoreError::Prepare {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(prep)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(prep)?;
    compaction::remove_leftover(dir).map_err(prep)?;
    let fresh = !dir.join("db").exists();
    for entry in std::fs::read_dir(dir).map_err(prep)? {
        let name = entry.map_err(prep)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a snapshot file left by a crash");
            std::fs::remove_file(dir.join(&*name)).map_err(prep)?;
        }
    }
    Ok(fresh)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
