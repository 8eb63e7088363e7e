//! CPU kernels behind inversed-mixup: candle custom ops with analytic backward passes for the
//! training path (RMSNorm, softmax, RoPE, activations, causal attention, cross-entropy over a large
//! vocabulary), inference kernels (decode and packed-sequence attention, LayerNorm, matrix-vector
//! products) and direct gemm calls. Nothing here knows the method; everything is tested against
//! finite differences or the candle composition it replaces.
//!
//! One runtime dispatch ([`simd_dispatch!`], levels in [`simd`]) picks a vector build of each kernel; the lane helpers
//! ([`lanes`]) give loops the independent accumulators they need to vectorise.
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// Defines a function whose `#[inline(always)]` body also gets an AVX-512 build and an AVX2+FMA
/// build, one of which is picked at run time by [`simd::level`] (loops written to vectorise then
/// use 512- or 256-bit lanes; the default target is baseline x86-64, so a binary built once runs
/// everywhere). Optionally generic over one bounded type parameter. The single place where
/// kernels choose an instruction set.
#[macro_export]
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$g:ident: $b:path>)? ($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name $(<$g: $b>)? ($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body $(<$g: $b>)? ($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            match $crate::simd::level() {
                $crate::simd::Level::Avx512 => {
                    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                    unsafe fn avx512 $(<$g: $b>)? ($($a: $t),*) $(-> $r)? {
                        body($($a),*)
                    }
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { avx512($($a),*) };
                }
                $crate::simd::Level::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2 $(<$g: $b>)? ($($a: $t),*) $(-> $r)? {
                        body($($a),*)
                    }
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { avx2($($a),*) };
                }
                $crate::simd::Level::Scalar => {}
            }
            body($($a),*)
        }
    };
}

/// Whether the kernels run their AVX2+FMA (or wider) builds now.
#[inline(always)]
pub fn has_avx2() -> bool {
    simd::level() >= simd::Level::Avx2
}

/// The float types the kernels run in: f32 (training and inference) and f64 (finite-difference
/// tests), as `num_traits::Float` plus what parallel kernels need.
pub trait Real: num_traits::Float + Default + Send + Sync + std::iter::Sum + 'static {
    /// `v` in this type (`as` semantics: rounded, infinities kept).
    fn of(v: f64) -> Self;
}
impl<T: num_traits::Float + Default + Send + Sync + std::iter::Sum + 'static> Real for T
where
    f64: num_traits::AsPrimitive<T>,
{
    #[inline(always)]
    fn of(v: f64) -> T {
        num_traits::AsPrimitive::as_(v)
    }
}

pub mod activation;
pub mod adamw;
pub mod bias;
pub mod block_rows;
pub mod causal_attention;
pub mod decode_attention;
pub mod embedding;
pub mod fastmath;
pub mod frozen_linear;
pub mod frozen_projection;
pub mod frozen_rows;
pub mod fused;
pub mod lanes;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod low_rank;
pub mod matmul;
pub mod matvec;
pub mod packed_attention;
pub mod pool;
pub mod simd;
pub mod storage;

pub use block_rows::BlockRows;
pub use frozen_linear::FrozenLinear;
pub use frozen_projection::FrozenProjection;
pub use frozen_rows::FrozenRows;
pub use low_rank::LowRank;
