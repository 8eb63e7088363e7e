//! Vectorisable f32 `exp`, `erf` and the activation kernels built on them.
//!
//! candle's `gelu_erf` calls a scalar libm `erf` per element, a large share of the encoder's
//! time (BENCHMARKS.md, "Profile notes"). These kernels are plain loops that LLVM vectorises; on x86-64 they are compiled a
//! second time for AVX2+FMA and picked at run time.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

use std::mem::MaybeUninit;

/// `e^x` (Cephes `expf` polynomial; within 2 ulp on [-87, 88], 0 below).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let under = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n by building the exponent bits; n is in [-126, 127] after the clamp. Adding 1.5·2^23
    // puts n in the low mantissa bits, so no float-to-int conversion is needed (`as i32`
    // saturates and compiled to scalar code).
    let scale = f32::from_bits((n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if under {
        0.0
    } else {
        y * scale
    }
}

/// `erf(x)`: the rational approximation Eigen and XLA use for f32, `x·P(x²)/Q(x²)` on x clamped
/// to [-4, 4] (absolute error below 5e-7 against libm; erf(±4) is ±1 in f32). No `exp` and one
/// division, so it vectorises and costs about half of an `exp`-based formula.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.9546e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_473_9e-2);
    x * p / q
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * SQRT_HALF))
}

#[inline(always)]
fn gelu_grad1(x: f32, g: f32) -> f32 {
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    let cdf = 0.5 * (1.0 + erf(x * SQRT_HALF));
    g * (cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x))
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn swiglu1(g: f32, u: f32) -> f32 {
    g * sigmoid(g) * u
}

#[inline(always)]
fn swiglu_grad_gate1(g: f32, u: f32, dy: f32) -> f32 {
    let s = sigmoid(g);
    dy * u * s * (1.0 + g * (1.0 - s))
}

#[inline(always)]
fn swiglu_grad_up1(g: f32, dy: f32) -> f32 {
    dy * g * sigmoid(g)
}

