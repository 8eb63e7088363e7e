//! LoRA: trainable low-rank deltas on the frozen LLM's projections, `W x + (alpha/r) B A x`.
//!
//! The base weights are never touched: the deltas are `Var`s owned by the adaptor (and stored in
//! its file), one packed vector per transformer block, so that each block's training op takes
//! them as a single extra input (see `train`). For generation the deltas are merged once, into a
//! copy ([`Llm::with_lora`]) or in place ([`Llm::merge_lora`]): into dense weights as
//! `W + scale · B A`, so decoding costs what it cost without LoRA; onto quantised weights as an
//! attached rank-sized product (a few percent of the projection's work).

use super::{Llm, LlmConfig};
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use imix_kernels::low_rank::Piece as LowRankPiece;
use imix_kernels::{FrozenLinear, FrozenRows, LowRank};
use serde::{Deserialize, Serialize};

/// A projection of a transformer block that can carry a LoRA delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// Feed-forward gate projection.
    Gate,
    /// Feed-forward up projection.
    Up,
    /// Feed-forward down projection.
    Down,
}

impl Target {
    /// Every target, in block order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// Parses a comma-separated list (`q,k,v,o,gate,up,down` or `all`).
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        if s.trim() == "all" {
            return Ok(Target::ALL.to_vec());
        }
        let mut v = Vec::new();
        for p in s.split(',').map(str::trim) {
            let t = match p {
                "q" => Target::Q,
                "k" => Target::K,
                "v" => Target::V,
                "o" => Target::O,
                "gate" => Target::Gate,
                "up" => Target::Up,
                "down" => Target::Down,
                _ => return Err(Error::Config(format!("LoRA target {p:?}: expected q, k, v, o, gate, up, down (comma-separated) or all"))),
            };
            if !v.contains(&t) {
                v.push(t);
            }
        }
        if v.is_empty() {
            return Err(Error::Config("LoRA targets: none given".into()));
        }
        v.sort();
        Ok(v)
    }
}

/// The shape of the LLM the deltas belong to (recorded so that a mismatched LLM is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraDims {
    /// Transformer blocks.
    pub layers: usize,
    /// Model width.
    pub hidden: usize,
    /// Width of the key and value projections.
    pub kv_dim: usize,
    /// Feed-forward width.
    pub ffn: usize,
}

impl LoraDims {
    /// The dimensions of `cfg`.
    pub fn of(cfg: &LlmConfig) -> Self {
        Self {
            layers: cfg.layers,
            hidden: cfg.hidden,
            kv_dim: cfg.hidden / cfg.heads * cfg.kv_heads,
            ffn: cfg.ffn,
        }
    }
}

/// LoRA settings, stored in the adaptor file's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r of each delta.
    pub rank: usize,
    /// Scale numerator: deltas are multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Projections that carry a delta, in block order.
    pub targets: Vec<Target>,
    /// The LLM's dimensions.
    pub dims: LoraDims,
}

/// Which stacked frozen projection of a block a target lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Stacked Q, K, V.
    Qkv,
    /// Attention output.
    O,
    /// Stacked gate, up.
    GateUp,
    /// Feed-forward down.
    Down,
}

/// Where one target's A and B sit in a block's packed vector, and its place in its slot.
#[derive(Debug, Clone, Copy)]
struct Piece {
    slot: Slot,
    /// First output column of the target inside its slot's stacked output.
    col: usize,
    inp: usize,
    out: usize,
    /// Offset of A `(r, inp)` in the packed vector; B `(out, r)` follows it.
    at: usize,
}

