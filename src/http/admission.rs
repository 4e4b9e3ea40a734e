//! Admission control: intake answers 503 instead of filling the disk.
//!
//! Stored data is never deleted to make room. The limits are `max-pending` records waiting for
//! delivery, `max-outbox-bytes` for the data directory and `min-free-disk` on its filesystem.
//! Disk figures are sampled by [`Admission::refresh`] (once a second from the app), so a
//! request never walks the directory.

use super::error::ApiError;
use crate::config::LimitSettings;
use crate::store::Store;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Admission {
    limits: LimitSettings,
    dir_bytes: AtomicU64,
    free_bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    OutboxFull,
    DiskLow,
}

impl Admission {
    pub fn new(limits: LimitSettings) -> Admission {
        Admission {
            limits,
            dir_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
        }
    }

    /// Samples the data directory's size and its filesystem's free space.
    pub fn refresh(&self, store: &Store) {
        self.dir_bytes.store(store.disk_bytes(), Ordering::Relaxed);
        if let Some(free) = free_disk(store.path()) {
            self.free_bytes.store(free, Ordering::Relaxed);
        }
    }

    pub fn dir_bytes(&self) -> u64 {
        self.dir_bytes.load(Ordering::Relaxed)
    }

    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Relaxed)
    }

    /// Why intake would be refused now, if it would.
    pub fn refusal(&self, store: &Store) -> Option<Refusal> {
        if self.free_bytes() < self.limits.min_free_disk {
            return Some(Refusal::DiskLow);
        }
        if self.dir_bytes() >= self.limits.max_outbox_bytes {
            return Some(Refusal::OutboxFull);
        }
        let queued = store.counts().map(|c| c.pending + c.in_flight).unwrap_or(0);
        (queued >= self.limits.max_pending).then_some(Refusal::OutboxFull)
    }

    pub fn check(&self, store: &Store) -> Result<(), ApiError> {
        let refusal = self.refusal(store);
        if let Some(r) = refusal {
            let reason = match r {
                Refusal::OutboxFull => "outbox_full",
                Refusal::DiskLow => "disk_low",
            };
            metrics::counter!("outbox_intake_refused_total", "reason" => reason).increment(1);
        }
        match refusal {
            None => Ok(()),
            Some(Refusal::DiskLow) => Err(ApiError::new(
                503,
                "disk_low",
                "the outbox disk is nearly full; the submission was not stored, retry later",
            )
            .retry_after(60)),
            Some(Refusal::OutboxFull) => Err(ApiError::new(
                503,
                "outbox_full",
                "the outbox holds as many undelivered submissions as it may; retry later",
            )
            .retry_after(60)),
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_disk(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}
