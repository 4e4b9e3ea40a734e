//! Free space a store needs before it touches a nearly full disk, so it says what it needs
//! instead of failing half-way (and keeping what it took).
//!
//! sled 0.34.7 starts a new segment of its log (8 MiB here, [`SEGMENT_SIZE`]) and writes a
//! snapshot at every open, even when nothing is written afterwards: on a 48 MiB volume filled
//! by the store, an open took another 8 MiB or failed with ENOSPC. So an open needs a segment
//! and a margin free ([`check_room_to_open`]). A compaction writes a fresh copy of the records
//! kept beside the log before the old log goes ([`super::compaction`]): it needs the copy's
//! segments free ([`room_to_compact`]).
//!
//! A filesystem that reports no size at all (some FUSE filesystems answer `statfs` with
//! zeros) is not checked.

use super::{StoreError, SEGMENT_SIZE};
use std::path::Path;

/// Room for the snapshot sled writes at open and for the first writes: a snapshot of a
/// store of a few thousand records is tens of KiB.
const MARGIN: u64 = 1 << 20;

/// What an open needs free: one new segment and the margin.
pub const OPEN_NEEDS: u64 = SEGMENT_SIZE as u64 + MARGIN;

/// Bytes available to unprivileged users, and the size, of the filesystem holding `dir`;
/// `None` when it cannot be told.
pub fn free_and_size(dir: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let f = st.fragment_size() as u64;
    let size = (st.blocks() as u64).saturating_mul(f);
    (size > 0).then(|| ((st.blocks_available() as u64).saturating_mul(f), size))
}

/// `3.2 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Refuses to open the store in `dir` when its filesystem has less than [`OPEN_NEEDS`] free.
pub(super) fn check_room_to_open(dir: &Path) -> std::io::Result<()> {
    let Some((free, _)) = free_and_size(dir) else {
        return Ok(());
    };
    if free >= OPEN_NEEDS {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "the filesystem holding it has {} free, and opening the store needs {} (sled starts a new {} segment of its log and writes a snapshot at every open; with less it would fail half-way and keep what it took). Nothing was changed. Free {} there, or move the data directory to a larger filesystem (ops/RUNBOOK.md, \"The disk fills\")",
        mib(free),
        mib(OPEN_NEEDS),
        mib(SEGMENT_SIZE as u64),
        mib(OPEN_NEEDS - free),
    )))
}

/// What a compaction of a store whose kept records take `live` bytes needs free: a copy of
/// them in whole segments (sled writes a bulk load with garbage of its own, so twice their
/// size) and the margin. Measured on a 48 MiB tmpfs: with nothing kept the copy is one
/// segment and compacting succeeded with 11.4 MiB free. A larger copy may take one more
/// segment when it is opened; then the compaction fails with ENOSPC, changes nothing, and
/// says this figure.
pub fn compaction_needs(live: u64) -> u64 {
    let seg = SEGMENT_SIZE as u64;
    (live.saturating_mul(2)).div_ceil(seg).max(1) * seg + MARGIN
}

/// `Ok` when the filesystem holding `dir` has room for a compaction of `live` bytes kept,
/// else what it needs, in words.
pub(super) fn room_to_compact(dir: &Path, live: u64, records: u64) -> Result<(), StoreError> {
    let Some((free, _)) = free_and_size(dir) else {
        return Ok(());
    };
    let needs = compaction_needs(live);
    if free >= needs {
        return Ok(());
    }
    Err(StoreError::NoRoom(format!(
        "not compacted: the copy of the {records} records kept ({} of data) is written beside the log in {} before the old log goes, and needs about {} free there (twice the data, in whole {} segments); the filesystem has {} free. Free {} more on it (old backups, other files), or stop outbox and move the data directory to a larger filesystem, compact it there and move it back (ops/RUNBOOK.md, \"The disk fills\"). Nothing was changed",
        mib(live),
        dir.display(),
        mib(needs),
        mib(SEGMENT_SIZE as u64),
        mib(free),
        mib(needs - free),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_needs_whole_segments_for_twice_the_data() {
        let seg = SEGMENT_SIZE as u64;
        assert_eq!(compaction_needs(0), seg + MARGIN);
        assert_eq!(compaction_needs(seg / 2), seg + MARGIN);
        assert_eq!(compaction_needs(seg / 2 + 1), 2 * seg + MARGIN);
    }
}
