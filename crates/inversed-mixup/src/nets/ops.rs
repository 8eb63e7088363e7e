//! The inference/training switch per op: candle's fused kernels (no backward) when nothing is
//! trained, our kernels or differentiable compositions (with a backward) when something is.

use candle_core::Tensor;
use imix_kernels::fused;

/// RMSNorm; `grad` selects our fused op with a backward instead of candle's kernel without one.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, grad: bool) -> candle_core::Result<Tensor> {
    if grad {
        fused::rms_norm(x, w, eps)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)
    }
}

/// LayerNorm; `grad` selects our fused op with a backward instead of candle's forward-only kernel.
pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    grad: bool,
) -> candle_core::Result<Tensor> {
    if grad {
        fused::layer_norm(x, w, b, eps)
    } else {
        candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps)
    }
}

/// Softmax over the last dimension; `grad` selects our fused op with a backward.
pub fn softmax(x: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
    if grad {
        fused::softmax(x)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Rotate-half rotary embedding on `(b, h, t, d)` with `cos`/`sin` of shape `(t, d/2)`; `grad`
/// selects our fused op with a backward.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
    if grad {
        fused::rope(x, cos, sin)
    } else {
        candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)
    }
}

/// A linear layer on `(.., in)`; with `grad`, the product and the bias are our ops, whose
/// backward passes write the weight gradient in the weight's layout and sum the bias rows in one
/// pass (bit-identical to candle's `Linear`, which transposes a strided weight gradient and walks
/// every element of the bias gradient with a divmod).
pub fn linear(l: &candle_nn::Linear, x: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
    use candle_nn::Module;
    match (grad, l.bias(), x.dims()) {
        (true, Some(b), &[n, t, d]) if x.is_contiguous() => {
            let y = imix_kernels::linear::linear(&x.reshape((n * t, d))?, l.weight())?;
            imix_kernels::bias::bias_add(&y, b)?.reshape((n, t, ()))
        }
        _ => l.forward(x),
    }
}
