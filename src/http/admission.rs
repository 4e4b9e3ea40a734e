//! Admission control: intake answers 503 instead of filling the disk.
//!
//! Stored data is never deleted to make room. The limits are `max-pending` records waiting for
//! delivery, `max-outbox-bytes` for the data directory and `min-free-disk` on its filesystem.
//! They apply to new records only: the intake handler answers a retry of a stored submission
//! (its duplicate) even at a limit, and looks in the store only when a limit refuses, so the
//! request path below the limits reads nothing.
//! The data directory's size is sampled by [`Admission::refresh`] (once a second from the
//! app), so a request never walks the directory. Free space is read again at every admission
//! (one `statvfs`, about a microsecond): intake writes about 10 MiB a second with 3 KB forms
//! on a 2-core machine, so a figure up to a second old let the store take that much of the
//! room `min-free-disk` keeps for a drain and a compaction (measured on a 48 MiB tmpfs: 0 to
//! 20 MiB past the limit). Now the limit is passed only by the posts already admitted when it
//! is reached. With PostgreSQL only `max-pending` applies (there is no data directory): the
//! backlog comes from the sampler's probe ([`Admission::set_queued`]).

use super::error::ApiError;
use crate::config::LimitSettings;
use crate::store::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Admission {
    limits: LimitSettings,
    /// The embedded store's data directory, whose filesystem's free space every admission
    /// reads (`None` with PostgreSQL).
    data_dir: Option<PathBuf>,
    dir_bytes: AtomicU64,
    free_bytes: AtomicU64,
    /// Size of the data directory's filesystem (0 until sampled).
    fs_bytes: AtomicU64,
    /// Records waiting for delivery at the last sample.
    queued_sampled: AtomicU64,
    /// Submissions admitted since that sample. Counted whether or not they turn out to be
    /// new (duplicates too), and deliveries since the sample are not subtracted, so the sum
    /// only over-estimates: the cap holds without a store read on the request path.
    admitted_since: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    OutboxFull,
    DiskLow,
}

impl Admission {
    pub fn new(limits: LimitSettings, data_dir: Option<PathBuf>) -> Admission {
        Admission {
            limits,
            data_dir,
            dir_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
            fs_bytes: AtomicU64::new(0),
            queued_sampled: AtomicU64::new(0),
            admitted_since: AtomicU64::new(0),
        }
    }

    /// Samples the data directory's size, its filesystem's free space and the number of
    /// records waiting for delivery. A request admitted just before the sample but stored just
    /// after it is missed once, so the cap can be passed by at most the requests in flight.
    pub fn refresh(&self, store: &Store) {
        self.set_queued(store.counts().map(|c| c.pending + c.in_flight).unwrap_or(0));
        self.dir_bytes.store(store.disk_bytes(), Ordering::Relaxed);
        if let Some((free, total)) = disk_space(store.path()) {
            self.free_bytes.store(free, Ordering::Relaxed);
            self.fs_bytes.store(total, Ordering::Relaxed);
        }
    }

    /// Takes a new sample of the records waiting for delivery (all engines; the disk figures
    /// are the embedded store's only, and stay at "no limit reached" without it).
    pub fn set_queued(&self, queued: u64) {
        self.admitted_since.store(0, Ordering::Relaxed);
        self.queued_sampled.store(queued, Ordering::Relaxed);
    }

    /// Why `min-free-disk` refuses every post, in words for the log and health: it is larger
    /// than the whole filesystem (a setting to change), or more than is free now.
    pub fn disk_warning(&self) -> Option<String> {
        use crate::ops::text::size;
        let (min, free) = (self.limits.min_free_disk, self.free_bytes());
        let total = self.fs_bytes.load(Ordering::Relaxed);
        if total > 0 && min > total {
            return Some(format!(
                "min-free-disk can never be met: {} is larger than the whole filesystem holding the data directory ({}), so every post is refused with 503 disk_low; lower min-free-disk or move the data directory",
                size(min),
                size(total)
            ));
        }
        (free < min).then(|| {
            format!(
                "min-free-disk is not met now: {} free of the {} kept free on the filesystem holding the data directory ({} in all), so posts are refused with 503 disk_low until space is freed",
                size(free),
                size(min),
                size(total)
            )
        })
    }

    pub fn dir_bytes(&self) -> u64 {
        self.dir_bytes.load(Ordering::Relaxed)
    }

    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Relaxed)
    }

    /// The free space on the data directory's filesystem as of now (kept as the latest
    /// sample), or the last sample when it cannot be read.
    fn free_bytes_now(&self) -> u64 {
        let now = self.data_dir.as_deref().and_then(disk_space);
        match now {
            Some((free, _)) => {
                self.free_bytes.store(free, Ordering::Relaxed);
                free
            }
            None => self.free_bytes(),
        }
    }

    /// Why intake would be refused now, if it would.
    pub fn refusal(&self) -> Option<Refusal> {
        let min_free = self.limits.min_free_disk;
        if min_free > 0 && self.free_bytes_now() < min_free {
            return Some(Refusal::DiskLow);
        }
        if self.dir_bytes() >= self.limits.max_outbox_bytes {
            return Some(Refusal::OutboxFull);
        }
        let queued = self.queued_sampled.load(Ordering::Relaxed)
            + self.admitted_since.load(Ordering::Relaxed);
        (queued >= self.limits.max_pending).then_some(Refusal::OutboxFull)
    }

    /// Admits one submission, or says why not (nothing is counted as refused yet: the
    /// caller may still find that the submission is a retry of a stored one).
    pub fn admit(&self) -> Result<(), Refusal> {
        match self.refusal() {
            Some(r) => Err(r),
            None => {
                self.admitted_since.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

impl Refusal {
    /// Counts the refusal and makes its 503 answer.
    pub fn answer(self) -> ApiError {
        let (code, message) = match self {
            Refusal::OutboxFull => (
                "outbox_full",
                "the outbox holds as many undelivered submissions as it may; retry later",
            ),
            Refusal::DiskLow => (
                "disk_low",
                "the outbox disk is nearly full; the submission was not stored, retry later",
            ),
        };
        metrics::counter!("outbox_intake_refused_total", "reason" => code).increment(1);
        ApiError::new(503, code, message).retry_after(60)
    }
}

/// Bytes available to unprivileged users, and the size, of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let f = st.fragment_size() as u64;
    Some((
        (st.blocks_available() as u64).saturating_mul(f),
        (st.blocks() as u64).saturating_mul(f),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min_free_disk: u64) -> LimitSettings {
        LimitSettings {
            rate_limit: None,
            rate_burst: 1,
            global_rate_limit: None,
            max_connections: 1,
            max_pending: u64::MAX,
            max_outbox_bytes: u64::MAX,
            min_free_disk,
        }
    }

    /// No sample was taken (it would come up to a second later): the free space is read
    /// at the admission itself.
    #[test]
    fn min_free_disk_is_checked_against_the_free_space_of_now() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = disk_space(dir.path()).unwrap();
        let more_than_free = Admission::new(limits(free + (1 << 40)), Some(dir.path().into()));
        assert_eq!(more_than_free.admit(), Err(Refusal::DiskLow));
        assert!(
            more_than_free.free_bytes() <= free + (1 << 30),
            "kept as the sample"
        );
        let little = Admission::new(limits(1), Some(dir.path().into()));
        assert_eq!(little.admit(), Ok(()));
        // Without a data directory (PostgreSQL) the limit does not apply.
        assert_eq!(Admission::new(limits(u64::MAX), None).admit(), Ok(()));
    }
}
