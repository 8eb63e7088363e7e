//! A frozen matrix kept as GGML quantised blocks and dequantised a few rows at a time.
//!
//! A GGUF word table (49152 × 576 for SmolLM2) is 30 MB as Q8_0 blocks and 113 MB dequantised to
//! f32. Row `r` dequantises with exactly the arithmetic of candle's `GgmlType::to_float` (the
//! same multiply and add, never fused), so every product over dequantised rows sees the values
//! the f32 table holds and gives the same bits.

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

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

    /// Dequantised rows `ids`, `(ids.len(), cols)` row-major.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            self.rows_into(id as usize, o);
        }
        out
    }

    /// Every row dequantised, `(rows, cols)` row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.rows_into(0, &mut out);
        out
    }
}

crate::simd_dispatch! {
    /// Blocks of `format` to f32, block by block as `to_float` does (multiply, then add).
    fn dequantize(format: BlockFormat, src: &[u8], out: &mut [f32]) {
        let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
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

    #[test]
    fn unsupported_formats_and_partial_blocks_are_refused() {
        let x = Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(BlockRows::from_qtensor(&QTensor::quantize(&x, GgmlDType::Q6K).unwrap()).is_none());
        assert!(BlockRows::new(BlockFormat::Q8_0, vec![0; 34], 1, 40).is_none());
        assert!(BlockRows::new(BlockFormat::Q8_0, vec![0; 33], 1, 32).is_none());
    }
}
