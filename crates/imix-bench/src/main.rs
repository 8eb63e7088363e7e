//! `imix-bench`: the few-shot benchmark of every augmentation method (resumable), with reports,
//! paired tests and provenance. A research harness: the library knows nothing of it.

mod baselines;
mod claims;
mod grid;
mod judge;
mod methods;
mod pooled;
mod provenance;
mod report;
mod settings;

use anyhow::Result;
use clap::Parser;
use grid::{
    load_dataset, load_dev, read_results, run_cell, shots_name, BenchConfig, Cell, CellResult,
    Finished, Models, Protocol, ALL_SHOTS,
};
use indicatif::{ProgressBar, ProgressStyle};
use inversed_mixup::api::{ModelFiles, DEFAULT_LAMBDA};
use inversed_mixup::data::corpus::{read_files, ReadOptions};
use inversed_mixup::data::flags::{at_least_one, non_negative, positive, unit};
use inversed_mixup::data::jsonl;
use inversed_mixup::method::mixup::Pairing;
use inversed_mixup::method::task_model::FinetuneConfig;
use inversed_mixup::nets::llm::GenerateOptions;
use judge::Judge;
use methods::Method;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use settings::conflict;
use std::path::PathBuf;

// glibc returns large freed blocks to the OS, so every step faulted in fresh pages; mimalloc reuses
// them (as in `imix`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Few-shot benchmark of every augmentation method on the same samples (resumable), with reports.
///
/// Each cell (dataset, shots, seed) draws K examples per class, runs every method on that sample
/// (none, duplicate, EDA, embedding Mixup, retrieval Mixup, reconstruct, inversedMixup with each
/// intrusion policy), fine-tunes the task model on each, and tests it. Rows are saved as they
/// finish; the same command continues where a stopped run left off.
///
///   imix-bench --data DIR --quick                  # one dataset, 2 seeds: minutes
///   imix-bench --data DIR --shots 10 --seeds 10 --max-minutes 60
#[derive(Parser, Debug)]
#[command(name = "imix-bench", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("IMIX_GIT_COMMIT"), ")"), about, long_about, verbatim_doc_comment, allow_negative_numbers = true)]
struct BenchArgs {
    /// Folder with DATASET/{train,test}.tsv (header label<TAB>text; dev.tsv too for --shots all)
    #[arg(
        long = "data",
        visible_alias = "data-dir",
        value_name = "DIR",
        env = "IMIX_BENCH_DATA"
    )]
    data_dir: PathBuf,
    /// Datasets (sub-folders of --input)
    #[arg(long, value_delimiter = ',', default_value = "sst2,trec,subj,mr")]
    datasets: Vec<String>,
    /// Examples per class; `all` is the fully supervised setting: the whole train split, the best
    /// epoch chosen on the dataset's dev.tsv (few-shot cells draw their dev sample from train).
    /// Fully supervised fine-tuning is long: pass fewer --epochs (3 is usual) and --methods
    #[arg(long, value_delimiter = ',', default_value = "10,50", value_parser = parse_shots)]
    shots: Vec<usize>,
    /// Seeds per (dataset, shots): 0..N
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Methods to run
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,duplicate,eda,embed-mixup,retrieval-mixup,reconstruct,inversed-mixup-keep,inversed-mixup-drop,inversed-mixup-relabel,inversed-mixup-content"
    )]
    methods: Vec<Method>,
    /// Unlabeled sentences for retrieval-mixup (one a line) [default: DATA_DIR/../unlabeled/wiki.txt]
    #[arg(long, value_name = "FILE")]
    pool: Option<PathBuf>,
    /// Output folder: results.jsonl, summary.md (summary-warmup-finetune.md,
    /// summary-final-from-warmup.md, summary-probe*.md for those protocols), *.svg, generated/
    #[arg(long, default_value = "results/bench")]
    out: PathBuf,
    /// Augmented rows per original example (every augmenting method)
    #[arg(long, default_value_t = 2)]
    per_example: usize,
    /// Loss weight of every augmented row (its soft target scaled by W; 1: like an original)
    #[arg(long, default_value_t = 1.0, value_name = "W")]
    aug_weight: f64,
    /// Stage-2 warm-up steps per cell
    #[arg(long, default_value_t = 30)]
    warmup_steps: usize,
    /// Stage 2 fine-tunes the task encoder with the head while it refines the adaptor (the paper's
    /// warm-up); stage 3 then mixes and judges with that encoder. The final task model starts from
    /// the pretrained encoder either way. Off: the encoder stays frozen in stages 2 and 3
    #[arg(long)]
    warmup_finetune: bool,
    /// With --warmup-finetune: every method's final task model starts from the cell's warmed-up
    /// encoder (a fresh head) instead of the pretrained one, the baselines' too, so that all
    /// methods start alike (the paper's stage 2 followed by retraining)
    #[arg(long, requires = "warmup_finetune")]
    final_from_warmup: bool,
    /// Pairing for inversed-mixup
    #[arg(long, value_enum, default_value_t = Pairing::Random)]
    pairs: Pairing,
    /// Lambda for inversed-mixup and embed-mixup (Beta(0.2, 0.2) was the best of 0.2, 0.4 and 2 on
    /// the sst2, trec and subj dev splits)
    #[arg(long, default_value = DEFAULT_LAMBDA)]
    lambda: String,
    /// Decoding: greedy, beam:W, top-p:P, rerank:N, correct:N or guided:W (repetition control as in `imix augment`)
    #[arg(long, default_value = "greedy")]
    decode: String,
    /// Intrusion threshold
    #[arg(long, default_value_t = 0.8)]
    threshold: f64,
    /// Evaluate on at most N test rows (seeded subsample)
    #[arg(long)]
    max_test: Option<usize>,
    /// The split every method is scored on: test, or dev for choosing settings (a dev gate; the
    /// epoch is still chosen on a dev sample drawn from train)
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    eval_split: EvalSplit,
    /// One dataset, one shot count, 2 seeds, 1 augmented row per example, short warm-up, 300 test
    /// rows, at most 8 fine-tuning epochs
    #[arg(long)]
    quick: bool,
    /// Task model: the encoder fine-tuned with a linear head (the paper's), or a linear probe on
    /// frozen embeddings (under which readable text cannot help)
    #[arg(long, value_enum, default_value_t = TaskModelKind::Finetune)]
    task_model: TaskModelKind,
    /// Fine-tuning epochs (the best on the dev sample, or on dev.tsv with --shots all, is kept)
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Fine-tuning: peak learning rate of the encoder
    #[arg(long, default_value_t = 5e-5)]
    lr_encoder: f64,
    /// Stop cleanly once this many minutes have passed, asked before each cell and before each
    /// further method of a cell (finished methods saved, reports written); the same command
    /// continues where it stopped, computing only what is missing
    #[arg(long, value_name = "MIN")]
    max_minutes: Option<f64>,
    /// Stage-1 adaptor [default: the shipped one]
    #[arg(long)]
    adaptor: Option<PathBuf>,
    /// Encoder directory [default: all-MiniLM-L6-v2 from PyPI]
    #[arg(long, value_name = "DIR")]
    encoder: Option<PathBuf>,
    /// LLM .gguf file or safetensors directory [default: SmolLM2-135M-Instruct from PyPI]
    #[arg(long, value_name = "PATH")]
    llm: Option<PathBuf>,
}

