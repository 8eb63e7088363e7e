//! Inversion: decode embeddings (own or mixed) into sentences through adaptor, prompt and LLM,
//! and score reconstructions of known sentences.

use crate::eval::text;
use crate::method::adaptor::Adaptor;
use crate::method::prompt::Prompt;
use crate::nets::encoder::Encoder;
use crate::nets::llm::{Decode, GenerateOptions, KvDelta, Llm};
use crate::Result;
use candle_core::{Tensor, D};
use serde::Serialize;

/// The three models wired together for decoding.
pub struct Inverter<'a> {
    /// Task encoder M.
    pub encoder: &'a Encoder,
    /// Frozen LLM.
    pub llm: &'a Llm,
    /// Trained adaptor A.
    pub adaptor: &'a Adaptor,
    prompt: Prompt,
    /// The LLM with the adaptor's LoRA deltas merged into its weights, when it has any.
    merged: Option<Llm>,
}

/// One reconstructed sentence with its scores.
#[derive(Debug, Clone, Serialize)]
pub struct InvertRow {
    /// The input sentence.
    pub text: String,
    /// The sentence decoded from its embedding.
    pub reconstruction: String,
    /// Encoder cosine between text and reconstruction.
    pub cosine: f64,
    /// Token F1 (0..1).
    pub token_f1: f64,
    /// Sentence BLEU-4 (0..1).
    pub bleu: f64,
    /// Exact match (case-insensitive).
    pub exact: bool,
    /// Cosine under an independent judge encoder that neither training nor reranking uses (when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_cosine: Option<f64>,
}

/// Means over a set of reconstructions.
#[derive(Debug, Clone, Serialize)]
pub struct InvertSummary {
    /// Sentences scored.
    pub n: usize,
    /// Mean token F1.
    pub mean_token_f1: f64,
    /// Mean BLEU.
    pub mean_bleu: f64,
    /// Mean encoder cosine.
    pub mean_cosine: f64,
    /// Fraction reconstructed exactly.
    pub exact: f64,
    /// Mean cosine under the judge encoder (when every row has one).
    pub mean_judge_cosine: Option<f64>,
    /// Reconstructions that came out empty (scored 0, and counted here rather than hidden).
    pub empty: usize,
    /// Reconstructions that loop (a word 3-gram three or more times).
    pub looping: usize,
}

impl std::fmt::Display for InvertSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean_token_f1={:.4} mean_bleu={:.4} mean_cosine={:.4} exact={:.4}",
            self.mean_token_f1, self.mean_bleu, self.mean_cosine, self.exact
        )?;
        if let Some(j) = self.mean_judge_cosine {
            write!(f, " mean_judge_cosine={j:.4}")?;
        }
        if self.empty > 0 {
            write!(f, " empty={}", self.empty)?;
        }
        write!(f, " looping={}", self.looping)
    }
}

/// The decoding `imix invert` and the Python `invert` use unless told otherwise. On the 64 sentences
/// `imix align` holds out, with the shipped adaptor and [`GUIDED_LM_WEIGHT`], `guided:16` keeps
/// more of the sentence's words than `guided:8` (token F1 0.485 / 0.498 on the dev / confirmation
/// halves against 0.452 / 0.466) and sits closer to it (MiniLM cosine 0.842 / 0.820 against
/// 0.810 / 0.807), at about three times the time (RESULTS.md, "Guided decoding"). `guided:8`, and
/// `correct:16` before it, were the default before.
pub const INVERT_DECODE: &str = "guided:16";

/// The decoding `imix invert --mixes` uses unless told otherwise. On held-out pairs at λ
/// 0.3/0.5/0.7, `guided:16` puts mixes at cosine 0.752 from their mixed target on both the dev and
/// the confirmation half, against 0.726 / 0.738 for `guided:8`, at about twice its cost (RESULTS.md,
/// "Guided decoding").
pub const MIXES_DECODE: &str = "guided:16";

/// Where mixed targets came from: each row's sources `a` and `b` (embeddings) and its weight λ of `a`.
pub struct MixSources<'a> {
    /// Embeddings of the first sources, one row per mix.
    pub a: &'a Tensor,
    /// Embeddings of the second sources.
    pub b: &'a Tensor,
    /// Each mix's weight of `a`.
    pub lambdas: &'a [f64],
}

