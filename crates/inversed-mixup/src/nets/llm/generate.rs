//! Cached, batched decoding from input embeddings: greedy, beam search, seeded top-p sampling.

use super::{KvCache, KvDelta, Llm, Utf8Guard};
use crate::eval::classes::argmax;
use crate::{Error, Result};
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decode {
    /// Most likely token.
    Greedy,
    /// Beam search with this many beams (length-normalised score, as transformers' default).
    Beam(usize),
    /// Nucleus sampling: smallest set of tokens whose probability reaches `p`.
    TopP(f32),
    /// N candidates (greedy, then N-1 top-p 0.9 samples), the one whose embedding is closest to
    /// the target kept. Selection needs the encoder, so it happens in `method::invert`; the LLM
    /// alone decodes this greedily.
    Rerank(usize),
    /// N greedy rounds of embedding-space correction: each round decodes from the previous input
    /// moved by 1/N of what the last output's embedding missed (target minus output embedding,
    /// rescaled to the target's norm); the output closest to the target is kept. Like `Rerank`,
    /// selection happens in `method::invert`; the LLM alone decodes this greedily.
    Correct(usize),
    /// Beam search guided by the encoder: each step keeps the W extensions (of the W most likely
    /// next tokens of each of the W beams) whose text embeds closest to the target, plus a small
    /// likelihood term; the best finished sentence by the same score is kept. The scoring needs
    /// the encoder, so it happens in `method::invert`; the LLM alone decodes this as `beam:W`.
    Guided(usize),
}

/// Scores hypotheses of a guided beam search: `(row, token ids)` to one score each, higher better.
pub type HypothesisScore<'a> = dyn FnMut(&[(usize, &[u32])]) -> Result<Vec<f32>> + 'a;

/// Most beams (rows × W) that a guided beam search advances together: its rows go in chunks of
/// 128 / W, the rows up to which a projection adds its LoRA delta inside its own product
/// (`imix_kernels`' `DELTA_MAX_ROWS`). Beams are independent, so the text is the same:
/// `guided:16` over 16 held-out sentences wrote the same file in 157.8-160.5 s instead of
/// 161.1-168.4 s (two alternated runs each), at peak RSS 1.08 GB instead of 1.80 GB.
pub const GUIDED_BEAM_ROWS: usize = 128;

/// Largest beam width or rerank count accepted: memory and time grow linearly with it.
pub const MAX_CANDIDATES: usize = 64;

impl std::str::FromStr for Decode {
    type Err = Error;
    /// Parses `greedy`, `beam:W`, `top-p:P`, `rerank:N`, `correct:N` or `guided:W`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!("`decode` {s:?}: expected greedy, beam:W, top-p:P (0 < P <= 1), rerank:N, correct:N or guided:W (W, N from 1 to {MAX_CANDIDATES})"))
        };
        let count = |w: &str| w.parse().ok().filter(|w| (1..=MAX_CANDIDATES).contains(w));
        match s.split_once(':') {
            None if s == "greedy" => Ok(Decode::Greedy),
            Some(("beam", w)) => count(w).map(Decode::Beam).ok_or_else(bad),
            Some(("rerank", n)) => count(n).map(Decode::Rerank).ok_or_else(bad),
            Some(("correct", n)) => count(n).map(Decode::Correct).ok_or_else(bad),
            Some(("guided", n)) => count(n).map(Decode::Guided).ok_or_else(bad),
            Some(("top-p", p)) => p
                .parse()
                .ok()
                .filter(|&p: &f32| p > 0.0 && p <= 1.0)
                .map(Decode::TopP)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// Generation settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Decoding strategy.
    pub decode: Decode,
    /// Most new tokens per sequence.
    pub max_new_tokens: usize,
    /// Seed for sampling; row `i` of a batch uses its own stream derived from `seed + i`.
    pub seed: u64,
    /// Sampling temperature (top-p only).
    pub temperature: f32,
    /// Never produce an n-gram of this many tokens twice in one output (0: off). The default 3
    /// stops the loops a small decoder falls into ("a film about a film about ...").
    pub no_repeat_ngram: usize,
    /// Divides positive (multiplies negative) logits of tokens already generated (1: off).
    pub repetition_penalty: f32,
    /// Only tokens that keep the text valid UTF-8 (a byte-level decoder can otherwise emit half a
    /// character, which reads as U+FFFD); off only where a test needs the raw argmax.
    pub valid_utf8: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            decode: Decode::Greedy,
            max_new_tokens: 48,
            seed: 0,
            temperature: 1.0,
            no_repeat_ngram: 3,
            repetition_penalty: 1.0,
            valid_utf8: true,
        }
    }
}

