//! The memory allocator of the command-line tools (`dit-train`, `dit-infer`,
//! `dit-bench`), which each declare [`Allocator`] as their global allocator
//! and call [`keep_freed_memory`] first thing.
//!
//! Every tensor op allocates its output afresh. glibc's allocator hands large
//! freed blocks back to the OS, so the next op's output faulted its pages in
//! anew: ~12% of a CPU training step went to the kernel zeroing pages.
//! mimalloc keeps freed memory for reuse (see docs/performance.md).

/// The global allocator of the binaries: mimalloc.
pub type Allocator = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc (v3)
/// bundled by `libmimalloc-sys` 0.1: between `mi_option_eager_commit_delay`,
/// 14, and `mi_option_use_numa_nodes`, 16, which that crate names; the test
/// checks its default value.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS, so a training step
/// reuses the pages of the previous one (by default it returns them after
/// a second, and a step longer than that faults its large tensors' pages in
/// again). The process
/// keeps its peak memory until it exits.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; called before the program starts threads.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and writes one integer option.
        unsafe {
            let before = libmimalloc_sys::mi_option_get(PURGE_DELAY);
            assert_eq!(before, 1000, "mimalloc's default purge delay is 1000 ms");
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), -1);
            libmimalloc_sys::mi_option_set(PURGE_DELAY, before);
        }
    }
}
