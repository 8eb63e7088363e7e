//! Stage 3: mix embeddings of labelled pairs, invert the mix into a sentence, give it a soft label,
//! and judge it for manifold intrusion with the warmed-up task model.

use crate::data::labelled::Labelled;
use crate::method::classifier::Classifier;
use crate::method::intrusion::{judge, Mitigation};
use crate::method::invert::{cosine_rows, Inverter, MixSources};
use crate::method::mixup::{soft_label, Mix};
use crate::nets::llm::GenerateOptions;
use crate::{Error, Result};
use candle_core::{Tensor, D};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One source of a mix, as written to the output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Source {
    /// Its text.
    pub text: String,
    /// Its label name.
    pub label: String,
    /// Its row index in the input data.
    pub index: usize,
}

/// One augmented sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AugRow {
    /// The generated sentence.
    pub text: String,
    /// Weight of source A.
    pub lambda: f64,
    /// First source (weight lambda).
    pub source_a: Source,
    /// Second source (weight 1 - lambda).
    pub source_b: Source,
    /// Label name -> probability used for training (after mitigation).
    pub soft_label: BTreeMap<String, f64>,
    /// The mixup label before mitigation.
    pub mix_label: BTreeMap<String, f64>,
    /// Task model's prediction on the generated sentence.
    pub predicted: BTreeMap<String, f64>,
    /// Manifold intrusion verdict.
    pub intrusion: bool,
    /// Why it intrudes (empty otherwise).
    pub intrusion_reason: String,
    /// Encoder cosine of the generated sentence to source A's embedding.
    pub cos_a: f64,
    /// Encoder cosine to source B's embedding.
    pub cos_b: f64,
    /// Encoder cosine to the mixed embedding it was decoded from (fidelity to its target).
    pub cos_target: f64,
    /// The ratio the sentence's own embedding shows: where it projects on the line from source B
    /// (0) to source A (1), clamped to [0, 1]. Far from `lambda` when the decoder copied a source.
    pub content_lambda: f64,
}

/// Where a generated sentence's training label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LabelFrom {
    /// The mixing ratio lambda (the paper's soft label).
    #[default]
    Mix,
    /// The ratio the sentence's embedding shows (`content_lambda`): a decode that copied one source
    /// gets that source's label instead of a blend its text does not carry.
    Content,
}

/// Where each row of `g` lies on the segment from `b` (0) to `a` (1), clamped to [0, 1]; rows whose
/// sources coincide keep `fallback`.
pub fn content_lambda(g: &Tensor, a: &Tensor, b: &Tensor, fallback: &[f64]) -> Result<Vec<f64>> {
    let d = (a - b)?;
    let num = ((g - b)? * &d)?.sum(D::Minus1)?.to_vec1::<f32>()?;
    let den = d.sqr()?.sum(D::Minus1)?.to_vec1::<f32>()?;
    Ok(num
        .iter()
        .zip(&den)
        .zip(fallback)
        .map(|((&n, &q), &f)| {
            if q > 1e-8 {
                f64::from(n / q).clamp(0.0, 1.0)
            } else {
                f
            }
        })
        .collect())
}

/// Settings of stage 3.
#[derive(Debug, Clone)]
pub struct AugmentOptions {
    /// Decoding settings (the seed is offset per batch, so output does not depend on batching order).
    pub gen: GenerateOptions,
    /// Confidence above which a contradicting prediction counts as intrusion.
    pub threshold: f64,
    /// What to do with intruders.
    pub mitigation: Mitigation,
    /// Mixes decoded together.
    pub batch_size: usize,
    /// Re-normalise mixed embeddings to unit length (the encoder's own embeddings are unit length).
    pub renormalize: bool,
    /// Where the label (before mitigation) comes from.
    pub label: LabelFrom,
    /// A decode that is one of its sources verbatim is sampled again (seeded top-p 0.9) up to this
    /// many times, keeping the first try that is not a copy (0: off). A near-source mix decoded back
    /// to its source adds a duplicate with a softened label; a sample of it adds a variation.
    pub resample_copies: usize,
    /// Candidates decoded per mix (over-generate and select): the decoding above, then seeded
    /// top-p samples; the one closest to the mixed target that is not a copy is kept (1: off).
    pub candidates: usize,
    /// Leave out a mix whose every candidate is a near copy of a source ([`is_near_copy`]).
    pub reject_copies: bool,
    /// The weight of the teacher (the task classifier's prediction on the generated text) in the
    /// label: `(1 - w) * label + w * prediction` (0: the label alone).
    pub teacher_weight: f64,
}