impl GenerateOptions {
    /// These options with seeded top-p 0.9 sampling on stream `k`: its seed is `seed + k << 32`,
    /// so that each candidate or retry (k = 1, 2, ...) samples apart from the others and from k = 0.
    pub fn sampled(&self, k: u64) -> GenerateOptions {
        GenerateOptions {
            decode: Decode::TopP(0.9),
            seed: self.seed.wrapping_add(k << 32),
            ..self.clone()
        }
    }

    /// Applies the repetition controls and the UTF-8 guard to the next-token scores of a sequence
    /// that has produced `seq`.
    fn constrain(&self, seq: &[u32], row: &mut [f32], guard: &Utf8Guard, eos: u32) {
        if self.repetition_penalty != 1.0 {
            for &t in seq {
                let v = &mut row[t as usize];
                *v = if *v > 0.0 {
                    *v / self.repetition_penalty
                } else {
                    *v * self.repetition_penalty
                };
            }
        }
        for t in banned(seq, self.no_repeat_ngram) {
            row[t as usize] = f32::NEG_INFINITY;
        }
        if self.valid_utf8 {
            guard.constrain(seq, row, eos);
        }
    }

    /// A finished sequence as returned: without a character the length limit cut.
    fn finish(&self, mut seq: Vec<u32>, guard: &Utf8Guard) -> Vec<u32> {
        if self.valid_utf8 {
            guard.trim(&mut seq);
        }
        seq
    }
}