/// Defines `pub fn $name(inputs..) -> Vec<f32>` mapping element-wise with `$f`, dispatching to a
/// vector build of the same loop when the CPU has it.
macro_rules! map_kernel {
    ($(#[$doc:meta])* $name:ident, $into:ident, $into_uninit:ident, ($($a:ident),+), $f:expr) => {
        $(#[$doc])*
        /// (Into `out`, on the calling thread: for callers that split the work themselves.)
        pub fn $into($($a: &[f32]),+, out: &mut [f32]) {
            $into_uninit($($a),+, uninit_view(out))
        }

        $(#[$doc])*
        /// (Into `out`, possibly uninitialised, every element written.)
        pub fn $into_uninit($($a: &[f32]),+, out: &mut [MaybeUninit<f32>]) {
            $(assert!($a.len() >= out.len(), concat!(stringify!($into), ": input shorter than output"));)+
            crate::simd_dispatch!(
                fn run($($a: &[f32]),+, out: &mut [MaybeUninit<f32>]) {
                    let n = out.len();
                    $(let $a = &$a[..n];)+
                    for i in 0..n {
                        out[i].write($f($($a[i]),+));
                    }
                }
            );
            run($($a),+, out)
        }

        $(#[$doc])*
        pub fn $name($($a: &[f32]),+) -> Vec<f32> {
            let n = [$($a.len()),+][0];
            $(assert_eq!($a.len(), n, concat!(stringify!($name), ": length mismatch"));)+
            let mut out = vec![0f32; n];
            let run = |lo: usize, o: &mut [f32]| {
                let hi = lo + o.len();
                $into($(&$a[lo..hi]),+, o)
            };
            // Large inputs (activations of a whole batch) on all cores.
            if n >= PAR_MIN {
                use rayon::prelude::*;
                out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(c, o)| run(c * PAR_CHUNK, o));
            } else {
                run(0, &mut out);
            }
            out
        }
    };
}

/// Element counts from which the kernels split work across threads, and the piece size.
const PAR_MIN: usize = 1 << 16;
const PAR_CHUNK: usize = 1 << 14;

map_kernel!(
    /// Exact-erf GELU `x·Φ(x)` element-wise.
    gelu, gelu_into, gelu_into_uninit, (x), gelu1
);
map_kernel!(
    /// Gradient of GELU: `g · (Φ(x) + x·φ(x))`.
    gelu_grad, gelu_grad_into, gelu_grad_into_uninit, (x, g), gelu_grad1
);
map_kernel!(
    /// SwiGLU `silu(gate) · up` element-wise.
    swiglu, swiglu_into, swiglu_into_uninit, (gate, up), swiglu1
);
map_kernel!(
    /// Gradient of SwiGLU with respect to the gate.
    swiglu_grad_gate, swiglu_grad_gate_into, swiglu_grad_gate_into_uninit, (gate, up, dy), swiglu_grad_gate1
);
map_kernel!(
    /// Gradient of SwiGLU with respect to the up projection.
    swiglu_grad_up, swiglu_grad_up_into, swiglu_grad_up_into_uninit, (gate, dy), swiglu_grad_up1
);
map_kernel!(
    /// `e^x` element-wise.
    exp_vec, exp_into, exp_into_uninit, (x), exp
);

/// `&mut [f32]` seen as possibly uninitialised storage (sound: only initialised values are
/// written through it).
fn uninit_view(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the callee only writes f32 values, so `out` stays initialised.
    unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Both SwiGLU input gradients in one pass (one sigmoid per element): `og` for the gate and `ou`
/// for the up projection, on the calling thread.
pub fn swiglu_grad_both_into(gate: &[f32], up: &[f32], dy: &[f32], og: &mut [f32], ou: &mut [f32]) {
    swiglu_grad_both_into_uninit(gate, up, dy, uninit_view(og), uninit_view(ou))
}

crate::simd_dispatch!(
    /// [`swiglu_grad_both_into`] into possibly uninitialised outputs, every element written.
    pub fn swiglu_grad_both_into_uninit(
        gate: &[f32],
        up: &[f32],
        dy: &[f32],
        og: &mut [MaybeUninit<f32>],
        ou: &mut [MaybeUninit<f32>],
    ) {
        assert!(
            gate.len() >= og.len()
                && up.len() >= og.len()
                && dy.len() >= og.len()
                && ou.len() >= og.len(),
            "swiglu_grad_both_into: inputs shorter than output"
        );
        let n = og.len();
        let (gate, up, dy, ou) = (&gate[..n], &up[..n], &dy[..n], &mut ou[..n]);
        for i in 0..n {
            let (g, u, d) = (gate[i], up[i], dy[i]);
            let sg = sigmoid(g);
            og[i].write(d * u * sg * (1.0 + g * (1.0 - sg)));
            ou[i].write(d * g * sg);
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -1990..=2000 {
            let x = i as f32 * 0.0437;
            let (a, b) = (exp(x), x.exp());
            assert!(
                (a - b).abs() <= 3.0 * f32::EPSILON * b,
                "exp({x}) = {a}, std {b}"
            );
        }
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn erf_matches_libm() {
        for i in -1000..=1000 {
            let x = i as f32 * 0.006;
            let (a, b) = (erf(x), libm::erf(x as f64) as f32);
            assert!((a - b).abs() < 5e-7, "erf({x}) = {a}, libm {b}");
        }
    }

    #[test]
    fn fused_swiglu_gradients_equal_the_separate_kernels() {
        let n = 1003;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) / 60.0).collect();
        let u: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
        let d: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let (mut og, mut ou) = (vec![0f32; n], vec![0f32; n]);
        swiglu_grad_both_into(&g, &u, &d, &mut og, &mut ou);
        assert_eq!(og, swiglu_grad_gate(&g, &u, &d));
        assert_eq!(ou, swiglu_grad_up(&g, &d));
    }

    #[test]
    fn vector_kernels_equal_scalar() {
        // Longer than PAR_MIN, so that the threaded split is covered too.
        let x: Vec<f32> = (0..70_001)
            .map(|i| ((i % 1003) as f32 - 500.0) * 0.013)
            .collect();
        let g: Vec<f32> = x.iter().map(|v| 0.3 - v * 0.7).collect();
        let y = gelu(&x);
        let e = exp_vec(&x);
        for i in 0..x.len() {
            assert_eq!(y[i].to_bits(), gelu1(x[i]).to_bits());
            assert_eq!(e[i].to_bits(), exp(x[i]).to_bits());
        }
        let s = swiglu(&x, &g);
        for i in 0..x.len() {
            assert_eq!(s[i].to_bits(), swiglu1(x[i], g[i]).to_bits());
        }
    }
}
