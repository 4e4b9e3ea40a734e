//! Measurements shared by the benchmarks.

/// Bytes this process has caused to be written to disk so far (`write_bytes` of
/// `/proc/self/io`; 0 where it cannot be read).
pub fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