/// Tokens that would complete an `n`-gram already in `seq` (none when `n` is 0 or `seq` short).
fn banned(seq: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || seq.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &seq[seq.len() + 1 - n..];
    seq.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

impl Llm {
    /// Decodes one continuation per row of `prompt` `(b, t, hidden)`; returns token ids without EOS.
    pub fn generate(&self, prompt: &Tensor, opts: &GenerateOptions) -> Result<Vec<Vec<u32>>> {
        self.generate_deep(prompt, None, opts)
    }

    /// [`Llm::generate`] with deep soft tokens: K/V deltas at some of the prompt's positions.
    pub fn generate_deep(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        opts: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        match opts.decode {
            Decode::Beam(w) | Decode::Guided(w) if w > 1 => self.beam(prompt, deep, w, opts),
            _ => self.sample(prompt, deep, opts),
        }
    }

    /// Runs the prompt into a fresh cache; returns the cache and the hidden states.
    fn prefill(&self, prompt: &Tensor, deep: Option<&KvDelta>) -> Result<(KvCache, Tensor)> {
        let mut cache = self.new_cache();
        let h = self.forward_embeds_deep(prompt, Some(&mut cache), false, None, deep)?;
        Ok((cache, h))
    }

    /// Greedy decoding of exactly `n` tokens per row, ignoring EOS (benchmarks: fixed work).
    pub fn generate_fixed(&self, prompt: &Tensor, n: usize) -> Result<Vec<Vec<u32>>> {
        let b = prompt.dim(0)?;
        let mut cache = self.new_cache();
        let mut lp = self.last_logits(&self.forward_embeds(prompt, Some(&mut cache), false)?)?;
        let mut out = vec![Vec::with_capacity(n); b];
        for step in 0..n {
            let next: Vec<u32> = lp.iter().map(|r| argmax(r) as u32).collect();
            for (o, &t) in out.iter_mut().zip(&next) {
                o.push(t);
            }
            if step + 1 < n {
                let x = self.embed_ids(&next)?.unsqueeze(1)?;
                lp = self.last_logits(&self.forward_embeds(&x, Some(&mut cache), false)?)?;
            }
        }
        Ok(out)
    }

    /// Output-layer logits at the last position. Greedy and top-p need no log-softmax: argmax
    /// and the (self-normalising) nucleus are the same on logits.
    fn last_logits(&self, h: &Tensor) -> Result<Vec<Vec<f32>>> {
        let t = h.dim(1)?;
        Ok(self
            .logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)?
            .to_vec2()?)
    }

    /// Log-probabilities at the last position (beam search adds them up).
    fn last_logprobs(&self, h: &Tensor) -> Result<Vec<Vec<f32>>> {
        let t = h.dim(1)?;
        let l = self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)?;
        Ok(super::log_softmax(&l)?.to_vec2()?)
    }

    fn sample(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        opts: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let b = prompt.dim(0)?;
        let eos = self.tokenizer.eos;
        let mut rngs: Vec<ChaCha8Rng> = (0..b)
            .map(|i| ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(i as u64)))
            .collect();
        let (mut cache, h) = self.prefill(prompt, deep)?;
        let mut lp = self.last_logits(&h)?;
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for _ in 0..opts.max_new_tokens {
            let mut next = Vec::with_capacity(b);
            for (i, row) in lp.iter_mut().enumerate() {
                opts.constrain(&out[i], row, self.tokenizer.utf8_guard(), eos);
                let tok = match opts.decode {
                    Decode::TopP(p) => top_p(row, p, opts.temperature, &mut rngs[i]),
                    _ => argmax(row) as u32,
                };
                if !done[i] {
                    if tok == eos {
                        done[i] = true;
                    } else {
                        out[i].push(tok);
                    }
                }
                next.push(tok);
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let x = self.embed_ids(&next)?.unsqueeze(1)?;
            lp = self.last_logits(&self.forward_embeds(&x, Some(&mut cache), false)?)?;
        }
        Ok(out
            .into_iter()
            .map(|o| opts.finish(o, self.tokenizer.utf8_guard()))
            .collect())
    }

    #[allow(clippy::needless_range_loop)] // r indexes several parallel per-sequence arrays
    fn beam(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        w: usize,
        opts: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let max_new = opts.max_new_tokens;
        let b = prompt.dim(0)?;
        let eos = self.tokenizer.eos;
        let (mut cache, mut lp) = self.prefill_beams(prompt, deep, w)?;
        let mut seqs: Vec<Vec<u32>> = vec![Vec::new(); b * w];
        let mut score = first_beams_alive(b, w);
        let mut finished: Vec<Vec<(f32, Vec<u32>)>> = vec![Vec::new(); b];
        for step in 0..max_new {
            let mut parents = Vec::with_capacity(b * w);
            let mut next = Vec::with_capacity(b * w);
            let mut new_score = Vec::with_capacity(b * w);
            for r in 0..b {
                let mut cand =
                    self.extensions(opts, &seqs, &mut lp, &score, r * w..(r + 1) * w, 2 * w);
                cand.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut kept = 0;
                for (s, row, tok) in cand {
                    if kept == w {
                        break;
                    }
                    if tok == eos {
                        let len = (step + 1) as f32;
                        finished[r].push((s / len, seqs[row].clone()));
                        continue;
                    }
                    parents.push(row as u32);
                    next.push(tok);
                    new_score.push(s);
                    kept += 1;
                }
                while kept < w {
                    parents.push((r * w) as u32);
                    next.push(eos);
                    new_score.push(f32::NEG_INFINITY);
                    kept += 1;
                }
            }
            // Stop a sequence once w hypotheses finished and none alive can beat the best.
            let all_done = (0..b).all(|r| {
                let best = finished[r]
                    .iter()
                    .map(|f| f.0)
                    .fold(f32::NEG_INFINITY, f32::max);
                finished[r].len() >= w
                    && (0..w).all(|j| new_score[r * w + j] / (step + 1) as f32 <= best)
            });
            seqs = extend(&seqs, &parents, &next);
            score = new_score;
            if all_done || step + 1 == max_new {
                break;
            }
            lp = self.advance_beams(&mut cache, &parents, &next)?;
        }
        Ok((0..b)
            .map(|r| {
                let alive = (r * w..(r + 1) * w)
                    .filter(|&row| score[row] > f32::NEG_INFINITY)
                    .map(|row| (score[row] / seqs[row].len().max(1) as f32, &seqs[row]));
                opts.finish(best_of(&finished[r], alive), self.tokenizer.utf8_guard())
            })
            .collect())
    }
}

impl Llm {
    /// Guided beam search (`Decode::Guided`): each step extends every alive beam by its `w` most
    /// likely next tokens, ranks the extensions of a row by `score` plus `lm_weight` times their
    /// mean token log-probability, and keeps the best `w`; an extension by EOS finishes its
    /// hypothesis. A row is done once `w` hypotheses finished; the returned sequence is the best
    /// finished or alive hypothesis by the same rank. Rows are searched in chunks of at most
    /// [`GUIDED_BEAM_ROWS`] beams; `score` sees the rows' indices in `prompt`.
    pub fn guided_beam(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        w: usize,
        lm_weight: f32,
        opts: &GenerateOptions,
        score: &mut HypothesisScore,
    ) -> Result<Vec<Vec<u32>>> {
        let b = prompt.dim(0)?;
        let per = (GUIDED_BEAM_ROWS / w).max(1);
        let mut out = Vec::with_capacity(b);
        for start in (0..b).step_by(per) {
            let len = per.min(b - start);
            let rows = Tensor::arange(start as u32, (start + len) as u32, prompt.device())?;
            let deep = deep.map(|d| d.select(&rows)).transpose()?;
            let mut shifted = |asked: &[(usize, &[u32])]| {
                let asked: Vec<(usize, &[u32])> =
                    asked.iter().map(|&(r, ids)| (start + r, ids)).collect();
                score(&asked)
            };
            out.extend(self.guided_beam_chunk(
                &prompt.narrow(0, start, len)?,
                deep.as_ref(),
                w,
                lm_weight,
                opts,
                &mut shifted,
            )?);
        }
        Ok(out)
    }