/// Weight of a guided mix's content-ratio gap |content λ − λ| beside its cosine to the mix: chosen
/// on the dev pairs of RESULTS.md, "Guided decoding".
pub const MIX_GAP_WEIGHT: f64 = 0.5;

/// Weight of a guided hypothesis's mean token log-probability beside its cosine, for single
/// sentences: chosen on align's held-out dev sentences (RESULTS.md, "Guided decoding"), where
/// 0.1 kept more of the sentence's own words than 0.05 (token F1 0.452 against 0.393).
pub const GUIDED_LM_WEIGHT: f32 = 0.1;

/// The same weight for mixes, chosen with [`MIX_GAP_WEIGHT`] on the dev pairs.
pub const GUIDED_MIX_LM_WEIGHT: f32 = 0.05;

/// Guided decoding's score of candidate embeddings `e` for target rows `rows` of `h`: the cosine
/// to the target, less [`MIX_GAP_WEIGHT`] times |content λ − λ| when the rows are mixes of `sources`.
fn guided_scores(
    h: &Tensor,
    sources: Option<&MixSources>,
    rows: &[u32],
    e: &Tensor,
) -> Result<Vec<f64>> {
    let rows_t = Tensor::new(rows, h.device())?;
    let mut s = cosine_rows(&h.index_select(&rows_t, 0)?, e)?;
    if let Some(src) = sources {
        let lam: Vec<f64> = rows.iter().map(|&r| src.lambdas[r as usize]).collect();
        let (a, b) = (
            src.a.index_select(&rows_t, 0)?,
            src.b.index_select(&rows_t, 0)?,
        );
        let content = crate::method::augment::content_lambda(e, &a, &b, &lam)?;
        for ((v, c), l) in s.iter_mut().zip(&content).zip(&lam) {
            *v -= MIX_GAP_WEIGHT * (c - l).abs();
        }
    }
    Ok(s)
}

/// Merges `adaptor`'s LoRA deltas into `llm` in place, for a process that decodes with that
/// adaptor only: its inverters then need no merged copy of the LLM (a copy of dense projections;
/// quantised ones are shared and carry the deltas beside them). Nothing to do without deltas or
/// when they are merged already.
pub fn merge_adaptor_lora(llm: &mut Llm, adaptor: &Adaptor) -> Result<()> {
    match adaptor.lora() {
        Some(l) if llm.merged_lora() != Some(l.id()) => llm.merge_lora(l),
        _ => Ok(()),
    }
}

impl<'a> Inverter<'a> {
    /// Wires the models; the adaptor's template is tokenised once. An adaptor with LoRA deltas
    /// decodes through a merged copy of the LLM, or through `llm` itself when its deltas are
    /// already merged into it ([`Llm::merge_lora`]); an LLM carrying other deltas is refused.
    pub fn new(encoder: &'a Encoder, llm: &'a Llm, adaptor: &'a Adaptor) -> Result<Self> {
        let merged =
            match (adaptor.lora(), llm.merged_lora()) {
                (Some(l), None) => Some(llm.with_lora(l)?),
                (Some(l), Some(id)) if id == l.id() => None,
                (None, None) => None,
                _ => return Err(crate::Error::Config(
                    "the LLM carries another adaptor's merged LoRA deltas: decode this adaptor \
                     with an unmerged LLM"
                        .into(),
                )),
            };
        let prompt = Prompt::new(
            &adaptor.config().template,
            adaptor.config().k,
            merged.as_ref().unwrap_or(llm),
        )?;
        Ok(Self {
            encoder,
            llm,
            adaptor,
            prompt,
            merged,
        })
    }

    /// The LLM that generates: with the LoRA deltas merged in, when the adaptor has them.
    pub fn generator(&self) -> &Llm {
        self.merged.as_ref().unwrap_or(self.llm)
    }

