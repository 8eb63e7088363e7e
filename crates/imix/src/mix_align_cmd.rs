//! `imix mix-align`: mix alignment, the adaptor trained on mixes of pool pairs after stage 1.

use crate::check;
use crate::common::{bar, embed_cached, with_suffix, ModelArgs};
use crate::input_args::InputArgs;
use anyhow::{Context, Result};
use clap::Args;
use inversed_mixup::api::load_adaptor;
use inversed_mixup::data::corpus::read_files;
use inversed_mixup::data::jsonl;
use inversed_mixup::stages::align::checkpoint_path;
use inversed_mixup::stages::mix_align::{MixAlignConfig, MixAligner, RoundLog, Selection};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `imix mix-align`.
#[derive(Args, Debug)]
pub struct MixAlignArgs {
    /// Unlabeled sentences: text files (one a line) or the text column of .tsv/.csv/.jsonl;
    /// repeatable. Pairs are drawn from them; the last --holdout are held out for the check.
    #[arg(long = "input", visible_alias = "corpus", value_name = "FILE", required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Where to write the trained adaptor (.safetensors); its checkpoint goes to OUT.ckpt, the
    /// rounds log (mining and the held-out check of every round) to OUT.rounds.jsonl
    #[arg(long)]
    out: PathBuf,
    /// The adaptor to continue [default: the shipped one]
    #[arg(long, value_name = "ADAPTOR")]
    init: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// Column (or JSON key) with the text in TSV/CSV/JSONL files
    #[arg(long, default_value = "text")]
    text_column: String,
    #[command(flatten)]
    input: InputArgs,
    /// Rounds of mining then training
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Pool pairs mixed (and decoded) per round
    #[arg(long, default_value_t = 64)]
    pairs: usize,
    /// Lambda is drawn uniformly from [LOW, HIGH]
    #[arg(long, default_value = "0.2,0.8", value_name = "LOW,HIGH")]
    lambda_range: String,
    /// Candidates per mix from embedding-space correction (the N rounds of correct:N)
    #[arg(long, default_value_t = 8)]
    corrections: usize,
    /// More candidates per mix from top-p 0.9 sampling
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// A kept candidate's least cosine to the mixed target
    #[arg(long, default_value_t = 0.6)]
    min_cos: f64,
    /// A kept candidate's largest |content ratio - lambda| (where its embedding sits between
    /// the sources); copies of a source are never kept
    #[arg(long, default_value_t = 0.15)]
    max_gap: f64,
    /// Optimiser steps per round
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Rows per step
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Rows of each step that replay pool sentences (x -> x) so single sentences keep inverting
    #[arg(long, default_value_t = 4)]
    replay: usize,
    /// Peak learning rate (AdamW; warm-up, then cosine decay over all rounds)
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Linear warm-up steps
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Final learning rate as a fraction of --lr
    #[arg(long, default_value_t = 0.1)]
    lr_floor: f64,
    /// Gradient clipping by global norm (0: off)
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Leave out sentences (and candidates) longer than this many LLM tokens
    #[arg(long, default_value_t = 32)]
    max_target_tokens: usize,
    /// Held-out sentences (the end of the corpus): the check's sentences and pairs
    #[arg(long, default_value_t = 64)]
    holdout: usize,
    /// Held-out pairs the check decodes at lambda 0.3/0.5/0.7 after every round (0: no check)
    #[arg(long, default_value_t = 20)]
    check_pairs: usize,
    /// Write a checkpoint every N steps (and after every mining and every round)
    #[arg(long, default_value_t = 20)]
    checkpoint_every: usize,
    /// Seed for pairs, lambdas, decoding and batches
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from OUT.ckpt (same flags required); mining, curve and rounds continue exactly
    #[arg(long)]
    resume: bool,
    /// Stop cleanly (checkpoint + adaptor) after this many minutes; continue with --resume
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Save the adaptor in f16 (half the size; for shipping)
    #[arg(long)]
    half: bool,
    /// Embedding cache file [default: OUT.emb.safetensors]
    #[arg(long)]
    emb_cache: Option<PathBuf>,
}

