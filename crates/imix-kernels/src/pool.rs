//! Where the kernels' work runs: rayon's global pool, which candle's gemm calls use too. Process
//! set-up for binaries and bindings (a library must not decide it), kept beside the kernels it
//! serves so that every front end sets it up alike.

/// Makes candle's matmul worker threads sleep as soon as they are idle, unless the user set
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` already: spinning workers competed with our own parallel
/// kernels between matmuls (BENCHMARKS.md). Call it first thing in `main`, before any thread exists.
pub fn park_idle_workers() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Before any other thread exists, so no one reads the environment concurrently.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

/// Runs `f` on a worker thread of rayon's global pool: from a worker, a parallel region starts at
/// once instead of waiting for a sleeping worker to wake (BENCHMARKS.md). Builds the global pool
/// with 8 MiB stacks (the main thread's size) if nothing has built it yet.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means the global pool exists already; it is then used as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::join(f, || ()).0
}