    /// Decodes embeddings `(n, enc_dim)` into sentences (one generation batch). With
    /// `rerank:N`, N candidates per row are decoded and the one whose embedding is closest to the
    /// row of `h` is kept.
    pub fn decode(&self, h: &Tensor, opts: &GenerateOptions) -> Result<Vec<String>> {
        let n = match opts.decode {
            Decode::Rerank(n) => n,
            Decode::Correct(n) => return self.correct(h, n, opts),
            Decode::Guided(w) => return self.guided(h, w, None, opts),
            _ => return self.decode_once(h, opts),
        };
        let mut best = self.decode_once(
            h,
            &GenerateOptions {
                decode: Decode::Greedy,
                ..opts.clone()
            },
        )?;
        if n == 1 {
            return Ok(best);
        }
        let mut best_cos = self.similarity(h, &best)?;
        for c in 1..n {
            // Each candidate its own sampling streams (rows use seed + row within a candidate).
            let cand = self.decode_once(h, &opts.sampled(c as u64))?;
            keep_closer(&mut best, &mut best_cos, &cand, self.similarity(h, &cand)?);
        }
        Ok(best)
    }

    /// `correct:N`: N greedy decodes, the first from `h`, each next one from the previous input
    /// moved by 1/N of what the last output's embedding missed (`h - embed(output)`) and rescaled
    /// row-wise to the norm of `h`; the output closest to `h` is kept. The step 1/N was chosen on
    /// the 64 sentences `imix align` holds out (N = 4: 0.25 best of 0.1 / 0.25 / 0.5 / 1; N = 8:
    /// 0.1 best of 0.05 / 0.1 / 0.25); the correction's direction beat a random one of the same
    /// length (MiniLM cosine 0.665 vs 0.645 at N = 4), and both beat sampled candidates.
    fn correct(&self, h: &Tensor, n: usize, opts: &GenerateOptions) -> Result<Vec<String>> {
        let rounds = self.correction_rounds(h, n, opts)?;
        let mut best = rounds[0].0.clone();
        let mut best_cos = cosine_rows(h, &rounds[0].1)?;
        for (out, e) in &rounds[1..] {
            keep_closer(&mut best, &mut best_cos, out, cosine_rows(h, e)?);
        }
        Ok(best)
    }

    /// Decodes mixed embeddings `h` of `sources`; `guided:W` then also ranks by how near each
    /// text's content ratio lies to its λ ([`MIX_GAP_WEIGHT`]), other decodings as [`Self::decode`].
    pub fn decode_mixes(
        &self,
        h: &Tensor,
        sources: &MixSources,
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        match opts.decode {
            Decode::Guided(w) => self.guided(h, w, Some(sources), opts),
            _ => self.decode(h, opts),
        }
    }

    /// `guided:W`: beam search whose beams are ranked by the cosine of their text's embedding to
    /// the row of `h` (see [`Llm::guided_beam`]), less [`MIX_GAP_WEIGHT`] times the content
    /// ratio's distance to λ when the rows are mixes of known `sources`.
    fn guided(
        &self,
        h: &Tensor,
        w: usize,
        sources: Option<&MixSources>,
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        let llm = self.generator();
        let (p, deep) = self.llm_input(h)?;
        let mut score = |asked: &[(usize, &[u32])]| -> Result<Vec<f32>> {
            let texts: Vec<String> = asked
                .iter()
                .map(|(_, ids)| Ok(llm.tokenizer().decode(ids)?.trim().to_string()))
                .collect::<Result<_>>()?;
            let rows: Vec<u32> = asked.iter().map(|(r, _)| *r as u32).collect();
            let s = guided_scores(h, sources, &rows, &self.embed_texts(&texts)?)?;
            Ok(s.into_iter().map(|c| c as f32).collect())
        };
        let lm_weight = match sources {
            Some(_) => GUIDED_MIX_LM_WEIGHT,
            None => GUIDED_LM_WEIGHT,
        };
        let ids = llm.guided_beam(&p, deep.as_ref(), w, lm_weight, opts, &mut score)?;
        ids.iter()
            .map(|s| Ok(llm.tokenizer().decode(s)?.trim().to_string()))
            .collect()
    }

    /// The N rounds of `correct:N`, each round's sentences with their embeddings: the candidates
    /// that `correct:N` picks from (mix alignment keeps all of them).
    pub fn correction_rounds(
        &self,
        h: &Tensor,
        n: usize,
        opts: &GenerateOptions,
    ) -> Result<Vec<(Vec<String>, Tensor)>> {
        let greedy = GenerateOptions {
            decode: Decode::Greedy,
            ..opts.clone()
        };
        let norm = |t: &Tensor| -> Result<Tensor> {
            Ok(t.sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?)
        };
        let h_norm = norm(h)?;
        let mut input = h.clone();
        let out = self.decode_once(&input, &greedy)?;
        let e = self.embed_texts(&out)?;
        let mut rounds = vec![(out, e)];
        for _ in 1..n.max(1) {
            let e = &rounds.last().expect("one round at least").1;
            let moved = (&input + ((h - e)? / n as f64)?)?;
            input = moved
                .broadcast_div(&norm(&moved)?)?
                .broadcast_mul(&h_norm)?;
            let out = self.decode_once(&input, &greedy)?;
            let e = self.embed_texts(&out)?;
            rounds.push((out, e));
        }
        Ok(rounds)
    }

