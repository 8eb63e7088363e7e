//! `imix warmup`: stage 2, task classifier + adaptor refinement.

use crate::common::{bar, ModelArgs};
use crate::data_args::DataArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::api::{self, check_warmup_target, Pipeline, WarmupRequest};
use std::path::PathBuf;

/// Defaults of the flags: the library's, written once there.
fn d() -> WarmupRequest {
    WarmupRequest::default()
}

/// `--gen-passes`: a number of passes, or `all` (`None`: every step).
#[derive(Debug, Clone, Copy)]
struct Passes(Option<f64>);

fn parse_passes(s: &str) -> Result<Passes, String> {
    if s == "all" {
        return Ok(Passes(None));
    }
    s.parse::<f64>()
        .map(|p| Passes(Some(p)))
        .map_err(|_| format!("`{s}` is neither a number of passes nor `all`"))
}

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
    #[arg(long, default_value_t = d().steps)]
    steps: usize,
    /// Sentences per step
    #[arg(long, default_value_t = d().batch_size)]
    batch_size: usize,
    /// Weight of L_GEN (0 trains only the classifier)
    #[arg(long, default_value_t = d().beta)]
    beta: f64,
    /// Classifier learning rate
    #[arg(long, default_value_t = d().lr_classifier)]
    lr_classifier: f64,
    /// Adaptor learning rate
    #[arg(long, default_value_t = d().lr_adaptor)]
    lr_adaptor: f64,
    /// Fine-tune the encoder too: N = the top N layers, 0 = every layer and the embeddings
    #[arg(long, value_name = "N")]
    finetune_encoder: Option<usize>,
    /// Encoder learning rate (with --finetune-encoder)
    #[arg(long, default_value_t = d().lr_encoder)]
    lr_encoder: f64,
    /// Seed for data order
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// Write a checkpoint every N steps
    #[arg(long, default_value_t = d().checkpoint_every)]
    checkpoint_every: usize,
    /// Continue from OUT/warmup.ckpt
    #[arg(long)]
    resume: bool,
    /// Refine the adaptor on the labelled sentences for P passes over them only, then train the
    /// classifier alone (a few sentences refined for dozens of passes come back word for word);
    /// `all`: every step
    #[arg(long, value_name = "P", default_value = "2", value_parser = parse_passes)]
    gen_passes: Passes,
    /// Unlabelled in-domain sentences (text, .tsv/.csv/.jsonl text column; repeatable) the adaptor
    /// is refined on alongside, --replay of them a step
    #[arg(long, value_name = "FILE", num_args = 1..)]
    unlabeled: Vec<PathBuf>,
    /// Unlabelled sentences per step (with --unlabeled)
    #[arg(long, default_value_t = d().replay)]
    replay: usize,
}

impl WarmupArgs {
    /// The request these flags make.
    fn request(&self) -> WarmupRequest {
        WarmupRequest {
            steps: self.steps,
            batch_size: self.batch_size,
            beta: self.beta,
            lr_classifier: self.lr_classifier,
            lr_adaptor: self.lr_adaptor,
            finetune_encoder: self.finetune_encoder,
            lr_encoder: self.lr_encoder,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            shots: self.data.shots,
            shots_seed: self.data.shots_seed,
            max_chars: self.data.input.max_chars,
            gen_passes: self.gen_passes.0,
            unlabeled: self.unlabeled.clone(),
            replay: self.replay,
        }
    }
}

/// Runs `imix warmup`.
pub fn run(a: WarmupArgs) -> Result<()> {
    let req = a.request();
    check_warmup_target(&req, &a.out)?;
    let data = a.data.load(None)?;
    api::read_unlabeled(&req)?;
    // The layer check needs the encoder; the class check is made here, before any model loads.
    api::check_warmup_data(
        &data,
        &WarmupRequest {
            finetune_encoder: None,
            ..req.clone()
        },
        0,
    )?;
    let p = Pipeline::load(
        a.models.encoder.as_deref(),
        a.models.llm.as_deref(),
        a.adaptor.as_deref(),
    )?;
    let pb = bar(req.steps as u64, "warmup");
    p.warmup(&data, &req, &a.out, Some(&a.data.data), &mut |s| {
        pb.set_message(format!("ce {:.3} gen {:.3}", s.ce, s.gen));
        pb.set_position(s.step as u64);
    })?;
    pb.finish_and_clear();
    println!(
        "task model and refined adaptor written to {}",
        a.out.display()
    );
    Ok(())
}
