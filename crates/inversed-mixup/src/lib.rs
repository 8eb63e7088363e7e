//! inversedMixup: readable, controllable text augmentation by inverting mixed sentence embeddings.
//!
//! A sentence goes through the [`encoder`] (embedding h), the [`adaptor`] (k soft tokens), the
//! [`prompt`] and the frozen [`llm`] (a readable sentence). [`align`] trains the adaptor (stage 1);
//! [`invert`] reconstructs sentences and scores them with [`metrics`].

/// Defines a function whose `#[inline(always)]` body also gets an AVX2+FMA build, picked at run
/// time (loops written to vectorise then use 256-bit lanes; the default target is baseline x86-64).
/// Optionally generic over one bounded type parameter.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$g:ident: $b:path>)? ($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name $(<$g: $b>)? ($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body $(<$g: $b>)? ($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2 $(<$g: $b>)? ($($a: $t),*) $(-> $r)? {
                    body($($a),*)
                }
                // SAFETY: the CPU supports the features the function was compiled for.
                return unsafe { avx2($($a),*) };
            }
            body($($a),*)
        }
    };
}

pub mod activation;
pub mod adaptor;
pub mod align;
pub mod attention;
pub mod augment;
pub mod baselines;
pub mod benchmark;
pub mod causal;
pub mod checkpoint;
pub mod classifier;
pub mod corpus;
pub mod data;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod fastmath;
pub mod fused;
pub mod intrusion;
pub mod invert;
pub mod io;
pub mod llm;
pub mod loss;
pub mod matmul;
pub mod matvec;
pub mod metrics;
pub mod mixup;
pub mod models;
pub mod ops;
pub mod optim;
pub mod prompt;
pub mod warmup;

/// Tells mimalloc (when it is the global allocator) to keep freed pages instead of returning
/// them to the OS: a training step frees and reallocates the same large tensors, and each return
/// cost a page fault plus zeroing per 4 KiB on reuse (13 % of the step in the profile).
/// Call it from `main` of a binary that uses `mimalloc::MiMalloc`.
#[macro_export]
macro_rules! keep_freed_pages {
    () => {
        // 15 = mi_option_purge_delay in mimalloc v3 (libmimalloc-sys 0.1.49); -1 = never purge.
        unsafe { libmimalloc_sys::mi_option_set(15, -1) }
    };
}

/// Makes candle's matmul worker threads sleep as soon as they are idle, unless the user set
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` already. By default an idle worker spins ~25 000 times after
/// each matmul; between matmuls our own parallel kernels (attention, activations, loss) then share
/// the cores with a spinning thread (training step −4 to −6 %, decoding −4 to −18 % measured).
/// Call it first thing in `main`, before any other thread or tensor exists.
pub fn park_idle_workers() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

/// Runs `f` on a worker thread of rayon's global pool, the pool that our kernels and candle's
/// gemm calls use. From outside the pool, every parallel region (several per transformer layer)
/// is injected into it and waits for a sleeping worker to wake; from a worker, the calling thread
/// starts on its share at once (training step −2 to −3 %, encoder and decoding −2 to −5 %
/// measured). Builds the global pool with 8 MiB stacks (the main thread's size) if nothing has
/// built it yet; call it from `main`, before any other rayon use.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means the global pool exists already; it is then used as it is.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::join(f, || ()).0
}

pub use error::{Error, Result};