impl Default for AugmentOptions {
    fn default() -> Self {
        Self {
            gen: GenerateOptions::default(),
            threshold: 0.8,
            mitigation: Mitigation::Keep,
            batch_size: 16,
            renormalize: true,
            label: LabelFrom::Mix,
            resample_copies: 0,
            candidates: 1,
            reject_copies: false,
            teacher_weight: 0.0,
        }
    }
}

/// Token F1 to a source from which a sentence counts as a copy of it ([`is_near_copy`]).
pub const COPY_F1: f64 = 0.8;
/// Encoder cosine to a source from which a sentence counts as a copy of it.
pub const COPY_COSINE: f64 = 0.95;

/// Whether `text` is a near copy of source `a` or `b`: token F1 at least [`COPY_F1`] to either
/// (case and spacing aside), or an embedding at cosine [`COPY_COSINE`] or more to either
/// (`cos_a`, `cos_b`). A paraphrase that keeps the content but not the words passes.
pub fn is_near_copy(text: &str, a: &str, b: &str, cos_a: f64, cos_b: f64) -> bool {
    let f1 = |s: &str| crate::eval::text::token_f1(&s.to_lowercase(), &text.to_lowercase());
    f1(a) >= COPY_F1 || f1(b) >= COPY_F1 || cos_a >= COPY_COSINE || cos_b >= COPY_COSINE
}

/// `(1 - w) * label + w * teacher`: a label blended with the teacher's prediction.
pub fn teacher_label(label: &[f64], teacher: &[f64], w: f64) -> Vec<f64> {
    label
        .iter()
        .zip(teacher)
        .map(|(l, t)| (1.0 - w) * l + w * t)
        .collect()
}

/// Counts for the summary line.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AugmentStats {
    /// Mixes decoded.
    pub generated: usize,
    /// Samples judged intruding.
    pub intruding: usize,
    /// Intruders left out (drop).
    pub dropped: usize,
    /// Intruders relabelled.
    pub relabelled: usize,
    /// Decodes that produced no text (left out).
    pub empty: usize,
    /// Copies of a source replaced by a sampled variation (`resample_copies`).
    pub resampled: usize,
    /// Mixes left out because every candidate was a near copy of a source (`reject_copies`).
    #[serde(default)]
    pub rejected: usize,
}