    /// `n` sampled decodes (top-p 0.9, each its own streams) of every row, with their embeddings.
    pub fn sampled_candidates(
        &self,
        h: &Tensor,
        n: usize,
        opts: &GenerateOptions,
    ) -> Result<Vec<(Vec<String>, Tensor)>> {
        (1..=n)
            .map(|c| {
                let out = self.decode_once(h, &opts.sampled(c as u64))?;
                let e = self.embed_texts(&out)?;
                Ok((out, e))
            })
            .collect()
    }

    /// Embeddings of sentences (an empty one embedded as a space).
    pub fn embed_texts(&self, texts: &[String]) -> Result<Tensor> {
        let refs: Vec<&str> = texts
            .iter()
            .map(|s| if s.is_empty() { " " } else { s.as_str() })
            .collect();
        self.encoder.embed_batched(&refs)
    }

    /// Cosine between each row of `h` and the embedding of the matching sentence.
    fn similarity(&self, h: &Tensor, texts: &[String]) -> Result<Vec<f64>> {
        cosine_rows(h, &self.embed_texts(texts)?)
    }

    /// The LLM's input for embeddings `h`: the prompt with the adaptor's soft tokens, and the
    /// deep soft tokens' K/V deltas when the adaptor has them.
    fn llm_input(&self, h: &Tensor) -> Result<(Tensor, Option<KvDelta>)> {
        let soft = self.adaptor.forward(h)?;
        let p = self.prompt.embeds(self.generator(), &soft)?;
        let deep = self
            .adaptor
            .deep()
            .map(|d| d.deltas(&soft, self.prompt.soft_start()))
            .transpose()?;
        Ok((p, deep))
    }

    fn decode_once(&self, h: &Tensor, opts: &GenerateOptions) -> Result<Vec<String>> {
        let llm = self.generator();
        let (p, deep) = self.llm_input(h)?;
        let ids = llm.generate_deep(&p, deep.as_ref(), opts)?;
        ids.iter()
            .map(|s| Ok(llm.tokenizer().decode(s)?.trim().to_string()))
            .collect()
    }

