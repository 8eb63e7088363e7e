//! Process set-up for the binaries (the `imix` command and the benchmark example): the allocator,
//! the matmul workers' idling and the thread the work runs on. A library must not decide these.

/// Tells mimalloc (the global allocator of the binaries) to keep freed pages instead of returning
/// them to the OS: a training step frees and reallocates the same large tensors, and each return
/// cost a page fault plus zeroing per 4 KiB on reuse (BENCHMARKS.md).
pub fn keep_freed_pages() {
    // 15 = mi_option_purge_delay in mimalloc v3 (libmimalloc-sys 0.1.49); -1 = never purge.
    // SAFETY: sets a process-wide allocator option, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) }
}

/// Makes candle's matmul worker threads sleep as soon as they are idle, unless the user set
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` already: spinning workers competed with our own parallel
/// kernels between matmuls (BENCHMARKS.md). Call it first thing in `main`, before any thread exists.
pub fn park_idle_workers() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Before any other thread exists, so no one reads the environment concurrently.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

/// Runs `f` on a worker thread of rayon's global pool, the pool our kernels and candle's gemm
/// calls use: from a worker, a parallel region starts at once instead of waiting for a sleeping
/// worker to wake (BENCHMARKS.md). Builds the global pool with 8 MiB stacks (the main thread's
/// size) if nothing has built it yet; call it from `main`, before any other rayon use.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means the global pool exists already; it is then used as it is.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::join(f, || ()).0
}
