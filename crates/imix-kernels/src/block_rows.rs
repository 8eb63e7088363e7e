//! A frozen matrix kept as GGML quantised blocks and dequantised a few rows at a time.
//!
//! A GGUF word table (49152 × 576 for SmolLM2) is 30 MB as Q8_0 blocks and 113 MB dequantised to
//! f32. Row `r` dequantises with exactly the arithmetic of candle's `GgmlType::to_float` (the
//! same multiply and add, never fused), so every product over dequantised rows sees the values
//! the f32 table holds and gives the same bits.

use candle_core::quantized::{GgmlDType, QTensor};

/// Block formats dequantised here: those whose blocks (32 values) tile a row of any width that
/// is a multiple of 32, plus f16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// 16-bit floats, one value per "block".
    F16,
    /// 32 values: f16 scale `d`, 32 signed bytes; `q * d`.
    Q8_0,
    /// 32 values: f16 scale `d`, 16 bytes of nibbles; `(q - 8) * d`.
    Q4_0,
    /// 32 values: f16 scale `d` and minimum `m`, 16 bytes of nibbles; `q * d + m`.
    Q4_1,
}

impl BlockFormat {
    fn of(d: GgmlDType) -> Option<Self> {
        Some(match d {
            GgmlDType::F16 => Self::F16,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            _ => return None,
        })
    }

    /// (values, bytes) per block.
    fn block(self) -> (usize, usize) {
        match self {
            Self::F16 => (1, 2),
            Self::Q8_0 => (32, 34),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
        }
    }
}

/// A `(rows, cols)` matrix as GGML blocks, each row a whole number of blocks.
#[derive(Clone, Debug)]
pub struct BlockRows {
    format: BlockFormat,
    data: Vec<u8>,
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

impl BlockRows {
    /// The blocks of a 2-D quantised tensor, or `None` when its format is not one of
    /// [`BlockFormat`] or its rows are not whole blocks (then dequantise it instead).
    pub fn from_qtensor(q: &QTensor) -> Option<Self> {
        let (rows, cols) = q.shape().dims2().ok()?;
        let data = q.data().ok()?.into_owned();
        Self::new(BlockFormat::of(q.dtype())?, data, rows, cols)
    }

    /// Wraps raw little-endian blocks; `None` when their size does not fit `(rows, cols)`.
    pub fn new(format: BlockFormat, data: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        let (bv, bb) = format.block();
        if !cols.is_multiple_of(bv) {
            return None;
        }
        let row_bytes = cols / bv * bb;
        (data.len() == rows * row_bytes).then_some(Self {
            format,
            data,
            rows,
            cols,
            row_bytes,
        })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Dequantises rows `r0..r0 + out.len() / cols` into `out`.
    pub fn rows_into(&self, r0: usize, out: &mut [f32]) {
        let n = out.len() / self.cols;
        assert!(
            out.len() == n * self.cols && r0 + n <= self.rows,
            "block rows: rows {r0}..{} of {}",
            r0 + n,
            self.rows
        );
        let src = &self.data[r0 * self.row_bytes..(r0 + n) * self.row_bytes];
        dequantize(self.format, src, out);
    }

    /// Calls `f` with rows `r0..r0 + n` dequantised into this thread's scratch buffer: the
    /// products dequantise a few rows per task, and a fresh zeroed buffer each time cost them a
    /// tenth of their time in memset and page faults.
    pub fn with_rows<R>(&self, r0: usize, n: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
        }
        // Taken out while in use, so a nested call on this thread gets a buffer of its own.
        let mut buf = SCRATCH.take();
        if buf.len() < n * self.cols {
            buf.resize(n * self.cols, 0.0);
        }
        let rows = &mut buf[..n * self.cols];
        self.rows_into(r0, rows);
        let r = f(rows);
        SCRATCH.set(buf);
        r
    }