    /// Reconstructs each text from its own embedding and scores it; `progress(done, total)`.
    pub fn invert(
        &self,
        texts: &[String],
        batch: usize,
        opts: &GenerateOptions,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<InvertRow>> {
        let mut out = Vec::with_capacity(texts.len());
        for (bi, chunk) in texts.chunks(batch.max(1)).enumerate() {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let h = self.encoder.embed(&refs)?;
            let mut o = opts.clone();
            o.seed = opts.seed.wrapping_add((bi * batch) as u64);
            let rec = self.decode(&h, &o)?;
            let rec_refs: Vec<&str> = rec
                .iter()
                .map(|s| if s.is_empty() { " " } else { s.as_str() })
                .collect();
            let h2 = self.encoder.embed(&rec_refs)?;
            let cos = cosine_rows(&h, &h2)?;
            for ((t, r), c) in chunk.iter().zip(rec).zip(cos) {
                out.push(InvertRow {
                    token_f1: text::token_f1(t, &r),
                    bleu: text::bleu(t, &r),
                    exact: text::exact(t, &r),
                    text: t.clone(),
                    reconstruction: r,
                    cosine: c,
                    judge_cosine: None,
                });
            }
            progress(out.len(), texts.len());
        }
        Ok(out)
    }
}

/// Where a candidate is closer to its target than the best so far, it becomes the best.
fn keep_closer(best: &mut [String], best_cos: &mut [f64], cand: &[String], cos: Vec<f64>) {
    for (i, c) in cos.into_iter().enumerate() {
        if c > best_cos[i] {
            best_cos[i] = c;
            best[i] = cand[i].clone();
        }
    }
}

/// Row-wise cosine similarity of two `(n, d)` matrices.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    let c = (dot / (na * nb)?.clamp(1e-12, f64::MAX)?)?;
    Ok(c.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// Means of a set of rows.
pub fn summarize(rows: &[InvertRow]) -> InvertSummary {
    let n = rows.len().max(1) as f64;
    InvertSummary {
        n: rows.len(),
        mean_token_f1: rows.iter().map(|r| r.token_f1).sum::<f64>() / n,
        mean_bleu: rows.iter().map(|r| r.bleu).sum::<f64>() / n,
        mean_cosine: rows.iter().map(|r| r.cosine).sum::<f64>() / n,
        exact: rows.iter().filter(|r| r.exact).count() as f64 / n,
        mean_judge_cosine: rows
            .iter()
            .map(|r| r.judge_cosine)
            .sum::<Option<f64>>()
            .map(|s| s / n),
        empty: rows
            .iter()
            .filter(|r| r.reconstruction.trim().is_empty())
            .count(),
        looping: rows
            .iter()
            .filter(|r| crate::eval::text::loops(&r.reconstruction))
            .count(),
    }
}

/// The floor an inverter must beat: for each text, the sentence of `pool` (embeddings `pool_h`,
/// unit rows) nearest to its embedding, scored like a reconstruction.
pub fn retrieve(
    encoder: &Encoder,
    pool: &[String],
    pool_h: &Tensor,
    texts: &[String],
) -> Result<Vec<InvertRow>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let h = encoder.embed(&refs)?;
        let sims = h.matmul(&pool_h.t()?)?;
        let best = sims.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let cos = sims.max(D::Minus1)?.to_vec1::<f32>()?;
        for ((t, &i), c) in chunk.iter().zip(&best).zip(cos) {
            let r = pool[i as usize].clone();
            out.push(InvertRow {
                token_f1: text::token_f1(t, &r),
                bleu: text::bleu(t, &r),
                exact: text::exact(t, &r),
                text: t.clone(),
                reconstruction: r,
                cosine: c as f64,
                judge_cosine: None,
            });
        }
    }
    Ok(out)
}

/// Adds the judge encoder's cosine between each text and its reconstruction to `rows`.
pub fn judge(judge: &Encoder, rows: &mut [InvertRow]) -> Result<()> {
    for chunk in rows.chunks_mut(64) {
        let a: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        let b: Vec<&str> = chunk
            .iter()
            .map(|r| {
                if r.reconstruction.is_empty() {
                    " "
                } else {
                    r.reconstruction.as_str()
                }
            })
            .collect();
        let cos = cosine_rows(&judge.embed(&a)?, &judge.embed(&b)?)?;
        for (r, c) in chunk.iter_mut().zip(cos) {
            r.judge_cosine = Some(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// For a mix at λ 0.5 of a = e1 and b = e2: a candidate at the target scores its cosine, 1, with
    /// or without sources; one whose content ratio is 0.75 loses MIX_GAP_WEIGHT × 0.25 with them.
    #[test]
    fn guided_scores_penalise_a_content_ratio_away_from_lambda() {
        let t = |v: &[f32]| Tensor::from_slice(v, (1, 3), &Device::Cpu).unwrap();
        let (a, b) = (t(&[1.0, 0.0, 0.0]), t(&[0.0, 1.0, 0.0]));
        let h = t(&[0.6, 0.6, 0.53]);
        let lambdas = [0.5];
        let src = MixSources {
            a: &a,
            b: &b,
            lambdas: &lambdas,
        };
        let middle = Tensor::cat(&[t(&[0.6, 0.6, 0.53]), t(&[0.85, 0.35, 0.53])], 0).unwrap();
        let plain = guided_scores(&h, None, &[0, 0], &middle).unwrap();
        let mixed = guided_scores(&h, Some(&src), &[0, 0], &middle).unwrap();
        assert!((plain[0] - 1.0).abs() < 1e-6, "{plain:?}");
        assert!(
            (mixed[0] - plain[0]).abs() < 1e-6,
            "on λ: no penalty {mixed:?}"
        );
        let gap = 0.75 - 0.5;
        assert!(
            (plain[1] - mixed[1] - MIX_GAP_WEIGHT * gap).abs() < 1e-5,
            "{plain:?} {mixed:?}"
        );
    }
}