impl LoraConfig {
    /// Checks the settings: rank and alpha positive, at least one target.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::Config("LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Config(format!(
                "LoRA alpha must be a positive number, got {}",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Config(
                "LoRA needs at least one target projection".into(),
            ));
        }
        Ok(())
    }

    /// The factor `alpha / rank` applied to every delta.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    fn pieces(&self) -> Vec<Piece> {
        let d = self.dims;
        let mut at = 0;
        let mut out = Vec::new();
        for &t in &self.targets {
            let (slot, col, inp, o) = match t {
                Target::Q => (Slot::Qkv, 0, d.hidden, d.hidden),
                Target::K => (Slot::Qkv, d.hidden, d.hidden, d.kv_dim),
                Target::V => (Slot::Qkv, d.hidden + d.kv_dim, d.hidden, d.kv_dim),
                Target::O => (Slot::O, 0, d.hidden, d.hidden),
                Target::Gate => (Slot::GateUp, 0, d.hidden, d.ffn),
                Target::Up => (Slot::GateUp, d.ffn, d.hidden, d.ffn),
                Target::Down => (Slot::Down, 0, d.ffn, d.hidden),
            };
            out.push(Piece {
                slot,
                col,
                inp,
                out: o,
                at,
            });
            at += self.rank * (inp + o);
        }
        out
    }

    /// Length of one block's packed vector.
    pub fn block_len(&self) -> usize {
        self.pieces()
            .iter()
            .map(|p| self.rank * (p.inp + p.out))
            .sum()
    }

    /// Width of a slot's stacked output.
    fn slot_out(&self, s: Slot) -> usize {
        let d = self.dims;
        match s {
            Slot::Qkv => d.hidden + 2 * d.kv_dim,
            Slot::O | Slot::Down => d.hidden,
            Slot::GateUp => 2 * d.ffn,
        }
    }
}

/// The trainable deltas of every block: one packed `Var` per block.
pub struct Lora {
    cfg: LoraConfig,
    blocks: Vec<Var>,
}

impl Lora {
    /// An identity of these deltas (the first block's variable): what [`Llm::merged_lora`] records.
    pub fn id(&self) -> candle_core::TensorId {
        self.blocks[0].id()
    }

    /// Fresh deltas: A uniform in ±1/√in (seeded), B zero, so that training starts from the base model.
    pub fn new(cfg: LoraConfig, seed: u64, device: &candle_core::Device) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x10_4a00);
        let pieces = cfg.pieces();
        let mut blocks = Vec::with_capacity(cfg.dims.layers);
        for _ in 0..cfg.dims.layers {
            let mut v = vec![0f32; cfg.block_len()];
            for p in &pieces {
                let b = 1.0 / (p.inp as f32).sqrt();
                for x in &mut v[p.at..p.at + cfg.rank * p.inp] {
                    *x = rng.random_range(-b..b);
                }
            }
            blocks.push(Var::from_tensor(&Tensor::from_vec(
                v,
                cfg.block_len(),
                device,
            )?)?);
        }
        Ok(Self { cfg, blocks })
    }

    /// Its settings.
    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    /// The packed per-block variables, named `lora.NN` (sorted order = block order).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("lora.{i:03}"), v.clone()))
            .collect()
    }

    /// The packed vector of block `i`.
    pub(crate) fn block(&self, i: usize) -> &Var {
        &self.blocks[i]
    }

    /// Refuses an LLM whose shape differs from the one the deltas were trained for.
    pub fn check(&self, llm: &LlmConfig) -> Result<()> {
        let want = LoraDims::of(llm);
        if want != self.cfg.dims {
            return Err(Error::Config(format!(
                "LoRA deltas were trained for an LLM of shape {:?}, but the LLM in use has {:?}",
                self.cfg.dims, want
            )));
        }
        Ok(())
    }
}

/// One block's deltas as tensors, cut from its packed vector (a view: gradients flow back to it
/// when the vector is a live `Var`).
pub(crate) struct BlockLora<'a> {
    cfg: &'a LoraConfig,
    parts: Vec<(Piece, Tensor, Tensor)>,
}