fn main() {
    imix_kernels::pool::park_idle_workers();
    // SAFETY: sets one allocator option before other threads exist (keep freed pages, as `imix`).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("IMIX_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = BenchArgs::parse();
    let r = imix_kernels::simd::cap_from_env()
        .map_err(anyhow::Error::msg)
        .and_then(|_| imix_kernels::pool::on_compute_pool(|| run(args)));
    if let Err(e) = r {
        let flag = |f: &str| format!("--{}", f.replace('_', "-"));
        eprintln!(
            "error: {}",
            inversed_mixup::api::field_names(&format!("{e:#}"), &flag)
        );
        std::process::exit(1);
    }
}

/// A progress bar: position, length, what it is doing, time left.
fn bar(len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>12} {wide_bar} {pos}/{len} {msg} ({eta})");
    let pb = ProgressBar::new(len).with_prefix(what.to_string());
    pb.set_style(style.expect("a valid template"));
    pb
}

/// `--shots`: a count of at least 1, or `all` ([`ALL_SHOTS`]).
fn parse_shots(s: &str) -> Result<usize, String> {
    match s {
        "all" => Ok(ALL_SHOTS),
        _ => match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{s:?} is neither a count of at least 1 nor `all`")),
            Ok(n) => Ok(n),
        },
    }
}

/// The split methods are scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EvalSplit {
    /// DATASET/test.tsv.
    Test,
    /// DATASET/dev.tsv: for choosing settings, never reported as a test result.
    Dev,
}

/// The task models the benchmark can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TaskModelKind {
    /// Encoder fine-tuned with the head.
    Finetune,
    /// Linear probe on frozen embeddings.
    Probe,
}

