//! AdamW with decoupled weight decay and global-norm clipping, whose state can be checkpointed
//! exactly (candle's AdamW does not expose its moments, so an exact resume needs our own).

use candle_core::{backprop::GradStore, Tensor, Var};
use std::collections::HashMap;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Optimiser over a fixed, named list of variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    /// Per variable, its moments, updated in place with the variable by `imix_kernels::adamw`
    /// (one pass, no temporaries).
    mv: Vec<imix_kernels::adamw::Moments>,
    /// Updates applied so far.
    pub t: usize,
    cfg: AdamWConfig,
}

impl AdamW {
    /// Zero moments for `vars` (name, var).
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> candle_core::Result<Self> {
        let mv = vars
            .iter()
            .map(|(_, v)| imix_kernels::adamw::Moments::zeros(v.elem_count(), v.dtype()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            mv,
            t: 0,
            cfg,
        })
    }

    /// Global L2 norm of the gradients of our variables (missing gradients count as zero).
    pub fn grad_norm(&self, grads: &GradStore) -> candle_core::Result<f64> {
        let mut s = 0f64;
        for (_, v) in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                s += imix_kernels::adamw::sum_squares(g)? as f64;
            }
        }
        Ok(s.sqrt())
    }

    /// One update with learning rate `lr`, gradients scaled down so their global norm is at most `clip`.
    /// Returns the gradient norm before clipping. A non-finite gradient is an error and changes
    /// nothing (no weight, moment or step count), so the last good state can still be saved.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: f64) -> candle_core::Result<f64> {
        let norm = self.grad_norm(grads)?;
        if !norm.is_finite() {
            candle_core::bail!(
                "non-finite gradient (norm {norm}): training diverged; lower the learning rate"
            );
        }
        let scale = if clip > 0.0 && norm > clip {
            clip / (norm + 1e-6)
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        // The factors as candle's `affine` would take them (the kernel rounds each to the
        // variable's type).
        let h = imix_kernels::adamw::AdamWStep {
            scale,
            b1: (b1, 1.0 - b1),
            b2: (b2, 1.0 - b2),
            inv_c: (1.0 / c1, 1.0 / c2),
            eps: self.cfg.eps,
            decay_lr: (1.0 - lr * self.cfg.weight_decay, lr),
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            imix_kernels::adamw::step(var.as_tensor(), &mut self.mv[i], g, h)?;
        }
        Ok(norm)
    }

    /// Moments as named tensors (`m.<name>`, `v.<name>`) for checkpoints (copies: the moments
    /// change in place).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut s = HashMap::new();
        for (i, (n, var)) in self.vars.iter().enumerate() {
            let (m, v) = self.mv[i]
                .to_tensors(var.dims(), var.device())
                .expect("moments hold one value per weight");
            s.insert(format!("m.{n}"), m);
            s.insert(format!("v.{n}"), v);
        }
        s
    }

    /// Restores moments written by [`AdamW::state`]; `t` is restored by the caller.
    pub fn load_state(&mut self, s: &HashMap<String, Tensor>) -> Result<(), String> {
        for (i, (n, var)) in self.vars.iter().enumerate() {
            let mut parts = Vec::with_capacity(2);
            for key in [format!("m.{n}"), format!("v.{n}")] {
                let t = s
                    .get(&key)
                    .ok_or_else(|| format!("missing optimizer tensor {key}"))?;
                if t.dims() != var.dims() {
                    return Err(format!(
                        "optimizer tensor {key} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ));
                }
                parts.push(t);
            }
            self.mv[i] =
                imix_kernels::adamw::Moments::from_tensors(parts[0], parts[1], var.dtype())
                    .map_err(|e| format!("optimizer state of {n}: {e}"))?;
        }
        Ok(())
    }
}

/// Linear warm-up to `peak`, then cosine decay to `peak * floor` at `total` steps.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let p = ((step - warmup) as f64 / span).min(1.0);
    peak * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}