    /// Dequantised rows `ids`, `(ids.len(), cols)` row-major.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            self.rows_into(id as usize, o);
        }
        out
    }

    /// The rows of `parts` one after another; `None` unless all share a format and a width.
    pub fn concat(parts: &[&BlockRows]) -> Option<Self> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.cols != first.cols)
        {
            return None;
        }
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        let rows = parts.iter().map(|p| p.rows).sum();
        Self::new(first.format, data, rows, first.cols)
    }

    /// Row `i` of the result is row `order[i]` of `self` (a permutation or any selection).
    pub fn select_rows(&self, order: &[usize]) -> Self {
        let mut data = Vec::with_capacity(order.len() * self.row_bytes);
        for &r in order {
            data.extend_from_slice(&self.data[r * self.row_bytes..(r + 1) * self.row_bytes]);
        }
        Self {
            format: self.format,
            data,
            rows: order.len(),
            cols: self.cols,
            row_bytes: self.row_bytes,
        }
    }

    /// Every row dequantised, `(rows, cols)` row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.rows_into(0, &mut out);
        out
    }
}

/// Blocks of `format` to f32, block by block as candle's `to_float` does (multiply, then add,
/// each rounded: never fused). Explicit vector kernels for the 32-value formats: left to
/// itself, LLVM vectorised this loop across blocks with byte gathers, 60 % slower than scalar.
fn dequantize(format: BlockFormat, src: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if format != BlockFormat::F16 {
        match crate::simd::level() {
            // SAFETY: the level is at most what the CPU supports (simd::level).
            crate::simd::Level::Avx512 => return unsafe { x86::blocks_avx512(format, src, out) },
            // SAFETY: as above.
            crate::simd::Level::Avx2 => return unsafe { x86::blocks_avx2(format, src, out) },
            crate::simd::Level::Scalar => {}
        }
    }
    dequantize_plain(format, src, out)
}