/// Whether `text` is `a` or `b` word for word (case and spacing aside).
pub fn is_copy(text: &str, a: &str, b: &str) -> bool {
    let norm = |t: &str| {
        t.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let t = norm(text);
    t == norm(a) || t == norm(b)
}

/// Decodes again, by seeded top-p sampling, each row of `gen` that copies one of its sources,
/// up to `tries` times; a row that copies on every try keeps its text. Returns the rows replaced.
fn resample_copies(
    inv: &Inverter,
    hm: &Tensor,
    gen: &mut [String],
    chunk: &[Mix],
    texts: &[&str],
    g: &GenerateOptions,
    tries: usize,
) -> Result<usize> {
    let copies = |j: usize, t: &str| is_copy(t, texts[chunk[j].a], texts[chunk[j].b]);
    retry_copies(gen, tries, copies, |t, rows| {
        let sel = Tensor::new(
            rows.iter()
                .map(|&j| j as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            hm.device(),
        )?;
        // Each try its own sampling streams, as rerank's candidates have.
        inv.decode(&hm.index_select(&sel, 0)?, &g.sampled(t as u64 + 1))
    })
}

/// The loop of [`resample_copies`]: `decode(try, rows)` gives new texts for `rows`; a row is
/// replaced by the first non-empty text that `copies(row, text)` does not flag.
fn retry_copies(
    gen: &mut [String],
    tries: usize,
    copies: impl Fn(usize, &str) -> bool,
    mut decode: impl FnMut(usize, &[usize]) -> Result<Vec<String>>,
) -> Result<usize> {
    let mut todo: Vec<usize> = (0..gen.len()).filter(|&j| copies(j, &gen[j])).collect();
    let mut replaced = 0;
    for t in 0..tries {
        if todo.is_empty() {
            break;
        }
        let out = decode(t, &todo)?;
        let mut left = Vec::new();
        for (&j, text) in todo.iter().zip(out) {
            if text.is_empty() || copies(j, &text) {
                left.push(j);
            } else {
                gen[j] = text;
                replaced += 1;
            }
        }
        todo = left;
    }
    Ok(replaced)
}

/// For each mix of `chunk`, the candidate (index into `cands`) closest to its mixed target `hm`
/// among the non-empty ones that are not near copies of a source, or the closest non-empty one
/// when all are copies and `reject` is off; `None` when none is left.
#[allow(clippy::too_many_arguments)]
fn select(
    inv: &Inverter,
    cands: &[Vec<String>],
    ha: &Tensor,
    hb: &Tensor,
    hm: &Tensor,
    chunk: &[Mix],
    texts: &[&str],
    reject: bool,
) -> Result<Vec<Option<usize>>> {
    // (cos to the target, is a copy) per candidate and mix; None for an empty decode.
    let mut scored: Vec<Vec<Option<(f64, bool)>>> = Vec::new();
    for c in cands {
        let refs: Vec<&str> = c
            .iter()
            .map(|t| if t.is_empty() { " " } else { t.as_str() })
            .collect();
        let hg = inv.encoder.embed_batched(&refs)?;
        let (ca, cb, ct) = (
            cosine_rows(&hg, ha)?,
            cosine_rows(&hg, hb)?,
            cosine_rows(&hg, hm)?,
        );
        scored.push(
            (0..c.len())
                .map(|j| {
                    (!c[j].is_empty()).then(|| {
                        (
                            ct[j],
                            is_near_copy(&c[j], texts[chunk[j].a], texts[chunk[j].b], ca[j], cb[j]),
                        )
                    })
                })
                .collect(),
        );
    }
    let best = |j: usize, allow_copy: bool| {
        (0..cands.len())
            .filter_map(|t| {
                scored[t][j]
                    .filter(|&(_, copy)| allow_copy || !copy)
                    .map(|(cos, _)| (t, cos))
            })
            .fold(None, |b: Option<(usize, f64)>, x| {
                if b.is_none_or(|b| x.1 > b.1) {
                    Some(x)
                } else {
                    b
                }
            })
            .map(|(t, _)| t)
    };
    Ok((0..chunk.len())
        .map(|j| best(j, false).or_else(|| if reject { None } else { best(j, true) }))
        .collect())
}

/// `lambda * a + (1 - lambda) * b` row-wise, optionally re-normalised.
pub fn mix_embeddings(
    ha: &Tensor,
    hb: &Tensor,
    lambdas: &[f64],
    renormalize: bool,
) -> Result<Tensor> {
    let l = Tensor::new(
        lambdas
            .iter()
            .map(|&x| x as f32)
            .collect::<Vec<_>>()
            .as_slice(),
        ha.device(),
    )?
    .unsqueeze(1)?;
    let m = (ha.broadcast_mul(&l)? + hb.broadcast_mul(&(1.0 - &l)?)?)?;
    if renormalize {
        let n = m
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(m.broadcast_div(&n)?)
    } else {
        Ok(m)
    }
}

fn named(labels: &[String], p: &[f64]) -> BTreeMap<String, f64> {
    labels.iter().cloned().zip(p.iter().copied()).collect()
}

/// Runs stage 3 for the planned `mixes` of `data`; `progress(done, total)`.
pub fn augment(
    inv: &Inverter,
    cls: &Classifier,
    data: &Labelled,
    mixes: &[Mix],
    opt: &AugmentOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<AugRow>, AugmentStats)> {
    let texts: Vec<&str> = data.rows.iter().map(|r| r.text.as_str()).collect();
    let emb = inv.encoder.embed_batched(&texts)?;
    let c = data.labels.len();
    let mut rows = Vec::new();
    let mut st = AugmentStats::default();
    for (bi, chunk) in mixes.chunks(opt.batch_size.max(1)).enumerate() {
        let ia = Tensor::new(
            chunk
                .iter()
                .map(|m| m.a as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            emb.device(),
        )?;
        let ib = Tensor::new(
            chunk
                .iter()
                .map(|m| m.b as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            emb.device(),
        )?;
        let (ha, hb) = (emb.index_select(&ia, 0)?, emb.index_select(&ib, 0)?);
        let lambdas: Vec<f64> = chunk.iter().map(|m| m.lambda).collect();
        let hm = mix_embeddings(&ha, &hb, &lambdas, opt.renormalize)?;
        let mut g = opt.gen.clone();
        g.seed = opt.gen.seed.wrapping_add((bi * opt.batch_size) as u64);
        let sources = MixSources {
            a: &ha,
            b: &hb,
            lambdas: &lambdas,
        };
        let mut gen = inv.decode_mixes(&hm, &sources, &g)?;
        if opt.resample_copies > 0 {
            st.resampled +=
                resample_copies(inv, &hm, &mut gen, chunk, &texts, &g, opt.resample_copies)?;
        }
        let mut rejected = vec![false; gen.len()];
        if opt.candidates > 1 || opt.reject_copies {
            let mut cands = vec![gen];
            for t in 1..opt.candidates {
                cands.push(inv.decode(&hm, &g.sampled(t as u64))?);
            }
            let pick = select(inv, &cands, &ha, &hb, &hm, chunk, &texts, opt.reject_copies)?;
            gen = pick
                .iter()
                .enumerate()
                .map(|(j, c)| c.map_or_else(String::new, |t| cands[t][j].clone()))
                .collect();
            // Left out as copies: nothing picked though some candidate had text.
            rejected = (0..pick.len())
                .map(|j| pick[j].is_none() && cands.iter().any(|c| !c[j].is_empty()))
                .collect();
            st.rejected += rejected.iter().filter(|&&r| r).count();
        }
        let keep: Vec<usize> = (0..gen.len()).filter(|&j| !gen[j].is_empty()).collect();
        st.generated += chunk.len();
        st.empty += chunk.len() - keep.len() - rejected.iter().filter(|&&r| r).count();
        if !keep.is_empty() {
            let refs: Vec<&str> = keep.iter().map(|&j| gen[j].as_str()).collect();
            let hg = inv.encoder.embed_batched(&refs)?;
            let sel = Tensor::new(
                keep.iter()
                    .map(|&j| j as u32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                emb.device(),
            )?;
            let cos_a = cosine_rows(&hg, &ha.index_select(&sel, 0)?)?;
            let cos_b = cosine_rows(&hg, &hb.index_select(&sel, 0)?)?;
            let cos_target = cosine_rows(&hg, &hm.index_select(&sel, 0)?)?;
            let kept_lambdas: Vec<f64> = keep.iter().map(|&j| chunk[j].lambda).collect();
            let content = content_lambda(
                &hg,
                &ha.index_select(&sel, 0)?,
                &hb.index_select(&sel, 0)?,
                &kept_lambdas,
            )?;
            let pred = cls.probs(&hg)?;
            for (k, &j) in keep.iter().enumerate() {
                let m = &chunk[j];
                let (ya, yb) = (data.y[m.a], data.y[m.b]);
                let mix = soft_label(ya, yb, m.lambda, c);
                let base = match opt.label {
                    LabelFrom::Mix => mix.clone(),
                    LabelFrom::Content => soft_label(ya, yb, content[k], c),
                };
                let base = if opt.teacher_weight > 0.0 {
                    teacher_label(&base, &pred[k], opt.teacher_weight)
                } else {
                    base
                };
                let v = judge(&pred[k], &base, ya, yb, opt.threshold);
                if v.intrusion {
                    st.intruding += 1;
                    match opt.mitigation {
                        Mitigation::Drop => st.dropped += 1,
                        Mitigation::Relabel => st.relabelled += 1,
                        Mitigation::Keep => {}
                    }
                }
                let Some(soft) = opt.mitigation.apply(&base, &pred[k], v.intrusion) else {
                    continue;
                };
                let src = |i: usize| Source {
                    text: data.rows[i].text.clone(),
                    label: data.labels[data.y[i]].clone(),
                    index: i,
                };
                rows.push(AugRow {
                    text: gen[j].clone(),
                    lambda: m.lambda,
                    source_a: src(m.a),
                    source_b: src(m.b),
                    soft_label: named(&data.labels, &soft),
                    mix_label: named(&data.labels, &mix),
                    predicted: named(&data.labels, &pred[k]),
                    intrusion: v.intrusion,
                    intrusion_reason: v.reason,
                    cos_a: cos_a[k],
                    cos_b: cos_b[k],
                    cos_target: cos_target[k],
                    content_lambda: content[k],
                });
            }
        }
        progress(st.generated, mixes.len());
    }
    Ok((rows, st))
}

/// One sentence on the path between two sentences (`imix interpolate`).
#[derive(Debug, Clone, Serialize)]
pub struct PathStep {
    /// Weight of sentence A.
    pub lambda: f64,
    /// The decoded mix.
    pub text: String,
    /// Encoder cosine to A.
    pub cos_a: f64,
    /// Encoder cosine to B.
    pub cos_b: f64,
}

/// Decodes `steps` evenly spaced mixes from `b` (lambda 0) to `a` (lambda 1) and scores each
/// against both ends.
pub fn interpolate(
    inv: &Inverter,
    a: &str,
    b: &str,
    steps: usize,
    gen: &GenerateOptions,
) -> Result<Vec<PathStep>> {
    if steps < 2 {
        return Err(Error::Config(
            "`steps` must be at least 2 (the two ends)".into(),
        ));
    }
    let h = inv.encoder.embed(&[a, b])?;
    let lambdas: Vec<f64> = (0..steps).map(|i| i as f64 / (steps - 1) as f64).collect();
    let ha = h.get(0)?.unsqueeze(0)?.repeat((steps, 1))?;
    let hb = h.get(1)?.unsqueeze(0)?.repeat((steps, 1))?;
    let sources = MixSources {
        a: &ha,
        b: &hb,
        lambdas: &lambdas,
    };
    let out = inv.decode_mixes(&mix_embeddings(&ha, &hb, &lambdas, true)?, &sources, gen)?;
    // An empty decode is scored as a blank, not left out: every lambda keeps its row.
    let refs: Vec<&str> = out
        .iter()
        .map(|s| if s.is_empty() { " " } else { s.as_str() })
        .collect();
    let hg = inv.encoder.embed(&refs)?;
    let (ca, cb) = (cosine_rows(&hg, &ha)?, cosine_rows(&hg, &hb)?);
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, text)| PathStep {
            lambda: lambdas[i],
            text,
            cos_a: ca[i],
            cos_b: cb[i],
        })
        .collect())
}

/// How generated rows relate to what they were asked to be (bench diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct GenDiagnostics {
    /// Mean encoder cosine of each sentence to its mixed target embedding.
    pub fidelity: f64,
    /// Mean |content_lambda - lambda|: how far the content's ratio is from the label's.
    pub lambda_gap: f64,
    /// Share of rows asked for a real mix (lambda in [0.2, 0.8]) whose content sits at one source
    /// (content_lambda below 0.05 or above 0.95): decodes that copied a source.
    pub copy_rate: f64,
    /// Distinct word bigrams over all word bigrams of the generated text (diversity).
    pub distinct_2: f64,
    /// Share of all rows whose text is one of its sources verbatim (case and spacing aside): no
    /// new sentence, a duplicate with a softened label (absent in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbatim: Option<f64>,
    /// Share of rows that a judge trained on the whole train split reads as the class their mix
    /// label weights most (set by the benchmark, which has such a judge; absent in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_agreement: Option<f64>,
    /// That judge's accuracy on the test split (how far its verdicts can be trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_accuracy: Option<f64>,
    /// Share of rows whose mix label's top class is the teacher's (the warmed-up task model's)
    /// top prediction on the text (absent in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_agreement: Option<f64>,
    /// The teacher's accuracy on the evaluation split (set by the benchmark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_accuracy: Option<f64>,
}

impl GenDiagnostics {
    /// Diagnostics of `rows` (None when there are none).
    pub fn of(rows: &[AugRow]) -> Option<Self> {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len() as f64;
        let mid: Vec<&AugRow> = rows
            .iter()
            .filter(|r| (0.2..=0.8).contains(&r.lambda))
            .collect();
        let copies = mid
            .iter()
            .filter(|r| r.content_lambda < 0.05 || r.content_lambda > 0.95)
            .count();
        let verbatim = rows
            .iter()
            .filter(|r| is_copy(&r.text, &r.source_a.text, &r.source_b.text))
            .count();
        let top = |m: &BTreeMap<String, f64>| {
            m.iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k.clone())
        };
        let agree = rows
            .iter()
            .filter(|r| top(&r.mix_label) == top(&r.predicted))
            .count();
        let mut seen = std::collections::HashSet::new();
        let mut total = 0usize;
        for r in rows {
            let w = crate::eval::text::words(&r.text);
            for b in w.windows(2) {
                seen.insert((b[0].clone(), b[1].clone()));
                total += 1;
            }
        }
        Some(GenDiagnostics {
            fidelity: rows.iter().map(|r| r.cos_target).sum::<f64>() / n,
            lambda_gap: rows
                .iter()
                .map(|r| (r.content_lambda - r.lambda).abs())
                .sum::<f64>()
                / n,
            copy_rate: if mid.is_empty() {
                0.0
            } else {
                copies as f64 / mid.len() as f64
            },
            distinct_2: if total == 0 {
                0.0
            } else {
                seen.len() as f64 / total as f64
            },
            verbatim: Some(verbatim as f64 / n),
            label_agreement: None,
            judge_accuracy: None,
            teacher_agreement: Some(agree as f64 / n),
            teacher_accuracy: None,
        })
    }
}