impl<'a> BlockLora<'a> {
    /// Cuts `packed` (length `cfg.block_len()`) into each target's A `(r, in)` and B `(out, r)`.
    pub(crate) fn new(cfg: &'a LoraConfig, packed: &Tensor) -> candle_core::Result<Self> {
        let r = cfg.rank;
        let parts = cfg
            .pieces()
            .into_iter()
            .map(|p| {
                let a = packed.narrow(0, p.at, r * p.inp)?.reshape((r, p.inp))?;
                let b = packed
                    .narrow(0, p.at + r * p.inp, p.out * r)?
                    .reshape((p.out, r))?;
                Ok((p, a, b))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { cfg, parts })
    }

    fn scale(&self) -> f64 {
        self.cfg.scale()
    }

    /// `scale · (h Aᵀ) Bᵀ` for every target of `slot`, stacked as the slot's output `(n, slot_out)`
    /// (zeros where a projection of the slot has no delta); `None` when the slot has none.
    pub(crate) fn delta(&self, slot: Slot, h: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let mine: Vec<&(Piece, Tensor, Tensor)> =
            self.parts.iter().filter(|p| p.0.slot == slot).collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let n = h.elem_count() / h.dim(candle_core::D::Minus1)?;
        let h2 = h.reshape((n, ()))?;
        let mut cols = Vec::new();
        let mut at = 0;
        for (p, a, b) in mine {
            if p.col > at {
                cols.push(Tensor::zeros((n, p.col - at), h.dtype(), h.device())?);
            }
            cols.push(((h2.matmul(&a.t()?)? * self.scale())?.matmul(&b.t()?))?);
            at = p.col + p.out;
        }
        let width = self.cfg.slot_out(slot);
        if width > at {
            cols.push(Tensor::zeros((n, width - at), h.dtype(), h.device())?);
        }
        let mut dims = h.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = width;
        Ok(Some(Tensor::cat(&cols, 1)?.reshape(dims)?))
    }

    /// Backward of [`BlockLora::delta`] for `slot` with input `h` and output gradient `g`:
    /// adds the input gradient to `g_h` and each target's `(dA, dB)` to `grads` (indexed like the pieces).
    pub(crate) fn delta_backward(
        &self,
        slot: Slot,
        h: &Tensor,
        g: &Tensor,
        g_h: &mut Tensor,
        grads: &mut [Option<(Tensor, Tensor)>],
    ) -> candle_core::Result<()> {
        let s = self.scale();
        let n = h.elem_count() / h.dim(candle_core::D::Minus1)?;
        let h2 = h.reshape((n, ()))?;
        let g2 = g.reshape((n, ()))?;
        let mut gh: Option<Tensor> = None;
        for (i, (p, a, b)) in self.parts.iter().enumerate() {
            if p.slot != slot {
                continue;
            }
            let gt = g2.narrow(1, p.col, p.out)?;
            let u = h2.matmul(&a.t()?)?; // (n, r)
            let v = gt.matmul(b)?; // (n, r)
            let db = (gt.t()?.matmul(&u)? * s)?;
            let da = (v.t()?.matmul(&h2)? * s)?;
            let dh = (v.matmul(a)? * s)?;
            gh = Some(match gh {
                Some(x) => (x + dh)?,
                None => dh,
            });
            grads[i] = Some((da, db));
        }
        if let Some(x) = gh {
            *g_h = (&*g_h + x.reshape(g_h.dims())?)?;
        }
        Ok(())
    }

    /// Packs per-target `(dA, dB)` back into one vector laid out like the block's packed vector.
    pub(crate) fn pack(
        &self,
        grads: Vec<Option<(Tensor, Tensor)>>,
        dtype: DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        let mut flat = Vec::with_capacity(2 * grads.len());
        for ((p, _, _), g) in self.parts.iter().zip(grads) {
            match g {
                Some((da, db)) => {
                    flat.push(da.flatten_all()?);
                    flat.push(db.flatten_all()?);
                }
                None => flat.push(Tensor::zeros(
                    self.cfg.rank * (p.inp + p.out),
                    dtype,
                    device,
                )?),
            }
        }
        Tensor::cat(&flat, 0)
    }

    /// Number of targets (the length of the gradient list of [`BlockLora::delta_backward`]).
    pub(crate) fn len(&self) -> usize {
        self.parts.len()
    }

    /// The deltas of `slot` as one constant [`LowRank`]: the targets' A stacked `(n·r, in)`, each
    /// B for its own rows of the slot's stacked output; `None` when the slot has none.
    fn low_rank(&self, slot: Slot) -> candle_core::Result<Option<LowRank>> {
        let mine: Vec<&(Piece, Tensor, Tensor)> =
            self.parts.iter().filter(|p| p.0.slot == slot).collect();
        let Some(inp) = mine.first().map(|p| p.0.inp) else {
            return Ok(None);
        };
        let r = self.cfg.rank;
        let vec = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
        };
        let mut a = Vec::with_capacity(mine.len() * r * inp);
        let mut pieces = Vec::with_capacity(mine.len());
        for (j, (p, pa, pb)) in mine.iter().enumerate() {
            a.extend(vec(pa)?);
            pieces.push(LowRankPiece {
                row0: p.col,
                col0: j * r,
                b: vec(pb)?,
                rank: r,
            });
        }
        let dims = (mine.len() * r, inp, self.cfg.slot_out(slot));
        LowRank::new(a, dims, pieces, self.scale() as f32)
            .map(Some)
            .ok_or_else(|| {
                candle_core::Error::Msg("LoRA: targets of one slot differ in width".into())
            })
    }