/// The reference loops ([`dequantize`] without vector kernels).
fn dequantize_plain(format: BlockFormat, src: &[u8], out: &mut [f32]) {
    let h = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    match format {
        BlockFormat::F16 => {
            for (b, o) in src.chunks_exact(2).zip(out.iter_mut()) {
                *o = h(b);
            }
        }
        BlockFormat::Q8_0 => {
            for (b, o) in src.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = h(b);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = q as i8 as f32 * d;
                }
            }
        }
        BlockFormat::Q4_0 => {
            for (b, o) in src.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = h(b);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, u), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
                    *l = ((q & 0x0F) as i16 - 8) as f32 * d;
                    *u = ((q >> 4) as i16 - 8) as f32 * d;
                }
            }
        }
        BlockFormat::Q4_1 => {
            for (b, o) in src.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let (d, m) = (h(b), h(&b[2..]));
                let (lo, hi) = o.split_at_mut(16);
                for ((l, u), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..20]) {
                    *l = (q & 0x0F) as f32 * d + m;
                    *u = (q >> 4) as f32 * d + m;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! One block at a time: bytes widened to i32 lanes, converted, scaled (and offset).
    use super::{f16_to_f32, BlockFormat};
    use std::arch::x86_64::*;

    fn scale(b: &[u8], at: usize) -> f32 {
        f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
    }

    /// The first two halves of `b` as f32 lanes 0 and 1 (F16C: exact, NaNs quieted as `half` does).
    ///
    /// # Safety
    /// The CPU must support F16C (every AVX-512 CPU does); `b` holds at least 4 bytes.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn halves(b: &[u8]) -> __m128 {
        let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
    }

    /// # Safety
    /// The CPU must support AVX-512 F; `out` holds 32 values per block of `src`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn blocks_avx512(format: BlockFormat, src: &[u8], out: &mut [f32]) {
        let (_, bytes) = format.block();
        assert!(out.len() >= src.len() / bytes * 32);
        let low = _mm512_set1_epi32(0x0F);
        for (b, o) in src.chunks_exact(bytes).zip(out.chunks_exact_mut(32)) {
            let op = o.as_mut_ptr();
            // SAFETY: each block holds the bytes read below and `o` 32 values.
            unsafe {
                match format {
                    BlockFormat::Q8_0 => {
                        let d = _mm512_broadcastss_ps(halves(b));
                        for h in 0..2 {
                            let q = _mm_loadu_si128(b.as_ptr().add(2 + 16 * h).cast());
                            let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                            _mm512_storeu_ps(op.add(16 * h), _mm512_mul_ps(v, d));
                        }
                    }
                    BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                        let q4_1 = format == BlockFormat::Q4_1;
                        // Both halves of a Q4_1 block (d, m) converted at once.
                        let dm = halves(b);
                        let d = _mm512_broadcastss_ps(dm);
                        let at = if q4_1 { 4 } else { 2 };
                        let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.as_ptr().add(at).cast()));
                        let (mut lo, mut hi) = (_mm512_and_si512(q, low), _mm512_srli_epi32(q, 4));
                        if !q4_1 {
                            let eight = _mm512_set1_epi32(8);
                            (lo, hi) = (_mm512_sub_epi32(lo, eight), _mm512_sub_epi32(hi, eight));
                        }
                        let mut lo = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d);
                        let mut hi = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d);
                        if q4_1 {
                            let m = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
                            (lo, hi) = (_mm512_add_ps(lo, m), _mm512_add_ps(hi, m));
                        }
                        _mm512_storeu_ps(op, lo);
                        _mm512_storeu_ps(op.add(16), hi);
                    }
                    BlockFormat::F16 => unreachable!("f16 has no 32-value blocks"),
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `out` holds 32 values per block of `src`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn blocks_avx2(format: BlockFormat, src: &[u8], out: &mut [f32]) {
        let (_, bytes) = format.block();
        assert!(out.len() >= src.len() / bytes * 32);
        let low = _mm256_set1_epi32(0x0F);
        for (b, o) in src.chunks_exact(bytes).zip(out.chunks_exact_mut(32)) {
            let op = o.as_mut_ptr();
            // SAFETY: each block holds the bytes read below and `o` 32 values.
            unsafe {
                match format {
                    BlockFormat::Q8_0 => {
                        let d = _mm256_set1_ps(scale(b, 0));
                        for e in 0..4 {
                            let q = _mm_loadl_epi64(b.as_ptr().add(2 + 8 * e).cast());
                            let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                            _mm256_storeu_ps(op.add(8 * e), _mm256_mul_ps(v, d));
                        }
                    }
                    BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                        let q4_1 = format == BlockFormat::Q4_1;
                        let d = _mm256_set1_ps(scale(b, 0));
                        let m = _mm256_set1_ps(if q4_1 { scale(b, 2) } else { 0.0 });
                        let at = if q4_1 { 4 } else { 2 };
                        for e in 0..2 {
                            let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                b.as_ptr().add(at + 8 * e).cast(),
                            ));
                            let (mut lo, mut hi) =
                                (_mm256_and_si256(q, low), _mm256_srli_epi32(q, 4));
                            if !q4_1 {
                                let eight = _mm256_set1_epi32(8);
                                lo = _mm256_sub_epi32(lo, eight);
                                hi = _mm256_sub_epi32(hi, eight);
                            }
                            let mut lo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d);
                            let mut hi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d);
                            if q4_1 {
                                lo = _mm256_add_ps(lo, m);
                                hi = _mm256_add_ps(hi, m);
                            }
                            _mm256_storeu_ps(op.add(8 * e), lo);
                            _mm256_storeu_ps(op.add(16 + 8 * e), hi);
                        }
                    }
                    BlockFormat::F16 => unreachable!("f16 has no 32-value blocks"),
                }
            }
        }
    }
}