fn lambda_range(s: &str) -> Result<(f64, f64)> {
    let bad =
        || anyhow::anyhow!("--lambda-range {s:?}: expected LOW,HIGH within [0, 1], e.g. 0.2,0.8");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if !(0.0..=1.0).contains(&a) || !(0.0..=1.0).contains(&b) || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Runs `imix mix-align`.
pub fn run(a: MixAlignArgs) -> Result<()> {
    for (f, n) in [
        ("rounds", a.rounds),
        ("pairs", a.pairs),
        ("corrections", a.corrections),
        ("steps", a.steps),
        ("batch_size", a.batch_size),
        ("checkpoint_every", a.checkpoint_every),
        ("max_target_tokens", a.max_target_tokens),
    ] {
        check::at_least_one(f, n)?;
    }
    if a.replay > a.batch_size {
        anyhow::bail!(
            "--replay {} exceeds --batch-size {}",
            a.replay,
            a.batch_size
        );
    }
    check::positive("lr", a.lr)?;
    check::unit("lr_floor", a.lr_floor)?;
    check::non_negative("clip", a.clip)?;
    check::unit("max_gap", a.max_gap)?;
    if !(-1.0..=1.0).contains(&a.min_cos) {
        anyhow::bail!("--min-cos {} must lie within [-1, 1]", a.min_cos);
    }
    if let Some(m) = a.max_minutes {
        check::non_negative("max_minutes", m)?;
    }
    let (lambda_min, lambda_max) = lambda_range(&a.lambda_range)?;
    if let Some(p) = &a.init {
        if !p.is_file() {
            anyhow::bail!("--init {}: no such adaptor file", p.display());
        }
    }
    inversed_mixup::data::io::check_writable(&a.out)?;
    let ckpt = checkpoint_path(&a.out);
    check::resume_target(a.resume, &ckpt)?;
    a.input.check()?;
    let cfg = MixAlignConfig {
        rounds: a.rounds,
        pairs: a.pairs,
        lambda_min,
        lambda_max,
        corrections: a.corrections,
        samples: a.samples,
        select: Selection {
            min_cos: a.min_cos,
            max_gap: a.max_gap,
        },
        steps: a.steps,
        batch_size: a.batch_size,
        replay: a.replay,
        lr: a.lr,
        warmup: a.warmup,
        lr_floor: a.lr_floor,
        clip: a.clip,
        max_target_tokens: a.max_target_tokens,
        holdout: a.holdout,
        check_pairs: a.check_pairs,
        seed: a.seed,
        ..MixAlignConfig::default()
    };
    cfg.validate()?;
    let opt = a.input.options(&a.text_column, None);
    let texts: Vec<String> = read_files(&a.corpus, &opt)?
        .rows
        .into_iter()
        .map(|r| r.text)
        .collect();
    if texts.len() <= a.holdout + 1 {
        anyhow::bail!(
            "{} sentences in {}: too few to hold out {} and mix pairs of the rest",
            texts.len(),
            a.corpus[0].display(),
            a.holdout
        );
    }
    tracing::info!("{} sentences from {} file(s)", texts.len(), a.corpus.len());
    let (enc, llm) = a.models.load()?;
    let (init, adaptor) = load_adaptor(a.init.as_deref(), &enc, &llm)?;
    tracing::info!(
        "continuing {} ({} mix-alignment rounds before)",
        init.display(),
        adaptor.mix_rounds()
    );
    let with_suffix = |s: &str| with_suffix(&a.out, s);
    let emb = embed_cached(&enc, &texts, &a.out, a.emb_cache.as_deref())?;
    let mut tr = MixAligner::new(&enc, &llm, adaptor, texts, emb, cfg)?;
    let (ntrain, nheld) = tr.sizes();
    tracing::info!("{ntrain} pool sentences, {nheld} held out");
    let curve = with_suffix(".curve.jsonl");
    let rounds_log = with_suffix(".rounds.jsonl");
    if a.resume {
        tr.load_checkpoint(&ckpt)
            .with_context(|| "use the same flags as the interrupted run")?;
        tracing::info!(
            "resumed at round {}, step {} ({} mixes kept) from {}",
            tr.round,
            tr.step,
            tr.mined.len(),
            ckpt.display()
        );
        jsonl::truncate_curve(&curve, tr.step)?;
    } else {
        inversed_mixup::data::io::write_atomic(&curve, b"")?;
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&curve)
        .with_context(|| format!("opening {}", curve.display()))?;
    let start = std::time::Instant::now();
    let out_of_time = || {
        a.max_minutes
            .is_some_and(|m| start.elapsed().as_secs_f64() > m * 60.0)
    };
    let save = |tr: &mut MixAligner, log: &mut std::fs::File| -> Result<()> {
        log.flush()?;
        tr.save_checkpoint(&ckpt)?;
        jsonl::write(&rounds_log, &tr.log)?;
        tr.save_adaptor(&a.out, a.half)?;
        Ok(())
    };
    let say = |line: &RoundLog| {
        println!(
            "round {:>3} step {:>5}: kept {}/{} ({:.1} sent/s), loss {:.3}; held-out mixes cos {:.3} \
             copies {:.1} % gap {:.3} both {:.0} %; sentences cos {:.3} F1 {:.3}",
            line.round,
            line.step,
            line.kept,
            line.mined,
            line.sentences_per_s,
            line.train_loss,
            line.mid_cos_target,
            100.0 * line.mid_copies,
            line.mid_gap,
            100.0 * line.carries_both,
            line.single_cosine,
            line.single_token_f1
        );
    };
    if tr.needs_baseline() {
        tracing::info!("held-out check before training");
        let line = tr.check_and_log()?;
        say(&line);
        save(&mut tr, &mut log)?;
    }
    let total = (a.rounds * a.steps) as u64;
    while !tr.finished() {
        if tr.needs_mining() {
            let pb = bar(a.pairs as u64, &format!("mine {}", tr.round + 1));
            let m = tr.mine(&|d, _| pb.set_position(d as u64))?;
            pb.finish_and_clear();
            tracing::info!(
                "round {}: kept {} of {} mixes ({:.1} candidates/s); {} kept in all",
                tr.round + 1,
                m.kept,
                m.mined,
                m.sentences_per_s,
                tr.mined.len()
            );
            save(&mut tr, &mut log)?;
        }
        let pb = bar(total, "train");
        pb.set_position(tr.step as u64);
        while tr.needs_training() {
            let s = tr.train_step()?;
            jsonl::append(&mut log, &s)?;
            pb.set_message(format!("round {} loss {:.3}", tr.round + 1, s.loss));
            pb.set_position(tr.step as u64);
            if tr.step % a.checkpoint_every == 0 || out_of_time() {
                save(&mut tr, &mut log)?;
            }
            if out_of_time() {
                break;
            }
        }
        pb.finish_and_clear();
        if !tr.needs_training() {
            let line = tr.check_and_log()?;
            say(&line);
            save(&mut tr, &mut log)?;
        }
        if out_of_time() && !tr.finished() {
            println!(
                "stopped after {:.1} min at round {}, step {}; continue with --resume",
                start.elapsed().as_secs_f64() / 60.0,
                tr.round,
                tr.step
            );
            return Ok(());
        }
    }
    println!(
        "adaptor written to {} after {} rounds ({} mixes kept); rounds log {}",
        a.out.display(),
        tr.round,
        tr.mined.len(),
        rounds_log.display()
    );
    Ok(())
}