/// Runs the benchmark.
fn run(mut a: BenchArgs) -> Result<()> {
    for (f, n) in [
        ("seeds", a.seeds as usize),
        ("per_example", a.per_example),
        ("epochs", a.epochs),
        ("max_test", a.max_test.unwrap_or(1)),
    ] {
        at_least_one(f, n)?;
    }
    unit("threshold", a.threshold)?;
    positive("aug_weight", a.aug_weight)?;
    positive("lr_encoder", a.lr_encoder)?;
    if a.final_from_warmup && a.task_model == TaskModelKind::Probe {
        anyhow::bail!("--final-from-warmup: the linear probe has no encoder to start from (use --task-model finetune)");
    }
    if let Some(m) = a.max_minutes {
        non_negative("max_minutes", m)?;
    }
    let on_dev = a.eval_split == EvalSplit::Dev;
    if on_dev && a.shots.contains(&ALL_SHOTS) {
        anyhow::bail!("--eval-split dev with --shots all: the fully supervised setting selects its model on dev.tsv");
    }
    inversed_mixup::data::io::check_writable(&a.out.join("results.jsonl"))?;
    if a.quick {
        a.datasets.truncate(1);
        a.shots.truncate(1);
        a.seeds = a.seeds.min(2);
        a.per_example = 1;
        a.warmup_steps = a.warmup_steps.min(5);
        a.max_test = Some(a.max_test.unwrap_or(300).min(300));
        a.epochs = a.epochs.min(8);
    }
    let cfg = BenchConfig {
        per_example: a.per_example,
        aug_weight: a.aug_weight,
        warmup_steps: a.warmup_steps,
        pairing: a.pairs,
        lambda: a.lambda.parse()?,
        gen: GenerateOptions {
            decode: a.decode.parse()?,
            max_new_tokens: 40,
            ..Default::default()
        },
        threshold: a.threshold,
        eval_dev: on_dev,
        cls_steps: 300,
        cls_lr: 5e-2,
        max_test: a.max_test,
        warmup_finetune: a.warmup_finetune,
        final_from_warmup: a.final_from_warmup,
        protocol: match a.task_model {
            TaskModelKind::Probe => Protocol::Probe,
            TaskModelKind::Finetune => Protocol::Finetune(FinetuneConfig {
                epochs: a.epochs,
                lr_encoder: a.lr_encoder,
                ..Default::default()
            }),
        },
    };
    let pool_path = if a.methods.contains(&Method::RetrievalMixup) {
        let p = a
            .pool
            .clone()
            .unwrap_or_else(|| a.data_dir.join("../unlabeled/wiki.txt"));
        if !p.is_file() {
            anyhow::bail!("retrieval-mixup needs unlabeled sentences: {} does not exist (pass --pool FILE, or leave the method out with --methods)", p.display());
        }
        Some(p)
    } else {
        None
    };
    // Every split a cell will read exists, before any model loads.
    for ds in &a.datasets {
        let splits: &[&str] = if a.shots.contains(&ALL_SHOTS) || on_dev {
            &["train", "test", "dev"]
        } else {
            &["train", "test"]
        };
        for split in splits {
            let p = a.data_dir.join(ds).join(format!("{split}.tsv"));
            if !p.is_file() {
                let why = if *split == "dev" {
                    " (--shots all selects the model on it)"
                } else {
                    ""
                };
                anyhow::bail!("--datasets {ds}: {} does not exist{why}", p.display());
            }
        }
    }
    let out_dir = inversed_mixup::data::io::CreatedDirs::create(&a.out.join("generated"))?;
    let results_path = a.out.join("results.jsonl");
    let mut results = read_results(&results_path)?;
    let adaptor_path = match &a.adaptor {
        Some(p) => p.clone(),
        None => inversed_mixup::method::shipped::default_adaptor()?,
    };
    // A folder's rows count as this run's only when they were made with the same settings.
    let settings = cfg.settings(&adaptor_path)?;
    if let Some(c) = conflict(&results, &cfg, &a.shots, &settings) {
        anyhow::bail!(
            "{}: {c}. Write this run to another --out, or run with that row's settings",
            results_path.display()
        );
    }
    let files = ModelFiles::resolve(a.encoder.as_deref(), a.llm.as_deref())?;
    let (enc, llm) = (files.load_encoder(None)?, files.load_llm()?);
    inversed_mixup::api::load_adaptor(Some(&adaptor_path), &enc, &llm)?;
    let encoder_dir = files.encoder.clone();
    let pool = match &pool_path {
        Some(p) => {
            let texts: Vec<String> = read_files(std::slice::from_ref(p), &ReadOptions::default())?
                .rows
                .into_iter()
                .map(|r| r.text)
                .collect();
            let pb = bar(texts.len() as u64, "pool");
            let h = inversed_mixup::nets::encoder::embed_corpus(
                &enc,
                &texts,
                Some(&a.out.join("pool.emb.safetensors")),
                &|d, _| pb.set_position(d as u64),
            )?;
            pb.finish_and_clear();
            Some((texts, h))
        }
        None => None,
    };
    let cells = a.datasets.len() * a.shots.len() * a.seeds as usize;
    let pb = bar(cells as u64, "bench");
    // The cell in progress, and what it is doing now, on the bar.
    let current = std::cell::RefCell::new(String::new());
    let progress = |what: &str| pb.set_message(format!("{} {what}", current.borrow()));
    let models = Models {
        encoder: &enc,
        llm: &llm,
        adaptor: &adaptor_path,
        encoder_dir: &encoder_dir,
        pool: pool.as_ref().map(|(t, h)| (t.as_slice(), h)),
        progress: &progress,
    };
    // Recorded before any work as well, so that cells of a killed run still name their commit.
    let run_id = record_run(
        &a.out.join("runs.jsonl"),
        "started",
        std::time::Instant::now(),
        0,
        false,
    )?;
    let started = std::time::Instant::now();
    // Asked before each cell and, inside a long cell (a full split's takes hours), before each method.
    let out_of_time = || {
        a.max_minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() > m * 60.0)
    };
    let mut computed = 0usize;
    let mut stopped = false;
    for ds in &a.datasets {
        let (train, mut test) = load_dataset(&a.data_dir, ds)?;
        if on_dev {
            test = load_dev(&a.data_dir, ds, &train.labels)?;
        }
        let dev = if a.shots.contains(&ALL_SHOTS) {
            Some(load_dev(&a.data_dir, ds, &train.labels)?)
        } else {
            None
        };
        if let Some(n) = cfg.max_test.filter(|&n| n < test.rows.len()) {
            let mut idx: Vec<usize> = (0..test.rows.len()).collect();
            idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(12345));
            idx.truncate(n);
            idx.sort();
            test.rows = idx.iter().map(|&i| test.rows[i].clone()).collect();
            test.y = idx.iter().map(|&i| test.y[i]).collect();
        }
        let mut test_h: Option<candle_core::Tensor> = None;
        let mut judge: Option<Judge> = None;
        for &shots in &a.shots {
            for seed in 0..a.seeds {
                let done = |m: Method, r: &[CellResult]| {
                    r.iter().any(|c| c.answers(ds, shots, seed, m, &cfg))
                };
                let missing: Vec<Method> = a
                    .methods
                    .iter()
                    .copied()
                    .filter(|&m| !done(m, &results))
                    .collect();
                let shot = shots_name(shots);
                *current.borrow_mut() = format!("{ds} {shot}-shot seed {seed}:");
                pb.set_message(current.borrow().clone());
                if !missing.is_empty() && out_of_time() {
                    stopped = true;
                }
                if !missing.is_empty() && !stopped {
                    if test_h.is_none() {
                        let t = test.texts();
                        test_h = Some(inversed_mixup::nets::encoder::embed_corpus(
                            &enc,
                            &t,
                            None,
                            &|_, _| {},
                        )?);
                    }
                    let test_h = test_h.as_ref().expect("set above");
                    if judge.is_none() && missing.iter().any(|m| m.generates()) {
                        // The label judge of the generator diagnostics: a probe on the whole train split.
                        let t = train.texts();
                        let jb = bar(t.len() as u64, &format!("{ds} judge"));
                        let train_h = inversed_mixup::nets::encoder::embed_corpus(
                            &enc,
                            &t,
                            Some(&a.out.join(format!("judge-{ds}.emb.safetensors"))),
                            &|d, _| jb.set_position(d as u64),
                        )?;
                        jb.finish_and_clear();
                        judge = Some(Judge::train(&train, &train_h, &test, test_h)?);
                    }
                    let cell = Cell {
                        dataset: ds,
                        train: &train,
                        test: &test,
                        test_h,
                        shots,
                        dev: dev.as_ref(),
                        seed,
                        judge: judge.as_ref(),
                    };
                    // Every finished row is saved at once, so a run killed in a cell loses at most
                    // the method in progress.
                    let mut emit = |f: Finished| -> inversed_mixup::Result<()> {
                        match f {
                            Finished::Row(mut r) => {
                                r.run = Some(run_id);
                                tracing::info!("{ds} {shot}-shot seed {seed} {}: accuracy {:.4} macro-F1 {:.4}", r.method, r.accuracy, r.macro_f1);
                                pb.println(format!(
                                    "{ds} {shot}-shot seed {seed} {:<24} acc {:.4} macro-F1 {:.4}",
                                    r.method, r.accuracy, r.macro_f1
                                ));
                                results.push(*r);
                                jsonl::write(&results_path, &results)?;
                            }
                            Finished::Generated(tag, rows) if !rows.is_empty() => {
                                let wf = if cfg.warmup_finetune {
                                    "-warmup-finetune"
                                } else {
                                    ""
                                };
                                jsonl::write(
                                    &a.out
                                        .join("generated")
                                        .join(format!("{ds}-{shot}-{seed}{wf}{tag}.jsonl")),
                                    rows,
                                )?;
                            }
                            Finished::Generated(..) => {}
                        }
                        Ok(())
                    };
                    let whole = run_cell(
                        &models,
                        &cell,
                        &missing,
                        &cfg,
                        &settings,
                        &out_of_time,
                        &mut emit,
                    )?;
                    computed += 1;
                    if !whole {
                        stopped = true;
                    }
                }
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    record_run(
        &a.out.join("runs.jsonl"),
        "finished",
        started,
        computed,
        stopped,
    )?;
    // Rows of the other task model or warm-up setting (a grid run earlier into the same folder)
    // stay in the file but not in this report.
    let mine: Vec<CellResult> = results
        .into_iter()
        .filter(|r| r.answers(&r.dataset, r.shots, r.seed, r.method, &cfg))
        .collect();
    // Every method with rows in the folder is reported (a later run with fewer --methods, such as
    // the fully supervised one, keeps the others in the tables), in the canonical order.
    let shown: Vec<Method> = Method::ALL
        .into_iter()
        .filter(|m| a.methods.contains(m) || mine.iter().any(|r| r.method == *m))
        .collect();
    report::write(&a.out, &report_protocol(&cfg), &mine, &shown)?;
    out_dir.keep();
    println!(
        "{cells} cells ({computed} computed now) in {:.1} min; reports in {}",
        started.elapsed().as_secs_f64() / 60.0,
        a.out.display()
    );
    if stopped {
        println!(
            "stopped after --max-minutes with cells left: run the same command again to continue"
        );
    }
    Ok(())
}

/// Which report a run writes: each protocol of the folder has its own summary and accuracy plot.
fn report_protocol(cfg: &BenchConfig) -> report::Protocol<'static> {
    let probe = matches!(cfg.protocol, Protocol::Probe);
    let (suffix, description) = match (probe, cfg.warmup_finetune, cfg.final_from_warmup) {
        (true, false, _) => ("-probe", "a linear probe on frozen encoder embeddings (under which readable text cannot add anything a mixed embedding does not)"),
        (true, true, _) => ("-probe-warmup-finetune", "a linear probe on frozen pretrained embeddings; stage 2 fine-tuned the encoder, and stage 3 mixed and judged in its space"),
        (false, false, _) => ("", "the encoder fine-tuned with a linear head, from the pretrained encoder; stage 2 refined the adaptor with the encoder frozen"),
        (false, true, false) => ("-warmup-finetune", "the encoder fine-tuned with a linear head, from the pretrained encoder; stage 2 fine-tuned the encoder while refining the adaptor, and stage 3 mixed and judged in its space"),
        (false, true, true) => ("-final-from-warmup", "the paper's whole stage 2: it fine-tunes the encoder while refining the adaptor, stage 3 mixes and judges in that encoder's space, and every method's final model (the baselines' too) is fine-tuned from the warmed-up encoder with a fresh head"),
    };
    report::Protocol {
        suffix,
        description,
    }
}

/// Appends what produces this run's cells to `runs.jsonl` (`event`: started or finished): the
/// command line, the commit the binary was built from, the CPU and the kernels' instruction set,
/// the wall time and the cells computed. Returns the record's unix time (a started record's names
/// the run in its rows).
fn record_run(
    path: &std::path::Path,
    event: &str,
    started: std::time::Instant,
    computed: usize,
    stopped: bool,
) -> Result<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    let record = serde_json::json!({
        "event": event,
        "unix_time": now,
        "minutes": started.elapsed().as_secs_f64() / 60.0,
        "command": std::env::args().collect::<Vec<_>>(),
        "commit": env!("IMIX_GIT_COMMIT"),
        "version": env!("CARGO_PKG_VERSION"),
        "cpu": cpu.unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        "cores": rayon::current_num_threads(),
        "kernels": imix_kernels::simd::level().name(),
        "cells_computed": computed,
        "stopped_early": stopped,
    });
    let mut rows: Vec<serde_json::Value> = jsonl::read(path)?;
    rows.push(record);
    jsonl::write(path, &rows)?;
    Ok(now)
}
