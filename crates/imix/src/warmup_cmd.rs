//! `imix warmup`: stage 2, task classifier + adaptor refinement.

use crate::check;
use crate::common::{bar, load_adaptor, ModelArgs};
use crate::data_args::DataArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::method::classifier::Classifier;
use inversed_mixup::nets::encoder::embed_corpus;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::stages::bundle::{self, BundlePaths};
use inversed_mixup::stages::warmup::{FineTune, Warmup, WarmupConfig};
use std::path::PathBuf;

/// Arguments of `imix warmup`.
#[derive(Args, Debug)]
pub struct WarmupArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output bundle directory (classifier.safetensors + adaptor.safetensors)
    #[arg(long)]
    out: PathBuf,
    /// Stage-1 adaptor to refine [default: the shipped one]
    #[arg(long)]
    adaptor: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// Joint steps of L_CE + beta * L_GEN
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Sentences per step
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Weight of L_GEN (0 trains only the classifier)
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Classifier learning rate
    #[arg(long, default_value_t = 5e-2)]
    lr_classifier: f64,
    /// Adaptor learning rate
    #[arg(long, default_value_t = 3e-4)]
    lr_adaptor: f64,
    /// Fine-tune the encoder too: N = the top N layers, 0 = every layer and the embeddings
    #[arg(long, value_name = "N")]
    finetune_encoder: Option<usize>,
    /// Encoder learning rate (with --finetune-encoder)
    #[arg(long, default_value_t = 2e-5)]
    lr_encoder: f64,
    /// Seed for data order
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a checkpoint every N steps
    #[arg(long, default_value_t = 20)]
    checkpoint_every: usize,
    /// Continue from OUT/warmup.ckpt
    #[arg(long)]
    resume: bool,
}

/// Runs `imix warmup`.
pub fn run(a: WarmupArgs) -> Result<()> {
    for (f, n) in [("--steps", a.steps), ("--batch-size", a.batch_size), ("--checkpoint-every", a.checkpoint_every)] {
        check::at_least_one(f, n)?;
    }
    check::non_negative("--beta", a.beta)?;
    inversed_mixup::data::io::check_writable(&a.out.join("classifier.safetensors"))?;
    check::resume_target(a.resume, &BundlePaths::new(&a.out).checkpoint())?;
    for (f, v) in [("--lr-classifier", a.lr_classifier), ("--lr-adaptor", a.lr_adaptor), ("--lr-encoder", a.lr_encoder)] {
        check::positive(f, v)?;
    }
    let data = a.data.load(None)?;
    let (enc, llm) = a.models.load()?;
    let adaptor = load_adaptor(a.adaptor.as_deref(), &enc, &llm)?;
    let out_dir = inversed_mixup::data::io::CreatedDirs::create(&a.out)?;
    let texts = data.texts();
    let emb = embed_corpus(&enc, &texts, None, &|_, _| {})?;
    let cls = Classifier::new(data.labels.clone(), enc.dim(), llm.device())?;
    let cfg = WarmupConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        lr_classifier: a.lr_classifier,
        lr_adaptor: a.lr_adaptor,
        beta: a.beta,
        seed: a.seed,
        finetune: a.finetune_encoder,
        lr_encoder: a.lr_encoder,
        ..Default::default()
    };
    let trainable = match a.finetune_encoder {
        Some(_) => Some(Encoder::load_trainable(&a.models.encoder_dir()?, None, llm.device())?),
        None => None,
    };
    let mut w = Warmup::new(&llm, adaptor, cls, &texts, emb, data.y.clone(), cfg)?;
    if let (Some(top), Some((te, vm))) = (a.finetune_encoder, &trainable) {
        w = w.with_finetune(FineTune::new(te, vm, top, &texts)?);
    }
    let paths = BundlePaths::new(&a.out);
    let (ckpt, curve) = (paths.checkpoint(), paths.curve());
    let pb = bar(a.steps as u64, "warmup");
    w.run(a.steps, a.checkpoint_every, &ckpt, &curve, a.resume, &mut |s| {
        pb.set_message(format!("ce {:.3} gen {:.3}", s.ce, s.gen));
        pb.set_position(s.step as u64);
    })?;
    pb.finish_and_clear();
    let meta = serde_json::json!({"encoder": enc.name(), "finetuned_encoder": a.finetune_encoder, "data": a.data.data, "shots": a.data.shots, "shots_seed": a.data.shots_seed});
    bundle::save(&paths, &w, meta)?;
    out_dir.keep();
    println!("task model and refined adaptor written to {}", a.out.display());
    Ok(())
}