/// Mean of `cos_a - cos_b` per lambda value (sorted by lambda), and its count.
pub fn controllability(rows: &[AugRow]) -> Vec<(f64, f64, usize)> {
    let mut by: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for r in rows {
        let e = by
            .entry((r.lambda * 1e6).round() as i64)
            .or_insert((0.0, 0));
        e.0 += r.cos_a - r.cos_b;
        e.1 += 1;
    }
    by.into_iter()
        .map(|(k, (s, n))| (k as f64 / 1e6, s / n as f64, n))
        .collect()
}

/// Reads augmented rows written by `imix augment` (JSONL, or CSV when the file ends in `.csv`) as
/// (text, soft label over `labels`); unknown labels, missing fields and labels that do not sum to
/// one name the file and line.
pub fn read_augmented(path: &Path, labels: &[String]) -> Result<Vec<(String, Vec<f64>)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, msg: String| Error::Input {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let check = |line: usize, y: Vec<f64>| -> Result<Vec<f64>> {
        let s: f64 = y.iter().sum();
        if !y.iter().all(|v| v.is_finite() && *v >= 0.0) || (s - 1.0).abs() > 1e-3 {
            return Err(bad(
                line,
                format!("soft label {y:?} is not a distribution (sums to {s})"),
            ));
        }
        Ok(y)
    };
    let mut out = Vec::new();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let mut r = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let head = r.headers().map_err(|e| bad(1, e.to_string()))?.clone();
        let col = |name: &str| {
            head.iter().position(|h| h == name).ok_or_else(|| {
                bad(
                    1,
                    format!(
                        "no column {name:?} (columns: {})",
                        head.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        };
        let ti = col("text")?;
        let li: Vec<usize> = labels
            .iter()
            .map(|l| col(&format!("soft_label.{l}")))
            .collect::<Result<_>>()?;
        for rec in r.records() {
            let rec =
                rec.map_err(|e| bad(e.position().map_or(0, |p| p.line() as usize), e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line() as usize);
            let t = rec
                .get(ti)
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| bad(line, "no text".into()))?;
            let y = li
                .iter()
                .map(|&i| {
                    rec.get(i)
                        .and_then(|v| v.parse::<f64>().ok())
                        .ok_or_else(|| {
                            bad(
                                line,
                                format!("column {} is not a number", head.get(i).unwrap_or("?")),
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push((t.to_string(), check(line, y)?));
        }
        return Ok(out);
    }
    let text = String::from_utf8(bytes).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, format!("invalid JSON: {e}")))?;
        let t = v["text"]
            .as_str()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| bad(i + 1, "no text".into()))?;
        let soft = v["soft_label"]
            .as_object()
            .ok_or_else(|| bad(i + 1, "no soft_label object".into()))?;
        let mut y = vec![0.0; labels.len()];
        for (k, p) in soft {
            let id = labels.iter().position(|l| l == k).ok_or_else(|| {
                bad(
                    i + 1,
                    format!("unknown label {k:?} (the data has {})", labels.join(", ")),
                )
            })?;
            y[id] = p
                .as_f64()
                .ok_or_else(|| bad(i + 1, format!("probability of {k:?} is not a number")))?;
        }
        out.push((t.to_string(), check(i + 1, y)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn row(text: &str, lambda: f64, content_lambda: f64, cos_target: f64) -> AugRow {
        let src = Source {
            text: String::new(),
            label: "x".into(),
            index: 0,
        };
        AugRow {
            text: text.into(),
            lambda,
            source_a: src.clone(),
            source_b: src,
            soft_label: BTreeMap::new(),
            mix_label: BTreeMap::new(),
            predicted: BTreeMap::new(),
            intrusion: false,
            intrusion_reason: String::new(),
            cos_a: 0.0,
            cos_b: 0.0,
            cos_target,
            content_lambda,
        }
    }

    /// Copies are counted only among real mixes; distinct-2 counts repeated bigrams once.
    #[test]
    fn generator_diagnostics_on_known_rows() {
        let rows = [
            row("a b a b", 0.5, 0.98, 0.9),
            row("c d", 0.3, 0.3, 0.7),
            row("e f", 1.0, 1.0, 0.5),
            row("g h", 0.6, 0.02, 0.3),
        ];
        let g = GenDiagnostics::of(&rows).unwrap();
        assert!(
            (g.fidelity - 0.6).abs() < 1e-12 && (g.copy_rate - 2.0 / 3.0).abs() < 1e-12,
            "{g:?}"
        );
        assert!(
            (g.lambda_gap - (0.48 + 0.0 + 0.0 + 0.58) / 4.0).abs() < 1e-12,
            "{g:?}"
        );
        // Bigrams: ab ba ab | cd | ef | gh: 6 in all, 5 distinct.
        assert!((g.distinct_2 - 5.0 / 6.0).abs() < 1e-12, "{g:?}");
        assert_eq!(g.verbatim, Some(0.0), "no row is a source");
        assert!(GenDiagnostics::of(&[]).is_none());
        // Verbatim: a row that is either source word for word, case and spacing aside.
        let mut copy_b = row("The  Film was FINE.", 0.9, 0.5, 0.5);
        copy_b.source_b.text = "the film was fine.".into();
        let mut near = row("the film was fine!", 0.9, 0.5, 0.5);
        near.source_a.text = "the film was fine.".into();
        let g = GenDiagnostics::of(&[copy_b, near]).unwrap();
        assert_eq!(g.verbatim, Some(0.5), "{g:?}");
    }

    /// The content ratio reads back the mix a point was built from, is clamped outside the
    /// segment, and keeps the fallback where both sources are the same point.
    #[test]
    fn copies_are_case_and_spacing_blind() {
        assert!(is_copy("The  film is GOOD.", "the film is good.", "x"));
        assert!(is_copy("x", "a", " X "));
        assert!(!is_copy("the film is good", "the film is good.", "x"));
    }

    #[test]
    fn copies_are_retried_until_new_and_kept_when_every_try_copies() {
        // Rows 0 and 2 copy their source; row 1 is new. Row 0 copies again on the first try and
        // is new on the second; row 2 copies (or is empty) on every try.
        let src = ["a b", "c d", "e f"];
        let mut gen = vec!["A  b".to_string(), "new one".to_string(), "e f".to_string()];
        let mut asked = Vec::new();
        let n = retry_copies(
            &mut gen,
            3,
            |j, t| is_copy(t, src[j], "zz"),
            |t, rows| {
                asked.push((t, rows.to_vec()));
                Ok(rows
                    .iter()
                    .map(|&j| match (j, t) {
                        (0, 0) => "a b".into(),
                        (0, _) => "a b c".into(),
                        (_, 1) => String::new(),
                        _ => "E F".into(),
                    })
                    .collect())
            },
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(gen, ["a b c", "new one", "e f"]);
        assert_eq!(asked, [(0, vec![0, 2]), (1, vec![0, 2]), (2, vec![2])]);
        let mut none = gen.clone();
        assert_eq!(
            retry_copies(
                &mut none,
                0,
                |j, t| is_copy(t, src[j], "zz"),
                |_, _| unreachable!("0 tries decode nothing")
            )
            .unwrap(),
            0
        );
    }

    #[test]
    fn content_lambda_is_the_projection_on_the_segment() {
        let t = |v: Vec<f32>| Tensor::from_vec(v, (4, 3), &Device::Cpu).unwrap();
        let a = t(vec![1., 0., 0., 1., 0., 0., 1., 0., 0., 0., 1., 0.]);
        let b = t(vec![0., 1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0.]);
        // 0.3 a + 0.7 b (plus a component off the line, which the projection ignores); a copy of
        // a; beyond b; and a row whose sources coincide.
        let g = t(vec![0.3, 0.7, 0.5, 1., 0., 0., -0.5, 1.5, 0., 0.2, 0.9, 0.]);
        let l = content_lambda(&g, &a, &b, &[0.5, 0.5, 0.5, 0.25]).unwrap();
        assert!(
            (l[0] - 0.3).abs() < 1e-6 && l[1] == 1.0 && l[2] == 0.0 && l[3] == 0.25,
            "{l:?}"
        );
    }
}
