//! Linear layers with frozen weights: products without weight gradients, and raw gemm entry points.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// `x @ W^T` for a frozen weight `W` (out, in): the backward returns only the input gradient.
///
/// candle's matmul backward always computes the weight gradient too; for a frozen LLM that is
/// half of the backward time and a (49152 x 576) temporary for the output layer (docs/design.md).
#[derive(Clone, Debug)]
pub struct FrozenLinear {
    weight: Tensor,
}

impl FrozenLinear {
    /// Wraps a constant (out, in) weight.
    pub fn new(weight: Tensor) -> Self {
        Self { weight }
    }

    /// The (out, in) weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Applies the layer to `(..., in)`, returning `(..., out)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        x.apply_op1(FrozenMatmul(self.weight.clone()))
    }
}

/// The custom op behind [`FrozenLinear`]; the captured weight is never part of the graph.
struct FrozenMatmul(Tensor);

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        matmul_wt(s, l, &self.0)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // dL/dx = dL/dy @ W; no dL/dW because the weight is frozen.
        Ok(Some(matmul_w(grad, &self.0)?))
    }
}

/// `x @ Wᵀ` on raw storage: `x (..., in)` contiguous, `W (out, in)`; the result is freshly owned.
pub fn matmul_wt(
    s: &CpuStorage,
    l: &Layout,
    weight: &Tensor,
) -> candle_core::Result<(CpuStorage, Shape)> {
    if !l.is_contiguous() {
        candle_core::bail!(
            "frozen-linear: contiguous input required, got strides {:?}",
            l.stride()
        );
    }
    let dims = l.shape().dims();
    let k = *dims.last().expect("rank >= 1");
    let m = l.shape().elem_count() / k;
    let (out, inp) = weight.dims2()?;
    if inp != k {
        candle_core::bail!("frozen-linear: input width {k} but weight is ({out}, {inp})");
    }
    let (ws, wl) = weight.storage_and_layout();
    let Storage::Cpu(ws) = &*ws else {
        candle_core::bail!("frozen-linear: weight not on cpu")
    };
    let mut od = dims.to_vec();
    *od.last_mut().expect("rank >= 1") = out;
    // A few rows (decoding): stream W once instead of packing it for the general gemm.
    if m <= crate::matvec::MAX_ROWS {
        if let (CpuStorage::F32(xs), CpuStorage::F32(wv), Some((w0, w1))) =
            (s, ws, wl.contiguous_offsets())
        {
            let xs = &xs[l.start_offset()..l.start_offset() + m * k];
            return Ok((
                CpuStorage::F32(crate::matvec::matmul_wt(xs, m, k, &wv[w0..w1], out)),
                Shape::from(od),
            ));
        }
    }
    // f32/f64: straight into gemm with an output that is not zero-filled first.
    if let Some((w0, w1)) = wl.contiguous_offsets() {
        let x0 = l.start_offset();
        let dims = (m, k, out);
        match (s, ws) {
            (CpuStorage::F32(xs), CpuStorage::F32(wv)) => {
                let y = crate::matmul::matmul(
                    &xs[x0..x0 + m * k],
                    &wv[w0..w1],
                    dims,
                    crate::matmul::Rhs::Transposed,
                );
                return Ok((CpuStorage::F32(y), Shape::from(od)));
            }
            (CpuStorage::F64(xs), CpuStorage::F64(wv)) => {
                let y = crate::matmul::matmul(
                    &xs[x0..x0 + m * k],
                    &wv[w0..w1],
                    dims,
                    crate::matmul::Rhs::Transposed,
                );
                return Ok((CpuStorage::F64(y), Shape::from(od)));
            }
            _ => {}
        }
    }
    let lhs_l = Layout::contiguous_with_offset((m, k), l.start_offset());
    let rhs_l = wl.transpose(0, 1)?;
    use candle_core::backend::BackendStorage;
    let res = s.matmul(ws, (1, m, out, k), &lhs_l, &rhs_l)?;
    Ok((res, Shape::from(od)))
}

/// `g @ W` for `g (..., out)` and a constant `W (out, in)` (the input gradient of `x @ Wᵀ`), as a
/// new `(..., in)` tensor; f32/f64 go straight into gemm, other types through candle.
pub fn matmul_w(g: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (out, inp) = weight.dims2()?;
    let g = g.contiguous()?;
    let mut dims = g.dims().to_vec();
    if dims.last() != Some(&out) {
        candle_core::bail!(
            "frozen-linear backward: gradient {:?} does not match weight ({out}, {inp})",
            g.dims()
        );
    }
    *dims.last_mut().expect("rank >= 1") = inp;
    let rows = g.elem_count() / out.max(1);
    if let Some(t) = crate::matmul::matmul_tensors(
        &g,
        crate::matmul::Lhs::Plain,
        weight,
        crate::matmul::Rhs::Plain,
        (rows, out, inp),
        dims.clone(),
    )? {
        return Ok(t);
    }
    g.reshape(((), out))?.matmul(weight)?.reshape(dims)
}

/// `r + x @ Wᵀ` on raw storage (f32/f64, contiguous): `r` is copied into the output and gemm
/// accumulates the product onto it, so no separate add pass runs.
pub fn matmul_wt_add(
    x: &Tensor,
    weight: &Tensor,
    r: &Tensor,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (out, inp) = weight.dims2()?;
    let rows = x.elem_count() / inp.max(1);
    if x.dims().last() != Some(&inp) || r.elem_count() != rows * out {
        candle_core::bail!(
            "frozen-linear: input {:?}, weight ({out}, {inp}), residual {:?} do not fit",
            x.dims(),
            r.dims()
        );
    }
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let (rs, rl) = r.storage_and_layout();
    let ((x0, x1), (w0, w1), (r0, r1)) = match (
        xl.contiguous_offsets(),
        wl.contiguous_offsets(),
        rl.contiguous_offsets(),
    ) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => candle_core::bail!("frozen-linear: contiguous input, weight and residual required"),
    };
    let mut od = x.dims().to_vec();
    *od.last_mut().expect("rank >= 1") = out;
    let dims = (rows, inp, out);
    let y = match (&*xs, &*ws, &*rs) {
        (
            Storage::Cpu(CpuStorage::F32(a)),
            Storage::Cpu(CpuStorage::F32(w)),
            Storage::Cpu(CpuStorage::F32(r)),
        ) => {
            let mut y = r[r0..r1].to_vec();
            crate::matmul::matmul_into(
                &mut y,
                &a[x0..x1],
                &w[w0..w1],
                dims,
                crate::matmul::Rhs::Transposed,
                true,
            );
            CpuStorage::F32(y)
        }
        (
            Storage::Cpu(CpuStorage::F64(a)),
            Storage::Cpu(CpuStorage::F64(w)),
            Storage::Cpu(CpuStorage::F64(r)),
        ) => {
            let mut y = r[r0..r1].to_vec();
            crate::matmul::matmul_into(
                &mut y,
                &a[x0..x1],
                &w[w0..w1],
                dims,
                crate::matmul::Rhs::Transposed,
                true,
            );
            CpuStorage::F64(y)
        }
        _ => candle_core::bail!("frozen-linear: f32 or f64 on cpu only"),
    };
    Ok((y, Shape::from(od)))
}