    /// [`Self::guided_beam`] on rows whose beams advance together.
    #[allow(clippy::needless_range_loop)] // r indexes several parallel per-sequence arrays
    fn guided_beam_chunk(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        w: usize,
        lm_weight: f32,
        opts: &GenerateOptions,
        score: &mut HypothesisScore,
    ) -> Result<Vec<Vec<u32>>> {
        let max_new = opts.max_new_tokens;
        let b = prompt.dim(0)?;
        let eos = self.tokenizer.eos;
        let (mut cache, mut lp) = self.prefill_beams(prompt, deep, w)?;
        let mut seqs: Vec<Vec<u32>> = vec![Vec::new(); b * w];
        // Summed log-probability of each beam.
        let mut lm = first_beams_alive(b, w);
        let mut rank: Vec<f32> = vec![f32::NEG_INFINITY; b * w];
        let mut finished: Vec<Vec<(f32, Vec<u32>)>> = vec![Vec::new(); b];
        for step in 0..max_new {
            // Candidates (row, parent beam, token, summed log-probability).
            let mut cand: Vec<(usize, usize, u32, f32)> = Vec::new();
            for r in 0..b {
                if finished[r].len() >= w {
                    continue;
                }
                for (l, row, tok) in
                    self.extensions(opts, &seqs, &mut lp, &lm, r * w..(r + 1) * w, w)
                {
                    if l > f32::NEG_INFINITY {
                        cand.push((r, row, tok, l));
                    }
                }
            }
            let texts: Vec<Vec<u32>> = cand
                .iter()
                .map(|&(_, row, tok, _)| {
                    let mut s = seqs[row].clone();
                    if tok != eos {
                        s.push(tok);
                    }
                    s
                })
                .collect();
            let asked: Vec<(usize, &[u32])> = cand
                .iter()
                .zip(&texts)
                .map(|(c, t)| (c.0, t.as_slice()))
                .collect();
            let cos = if asked.is_empty() {
                Vec::new()
            } else {
                score(&asked)?
            };
            let mut by_row: Vec<Vec<(f32, usize)>> = vec![Vec::new(); b];
            for (i, c) in cand.iter().enumerate() {
                let len = (step + 1) as f32;
                by_row[c.0].push((cos[i] + lm_weight * c.3 / len, i));
            }
            let mut parents = Vec::with_capacity(b * w);
            let mut next = Vec::with_capacity(b * w);
            let mut new_lm = Vec::with_capacity(b * w);
            let mut new_rank = Vec::with_capacity(b * w);
            for r in 0..b {
                let mut c = std::mem::take(&mut by_row[r]);
                c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut kept = 0;
                for (rk, i) in c {
                    if kept == w {
                        break;
                    }
                    let (_, row, tok, l) = cand[i];
                    if tok == eos {
                        finished[r].push((rk, texts[i].clone()));
                        continue;
                    }
                    parents.push(row as u32);
                    next.push(tok);
                    new_lm.push(l);
                    new_rank.push(rk);
                    kept += 1;
                }
                while kept < w {
                    parents.push((r * w) as u32);
                    next.push(eos);
                    new_lm.push(f32::NEG_INFINITY);
                    new_rank.push(f32::NEG_INFINITY);
                    kept += 1;
                }
            }
            seqs = extend(&seqs, &parents, &next);
            lm = new_lm;
            rank = new_rank;
            let all_done = (0..b).all(|r| finished[r].len() >= w);
            if all_done || step + 1 == max_new {
                break;
            }
            lp = self.advance_beams(&mut cache, &parents, &next)?;
        }
        Ok((0..b)
            .map(|r| {
                let alive = (r * w..(r + 1) * w)
                    .filter(|&row| lm[row] > f32::NEG_INFINITY)
                    .map(|row| (rank[row], &seqs[row]));
                opts.finish(best_of(&finished[r], alive), self.tokenizer.utf8_guard())
            })
            .collect())
    }
}

