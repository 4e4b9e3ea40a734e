//! The allocator's settings, in one place for the binary and the benchmarks that measure it.
//! The binary and each benchmark declare `mimalloc::MiMalloc` as their global allocator (a
//! library cannot), and call [`return_freed_memory_at_once`] first thing in `main`.

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the Rust bindings name only the
/// stable options, and their numbering is mimalloc 2's).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed memory back to the system at once. By default it waits a second,
/// and the wait only ends when the thread that freed the memory allocates again, so memory
/// freed by threads that then go quiet (sled's recovery at start, the committer between
/// bursts) stays resident. With 1,000,000 pending records, RSS after start fell from 126.9 to
/// 91.6 MiB and its peak while draining them from 235.6 to 207.8 MiB
/// (`cargo bench --bench resources`). It costs intake some: `outbox serve` under wrk (64
/// connections), in turns, took 28,219, 27,916 and 26,626 req/s against 30,948, 29,629 and
/// 29,397 with mimalloc's default, because each free that empties a page now asks the kernel
/// to take it back (`madvise`). `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub fn return_freed_memory_at_once() {
    // mimalloc 3.x: the option index above is only right for that major version.
    let major = unsafe { libmimalloc_sys::mi_version() } / 10_000;
    if major == 3 && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores the value; it runs before any other thread starts.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_is_set_through_the_right_option() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc 3 purges after 1000 ms by default: reading that back shows the index is
        // the purge delay's and not another option's.
        assert_eq!(unsafe { libmimalloc_sys::mi_version() } / 10_000, 3);
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            1000
        );
        return_freed_memory_at_once();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
