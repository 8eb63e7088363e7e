//! `imix align`: stage 1 training of the adaptor.

use crate::check;
use crate::common::{bar, embed_cached, with_suffix, ModelArgs};
use crate::input_args::InputArgs;
use anyhow::{Context, Result};
use clap::Args;
use inversed_mixup::data::corpus::read_files;
use inversed_mixup::data::jsonl;
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::method::deep_soft::DeepConfig;
use inversed_mixup::nets::llm::lora::{LoraDims, Target};
use inversed_mixup::nets::llm::LoraConfig;
use inversed_mixup::stages::align::{checkpoint_path, AlignConfig, Aligner, StepLog};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `imix align`.
#[derive(Args, Debug)]
pub struct AlignArgs {
    /// Unlabeled sentences: text files (one a line) or the text column of .tsv/.csv/.jsonl; repeatable.
    /// The last --holdout sentences are held out for evaluation.
    #[arg(long = "input", visible_alias = "corpus", value_name = "FILE", required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Where to write the trained adaptor (.safetensors); its checkpoint goes to OUT.ckpt
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    models: ModelArgs,
    /// Column (or JSON key) with the text in TSV/CSV/JSONL files
    #[arg(long, default_value = "text")]
    text_column: String,
    #[command(flatten)]
    input: InputArgs,
    /// Soft tokens per embedding
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Hidden width of the adaptor MLP
    #[arg(long, default_value_t = 1024)]
    hidden: usize,
    /// LoRA rank on the LLM's projections, trained with the adaptor (0: the LLM stays as it is,
    /// the paper's configuration)
    #[arg(long, default_value_t = 0, value_name = "R")]
    lora_rank: usize,
    /// LoRA scale numerator: deltas are multiplied by ALPHA / R
    #[arg(long, default_value_t = 32.0, value_name = "ALPHA")]
    lora_alpha: f64,
    /// Projections that get LoRA deltas: comma-separated q,k,v,o,gate,up,down, or all
    #[arg(long, default_value = "all", value_name = "LIST")]
    lora_targets: String,
    /// Deep soft tokens (P-Tuning v2 style): from the soft tokens, a rank-R projection per layer
    /// gives their keys and values in every layer of the LLM (0: input soft tokens only). Starts
    /// as a no-op, so it can continue an adaptor trained without it (--init)
    #[arg(long, default_value_t = 0, value_name = "R")]
    deep_rank: usize,
    /// Deep soft tokens: their deltas are multiplied by S, which under Adam multiplies their
    /// learning rate by S (16 was worse than 1 continuing the shipped adaptor: README)
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    deep_scale: f64,
    /// Prompt template; <soft> marks the soft tokens
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    template: String,
    /// Optimiser steps in total (also fixes the learning-rate schedule)
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Sentences per step
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate (AdamW)
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear warm-up steps, then cosine decay to --lr-floor x lr
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Final learning rate as a fraction of --lr
    #[arg(long, default_value_t = 0.1)]
    lr_floor: f64,
    /// Gradient clipping by global norm (0: off)
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// AdamW weight decay
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Leave out sentences longer than this many LLM tokens
    #[arg(long, default_value_t = 32)]
    max_target_tokens: usize,
    /// Held-out sentences (taken from the end of the corpus) for evaluation
    #[arg(long, default_value_t = 64)]
    holdout: usize,
    /// Evaluate on the held-out slice every N steps
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Write a checkpoint every N steps
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Seed for initialisation and data order
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from OUT.ckpt (same flags required); the curve continues exactly
    #[arg(long)]
    resume: bool,
    /// Start from the weights of an existing adaptor (e.g. the shipped one) instead of a random
    /// initialisation: continues training across machines where no checkpoint is available
    /// (the optimiser state starts fresh, so this is a warm start, not an exact resume)
    #[arg(long, value_name = "ADAPTOR", conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Stop cleanly (checkpoint + adaptor) after this many minutes; resume later with --resume
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Save the adaptor in f16 (half the size; for shipping)
    #[arg(long)]
    half: bool,
    /// Learning-curve log (JSONL, one line per step) [default: OUT.curve.jsonl]
    #[arg(long)]
    log: Option<PathBuf>,
    /// Embedding cache file [default: OUT.emb.safetensors]
    #[arg(long)]
    emb_cache: Option<PathBuf>,
}