    /// `W + scale · B A` for each target of `slot`, written into the slot's stacked weight.
    fn merge(&self, slot: Slot, w: &Tensor) -> candle_core::Result<Tensor> {
        let mut w = w.clone();
        for (p, a, b) in self.parts.iter().filter(|p| p.0.slot == slot) {
            let d = (b.matmul(a)? * self.scale())?.to_dtype(w.dtype())?;
            let rows = w.narrow(0, p.col, p.out)?;
            w = w.slice_assign(&[p.col..p.col + p.out, 0..p.inp], &(rows + d)?)?;
        }
        Ok(w)
    }
}

impl Llm {
    /// A copy of this LLM whose projections include the LoRA deltas, for generation. `self` and
    /// its weights are not changed; quantised weights are shared with the copy.
    pub fn with_lora(&self, lora: &Lora) -> Result<Llm> {
        let mut copy = self.clone();
        copy.merge_lora(lora)?;
        Ok(copy)
    }

    /// Merges the LoRA deltas into these projections in place (as [`Llm::with_lora`]), for a
    /// process that only decodes with that LoRA: no second copy of dense projections. Dense base
    /// weights are gone afterwards; an LLM that already carries merged deltas is refused.
    pub fn merge_lora(&mut self, lora: &Lora) -> Result<()> {
        lora.check(&self.cfg)?;
        if self.merged_lora.is_some() {
            return Err(Error::Config(
                "the LLM already carries merged LoRA deltas: merge into a freshly loaded one"
                    .into(),
            ));
        }
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let packed = lora.block(i).as_tensor().detach();
            let bl = BlockLora::new(&lora.cfg, &packed)?;
            // Each merged weight replaces its base weight at once, so the base's memory is freed
            // slot by slot (unless a clone, as in `with_lora`, still holds it).
            for (slot, l) in [
                (Slot::Qkv, &mut blk.qkv),
                (Slot::O, &mut blk.o),
                (Slot::GateUp, &mut blk.gate_up),
                (Slot::Down, &mut blk.down),
            ] {
                // A quantised weight cannot absorb its delta: it is attached instead and added
                // after the product (same values up to rounding).
                *l = match l.rows().dense() {
                    Some(w) => FrozenRows::Dense(FrozenLinear::new(bl.merge(slot, w)?)).into(),
                    None => match bl.low_rank(slot)? {
                        Some(d) => l.with_delta(d)?,
                        None => l.clone(),
                    },
                };
            }
        }
        self.merged_lora = Some(lora.id());
        Ok(())
    }

    /// The LoRA merged into these weights ([`Lora::id`]), if any.
    pub fn merged_lora(&self) -> Option<candle_core::TensorId> {
        self.merged_lora
    }
}