impl Llm {
    /// The `k` likeliest next tokens of each alive beam in `rows` (dead where `sum`, its summed
    /// log-probability, is -inf), after the repetition and UTF-8 constraints:
    /// `(summed log-probability with the token, beam row, token)`, beam by beam.
    fn extensions(
        &self,
        opts: &GenerateOptions,
        seqs: &[Vec<u32>],
        lp: &mut [Vec<f32>],
        sum: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
    ) -> Vec<(f32, usize, u32)> {
        let (mut cand, eos) = (Vec::new(), self.tokenizer.eos);
        for row in rows.filter(|&row| sum[row] != f32::NEG_INFINITY) {
            opts.constrain(&seqs[row], &mut lp[row], self.tokenizer.utf8_guard(), eos);
            cand.extend(
                top_k(&lp[row], k)
                    .into_iter()
                    .map(|(tok, l)| (sum[row] + l, row, tok)),
            );
        }
        cand
    }

    /// The prompt's cache with `w` copies of each row (row `r*w + j` is beam `j` of sequence `r`),
    /// and the next-token log-probabilities of every copy.
    fn prefill_beams(
        &self,
        prompt: &Tensor,
        deep: Option<&KvDelta>,
        w: usize,
    ) -> Result<(KvCache, Vec<Vec<f32>>)> {
        let idx: Vec<u32> = (0..prompt.dim(0)? as u32)
            .flat_map(|r| std::iter::repeat_n(r, w))
            .collect();
        let idx = Tensor::new(idx.as_slice(), prompt.device())?;
        let deep = deep.map(|d| d.select(&idx)).transpose()?;
        let (cache, h) = self.prefill(&prompt.index_select(&idx, 0)?, deep.as_ref())?;
        Ok((cache, self.last_logprobs(&h)?))
    }

    /// One step of a beam search: the cache reordered to the kept beams' `parents`, each fed its
    /// `next` token; the log-probabilities after it.
    fn advance_beams(
        &self,
        cache: &mut KvCache,
        parents: &[u32],
        next: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        cache.select(&Tensor::new(parents, &self.device)?)?;
        let x = self.embed_ids(next)?.unsqueeze(1)?;
        self.last_logprobs(&self.forward_embeds(&x, Some(cache), false)?)
    }
}

/// The best-scored of a sequence's finished hypotheses and its `alive` ones (on ties: the last
/// finished one, else the first alive one); empty when there are none.
fn best_of<'a>(
    finished: &[(f32, Vec<u32>)],
    alive: impl Iterator<Item = (f32, &'a Vec<u32>)>,
) -> Vec<u32> {
    let mut best: Option<(f32, &Vec<u32>)> = finished
        .iter()
        .map(|(s, q)| (*s, q))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    for (s, q) in alive {
        if best.is_none_or(|b| s > b.0) {
            best = Some((s, q));
        }
    }
    best.map(|b| b.1.clone()).unwrap_or_default()
}

/// Summed log-probabilities of `b` sequences' `w` beams at the start: only beam 0 alive, so that
/// the first step does not pick the same token `w` times.
fn first_beams_alive(b: usize, w: usize) -> Vec<f32> {
    (0..b * w)
        .map(|i| if i % w == 0 { 0.0 } else { f32::NEG_INFINITY })
        .collect()
}

/// Each kept beam's sequence: its parent's, extended by its token.
fn extend(seqs: &[Vec<u32>], parents: &[u32], next: &[u32]) -> Vec<Vec<u32>> {
    parents
        .iter()
        .zip(next)
        .map(|(&p, &t)| {
            let mut s = seqs[p as usize].clone();
            s.push(t);
            s
        })
        .collect()
}

fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    idx.select_nth_unstable_by(k - 1, |a, b| row[*b as usize].total_cmp(&row[*a as usize]));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

/// Nucleus sampling from logits (or log-probabilities: the same distribution).
fn top_p(logits: &[f32], p: f32, temperature: f32, rng: &mut ChaCha8Rng) -> u32 {
    let t = temperature.max(1e-4);
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    let m = logits[idx[0]] / t;
    let probs: Vec<f32> = idx.iter().map(|&i| (logits[i] / t - m).exp()).collect();
    let z: f32 = probs.iter().sum();
    let mut cum = 0.0;
    let mut cut = probs.len();
    for (n, q) in probs.iter().enumerate() {
        cum += q / z;
        if cum >= p {
            cut = n + 1;
            break;
        }
    }
    let zc: f32 = probs[..cut].iter().sum();
    let mut u = rng.random::<f32>() * zc;
    for n in 0..cut {
        u -= probs[n];
        if u <= 0.0 {
            return idx[n] as u32;
        }
    }
    idx[cut - 1] as u32
}