/// Runs `imix align`.
pub fn run(a: AlignArgs) -> Result<()> {
    for (f, n) in [
        ("k", a.k),
        ("hidden", a.hidden),
        ("steps", a.steps),
        ("batch_size", a.batch_size),
        ("checkpoint_every", a.checkpoint_every),
        ("max_target_tokens", a.max_target_tokens),
    ] {
        check::at_least_one(f, n)?;
    }
    check::positive("lr", a.lr)?;
    check::unit("lr_floor", a.lr_floor)?;
    check::non_negative("clip", a.clip)?;
    check::non_negative("weight_decay", a.weight_decay)?;
    if let Some(m) = a.max_minutes {
        check::non_negative("max_minutes", m)?;
    }
    inversed_mixup::data::io::check_writable(&a.out)?;
    check::resume_target(a.resume, &checkpoint_path(&a.out))?;
    a.input.check()?;
    check::positive("deep_scale", a.deep_scale)?;
    if a.deep_rank == 0 && a.deep_scale != 1.0 {
        anyhow::bail!(
            "--deep-scale {} without --deep-rank: there are no deep soft tokens to scale",
            a.deep_scale
        );
    }
    if a.lora_rank > 0 {
        Target::parse_list(&a.lora_targets)?;
        check::positive("lora_alpha", a.lora_alpha)?;
    }
    let opt = a.input.options(&a.text_column, None);
    let corpus = read_files(&a.corpus, &opt)?;
    let texts: Vec<String> = corpus.rows.into_iter().map(|r| r.text).collect();
    if texts.is_empty() {
        anyhow::bail!(
            "no sentences in {}: nothing to train on",
            a.corpus
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    tracing::info!("{} sentences from {} file(s)", texts.len(), a.corpus.len());
    let (enc, llm) = a.models.load()?;
    let with_suffix = |s: &str| with_suffix(&a.out, s);
    let emb = embed_cached(&enc, &texts, &a.out, a.emb_cache.as_deref())?;
    let lora = match a.lora_rank {
        0 => None,
        rank => Some(LoraConfig {
            rank,
            alpha: a.lora_alpha,
            targets: Target::parse_list(&a.lora_targets)?,
            dims: LoraDims::of(llm.config()),
        }),
    };
    let deep = match a.deep_rank {
        0 => None,
        rank => Some(DeepConfig::for_llm(rank, a.deep_scale, llm.config())?),
    };
    let acfg = AdaptorConfig {
        encoder: enc.name().to_string(),
        enc_dim: enc.dim(),
        llm: llm.name().to_string(),
        llm_dim: llm.config().hidden,
        k: a.k,
        hidden: a.hidden,
        template: a.template.clone(),
        lora,
        deep,
    };
    let cfg = AlignConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        warmup: a.warmup,
        lr_floor: a.lr_floor,
        clip: a.clip,
        adamw: inversed_mixup::nets::optim::AdamWConfig {
            weight_decay: a.weight_decay,
            ..Default::default()
        },
        max_target_tokens: a.max_target_tokens,
        holdout: a.holdout,
        eval_every: a.eval_every,
        seed: a.seed,
    };
    let adaptor = Adaptor::new(acfg, a.seed, llm.device())?;
    if let Some(p) = &a.init {
        let from = Adaptor::load(p, llm.device())?;
        let (mut fc, mut ac) = (from.config().clone(), adaptor.config().clone());
        // An adaptor without LoRA may start a run with LoRA: its MLP is copied, the deltas start at zero.
        if fc.lora.is_none() {
            ac.lora = None;
        }
        fc.lora = fc.lora.take().filter(|_| ac.lora.is_some());
        // Likewise deep soft tokens: their up-projection starts at zero.
        if fc.deep.is_none() {
            ac.deep = None;
        }
        if fc != ac {
            anyhow::bail!(
                "{}: its settings {:?} differ from this run's {:?}; match --k, --hidden, --template, the LoRA flags, --deep-rank and --deep-scale",
                p.display(),
                from.config(),
                adaptor.config()
            );
        }
        let w = from
            .sorted_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        adaptor.set_weights_present(&w)?;
        tracing::info!("initialised from {}", p.display());
    }
    tracing::info!("adaptor: {} parameters, k = {}", adaptor.num_params(), a.k);
    let mut tr = Aligner::new(&llm, adaptor, &texts, emb, cfg)?;
    let (ntrain, nheld) = tr.sizes();
    tracing::info!("{ntrain} training sentences, {nheld} held out");
    let ckpt = checkpoint_path(&a.out);
    let log_path = a.log.clone().unwrap_or_else(|| with_suffix(".curve.jsonl"));
    if a.resume {
        tr.load_checkpoint(&ckpt)
            .with_context(|| "use the same flags as the interrupted run")?;
        tracing::info!("resumed at step {} from {}", tr.step, ckpt.display());
        inversed_mixup::data::jsonl::truncate_curve(&log_path, tr.step)?;
    } else {
        inversed_mixup::data::io::write_atomic(&log_path, b"")?;
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let pb = bar(a.steps as u64, "align");
    pb.set_position(tr.step as u64);
    let start = std::time::Instant::now();
    let mut ema: Option<f64> = None;
    while tr.step < a.steps {
        let s: StepLog = tr.train_step()?;
        jsonl::append(&mut log, &s)?;
        ema = Some(ema.map_or(s.loss, |e| 0.95 * e + 0.05 * s.loss));
        let mut msg = format!(
            "loss {:.3} (avg {:.3}) {:.0} tok/s",
            s.loss,
            ema.unwrap_or(s.loss),
            s.tokens as f64 / s.seconds
        );
        if let Some(e) = s.eval_loss {
            msg.push_str(&format!(" eval {e:.3}"));
            let line = format!(
                "step {}: train {:.4} held-out {:.4}",
                s.step,
                ema.unwrap_or(s.loss),
                e
            );
            // A hidden bar (stderr not a terminal: a background run's log) drops println lines.
            if pb.is_hidden() {
                tracing::info!("{line}");
            } else {
                pb.println(line);
            }
        }
        pb.set_message(msg);
        pb.set_position(tr.step as u64);
        let out_of_time = a
            .max_minutes
            .is_some_and(|m| start.elapsed().as_secs_f64() > m * 60.0);
        if tr.step % a.checkpoint_every.max(1) == 0 || tr.step == a.steps || out_of_time {
            log.flush()?;
            tr.save_checkpoint(&ckpt)?;
            tr.adaptor.save(&a.out, a.half)?;
        }
        if out_of_time && tr.step < a.steps {
            pb.finish_and_clear();
            println!(
                "stopped after {:.1} min at step {}; continue with --resume",
                start.elapsed().as_secs_f64() / 60.0,
                tr.step
            );
            return Ok(());
        }
    }
    pb.finish_and_clear();
    tr.adaptor.save(&a.out, a.half)?;
    println!(
        "adaptor written to {} after {} steps",
        a.out.display(),
        tr.step
    );
    Ok(())
}
