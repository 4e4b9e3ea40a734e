//! Measurements shared by the benchmarks.

/// Bytes written to disk so far, and where the figure comes from.
///
/// With `OUTBOX_BENCH_DEVICE=loopN` (set by `benches/loop-device.sh`, which puts the bench's
/// temporary directories on a fresh ext4 filesystem on that device): the sectors the device
/// has written, times 512, read from `/sys/block/loopN/stat`. That is what reached the disk,
/// the filesystem's journal and metadata included, and nothing else writes to that device.
///
/// Otherwise: `write_bytes` of `/proc/self/io`. The kernel counts a whole page-cache folio
/// there each time a write dirties a clean one; with large folios (ext4 on recent kernels) a
/// log that appends a few hundred bytes and syncs is counted many times over, so this figure
/// is an upper bound (0 where it cannot be read).
pub fn write_bytes() -> u64 {
    match std::env::var("OUTBOX_BENCH_DEVICE") {
        Ok(dev) => device_bytes(&dev),
        Err(_) => {
            let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        }
    }
}

/// Says which figure [`write_bytes`] gives, for the bench's report.
pub fn write_bytes_source() -> String {
    match std::env::var("OUTBOX_BENCH_DEVICE") {
        Ok(dev) => format!("bytes written: sectors written by /dev/{dev} (the bench's own filesystem)"),
        Err(_) => "bytes written: write_bytes of /proc/self/io, an upper bound (see benches/loop-device.sh)".into(),
    }
}

fn device_bytes(dev: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat"))
        .unwrap_or_else(|e| panic!("OUTBOX_BENCH_DEVICE={dev}: /sys/block/{dev}/stat: {e}"));
    // Field 7: sectors written, in 512-byte units whatever the device's block size.
    let sectors: u64 = stat
        .split_whitespace()
        .nth(6)
        .and_then(|v| v.parse().ok())
        .expect("a block device stat line");
    sectors * 512
}