/// The f32 value of IEEE half-precision bits `h`, exactly as `half::f16::to_f32` gives it (every
/// half is an f32, so the conversion is exact; NaNs come back quiet with their payload), inlined:
/// `half` calls out and tests the CPU's F16C flag on every conversion, one per 32 values here.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let (exp, man) = ((h >> 10) & 0x1f, (h & 0x3ff) as u32);
    let bits = match exp {
        // Zero and subnormals: man · 2^-24, exact in f32.
        0 => return sub(sign, man),
        31 if man != 0 => sign | 0x7fc0_0000 | (man << 13),
        31 => sign | 0x7f80_0000,
        _ => sign | ((exp as u32 + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A subnormal half's value `±man · 2^-24` (zero for `man = 0`, keeping the sign).
#[inline(always)]
fn sub(sign: u32, man: u32) -> f32 {
    let v = man as f32 * f32::from_bits(0x3380_0000);
    f32::from_bits(v.to_bits() | sign)
}

/// A random `(rows, cols)` matrix quantised to `d`: its blocks and candle's dequantisation of them.
#[cfg(test)]
pub(crate) fn random_blocks(rows: usize, cols: usize, d: GgmlDType) -> (BlockRows, Vec<f32>) {
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap();
    let q = QTensor::quantize(&x, d).unwrap();
    let t = q.dequantize(&dev).unwrap().flatten_all().unwrap();
    (BlockRows::from_qtensor(&q).unwrap(), t.to_vec1().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use half::f16;

    /// Every format dequantises to exactly candle's values, whole and row by row.
    #[test]
    fn rows_equal_candles_dequantisation_bit_for_bit() {
        for d in [
            GgmlDType::F16,
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
        ] {
            let (b, want) = random_blocks(37, 96, d);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&b.to_dense()), bits(&want), "{d:?}");
            let g = b.gather(&[5, 0, 36]);
            for (i, &r) in [5usize, 0, 36].iter().enumerate() {
                assert_eq!(
                    bits(&g[i * 96..][..96]),
                    bits(&want[r * 96..][..96]),
                    "{d:?} row {r}"
                );
            }
        }
    }

    /// Concatenated and selected rows dequantise to the same rows of the parts.
    #[test]
    fn concatenation_and_selection_move_whole_rows() {
        let (a, da) = random_blocks(3, 64, GgmlDType::Q4_1);
        let (b, db) = random_blocks(2, 64, GgmlDType::Q4_1);
        let c = BlockRows::concat(&[&a, &b]).unwrap();
        assert_eq!(c.dims(), (5, 64));
        let want: Vec<f32> = da.iter().chain(&db).copied().collect();
        assert_eq!(c.to_dense(), want);
        let s = c.select_rows(&[4, 0, 0]);
        let mut w = want[4 * 64..].to_vec();
        w.extend_from_slice(&want[..64]);
        w.extend_from_slice(&want[..64]);
        assert_eq!(s.to_dense(), w);
        let (q8, _) = random_blocks(2, 64, GgmlDType::Q8_0);
        assert!(BlockRows::concat(&[&a, &q8]).is_none());
    }

    /// Each vector kernel the CPU can run gives the reference loops' bits (and so candle's).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_kernels_equal_the_reference_loops() {
        for d in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
            let (b, want) = random_blocks(9, 96, d);
            let mut plain = vec![0f32; want.len()];
            dequantize_plain(b.format, &b.data, &mut plain);
            assert_eq!(plain, want, "{d:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut v = vec![0f32; want.len()];
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { x86::blocks_avx2(b.format, &b.data, &mut v) };
                assert_eq!(bits(&v), bits(&want), "avx2 {d:?}");
            }
            if crate::simd::detected() == crate::simd::Level::Avx512 {
                let mut v = vec![0f32; want.len()];
                // SAFETY: the CPU has the AVX-512 features the kernel needs.
                unsafe { x86::blocks_avx512(b.format, &b.data, &mut v) };
                assert_eq!(bits(&v), bits(&want), "avx512 {d:?}");
            }
        }
    }

    /// The inlined conversion gives `half`'s bits for every one of the 65536 halves.
    #[test]
    fn every_half_converts_as_half_does() {
        for h in 0..=u16::MAX {
            assert_eq!(
                f16_to_f32(h).to_bits(),
                f16::from_bits(h).to_f32().to_bits(),
                "half bits {h:#06x}"
            );
        }
    }

    #[test]
    fn unsupported_formats_and_partial_blocks_are_refused() {
        let x = Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(BlockRows::from_qtensor(&QTensor::quantize(&x, GgmlDType::Q6K).unwrap()).is_none());
        assert!(BlockRows::new(BlockFormat::Q8_0, vec![0; 34], 1, 40).is_none());
        assert!(BlockRows::new(BlockFormat::Q8_0, vec![0; 33], 1, 32).is_none());
    }
}
