//! Process set-up for the `imix` binary that the kernels' pool does not cover: the allocator.

/// Tells mimalloc (the global allocator of the binaries) to keep freed pages instead of returning
/// them to the OS: a training step frees and reallocates the same large tensors, and each return
/// cost a page fault plus zeroing per 4 KiB on reuse (BENCHMARKS.md).
pub fn keep_freed_pages() {
    // 15 = mi_option_purge_delay in mimalloc v3 (libmimalloc-sys 0.1.49); -1 = never purge.
    // SAFETY: sets a process-wide allocator option, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) }
}
