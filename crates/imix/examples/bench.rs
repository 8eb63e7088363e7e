//! Rust side of the benchmark (see bench/run.sh): the same workloads as bench/torch_bench.py.
//! `cargo run --release --example bench -- WORKLOAD` with WORKLOAD = train | train-lora | gen1 |
//! gen16 | encode | finetune | correct | augment | mix-align (train-lora: the stage-1 step with
//! rank-16 LoRA on every projection; finetune: one step of the fine-tuned task model, encoder +
//! linear head, 16 sentences; correct, augment and mix-align run the shipped adaptor on the 16
//! sentences of bench/sentences.txt: `correct:16` decoding, `imix augment`'s rows with its default
//! greedy decoding, and one mix-alignment step). `adaptor-path` prints the shipped adaptor's file.
//! Env: BENCH_PHASES=1 prints forward/backward time, loss and gradient norm per step;
//! BENCH_PLAIN=1 trains through the plain composition instead of the lean path; BENCH_RSS=1
//! prints memory after each phase; BENCH_PURGE=1 keeps mimalloc's default page purging;
//! BENCH_SPIN=1 keeps candle's default idle spinning of matmul workers; BENCH_AB=1 (encode) first
//! times the encoder's raw inference path against its candle composition in one process;
//! BENCH_MAIN=1 runs on the main thread instead of a worker of the compute pool; BENCH_LORA=R (train)
//! trains rank-R LoRA deltas on all projections with the adaptor. IMIX_SIMD=avx2|scalar caps the
//! kernels' instruction set (the `simd` field of each result says which ran).
#[path = "../src/process.rs"]
mod process;

use candle_core::{Device, Tensor};
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::fetch;
use inversed_mixup::nets::llm::lora::{LoraDims, Target};
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::nets::llm::LoraConfig;
use inversed_mixup::nets::optim::{AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};

// As in the `imix` binary: an allocator that reuses freed pages instead of faulting in fresh ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn timed(mut f: impl FnMut(), warmup: usize, runs: usize) -> (f64, Vec<f64>) {
    for _ in 0..warmup {
        f();
    }
    let mut ts: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let all = ts.clone();
    ts.sort_by(f64::total_cmp);
    (ts[ts.len() / 2], all)
}

fn peak_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn rss_note(what: &str) {
    if std::env::var_os("BENCH_RSS").is_some() {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let f = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l.to_string())
                .unwrap_or_default()
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let minflt = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(7))
            .unwrap_or("?")
            .to_string();
        eprintln!(
            "{what}: {} {} minor faults so far {minflt}",
            f("VmRSS:"),
            f("VmHWM:")
        );
    }
}

/// One JSON line of results (the fields bench/run.sh reads), with a throughput when it has one.
fn print_result(work: &str, med: f64, runs: Vec<f64>, flop: f64, rate: Option<(&str, f64)>) {
    let mut r = serde_json::json!({"side": "rust", "workload": work, "simd": imix_kernels::simd::level().name(), "median_s": med, "runs": runs, "flop": flop, "peak_rss_mb": peak_mb()});
    if let Some((k, v)) = rate {
        r[k] = v.into();
    }
    println!("{r}");
}

fn unit_rows(n: usize, seed: u64) -> Tensor {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 384).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let t = Tensor::from_vec(v, (n, 384), &Device::Cpu).unwrap();
    let norm = t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    t.broadcast_div(&norm).unwrap()
}

/// Matmul FLOPs of one causal forward of `b` sequences of `l` positions (linear layers + attention),
/// without the output layer. Same work on both sides, so one count serves both.
fn llm_forward_flop(c: &inversed_mixup::nets::llm::LlmConfig, b: usize, l: usize) -> f64 {
    let kv = c.hidden / c.heads * c.kv_heads;
    let lin = 2 * (2 * c.hidden * c.hidden + 2 * c.hidden * kv + 3 * c.hidden * c.ffn);
    let attn = 2 * 2 * l * l * c.hidden; // QK^T and AV per sequence per layer
    (c.layers * b * (l * lin + attn)) as f64
}

fn main() {
    if std::env::var_os("BENCH_SPIN").is_none() {
        imix_kernels::pool::park_idle_workers();
    }
    if std::env::var_os("BENCH_PURGE").is_none() {
        process::keep_freed_pages();
    }
    // As in the `imix` binary: the work runs on a worker of the compute pool (BENCH_MAIN=1: on
    // the main thread instead).
    if std::env::var_os("BENCH_MAIN").is_none() {
        return imix_kernels::pool::on_compute_pool(run);
    }
    run()
}

/// Matmul FLOPs of one MiniLM forward over sentences of these token counts: per token
/// 2·(4d² + 2d·ffn) per layer, plus attention.
fn encoder_forward_flop(enc: &Encoder, toks: &[usize]) -> f64 {
    let (d, ff) = (enc.dim(), 4 * enc.dim());
    toks.iter()
        .map(|&l| (enc.num_layers() * (l * 2 * (4 * d * d + 2 * d * ff) + 4 * l * l * d)) as f64)
        .sum()
}

/// One fine-tuning step of the task model: the encoder (every layer) and a 2-class linear head on
/// 16 sentences, soft-label cross-entropy, backward, AdamW on both (as `TaskModel::finetune`).
fn finetune_step_bench(dev: &Device) {
    use inversed_mixup::method::classifier::{targets_tensor, Classifier};
    let (enc, varmap) =
        Encoder::load_trainable(&fetch::resolve(None, &fetch::ENCODER).unwrap(), None, dev)
            .unwrap();
    let head = Classifier::new(vec!["a".into(), "b".into()], enc.dim(), dev).unwrap();
    let s: Vec<String> = (0..16)
        .map(|i| {
            format!("sentence number {i} is about the weather in a small town near the river.")
        })
        .collect();
    let r: Vec<&str> = s.iter().map(String::as_str).collect();
    let y = targets_tensor(
        &(0..16)
            .map(|i| {
                if i % 2 == 0 {
                    vec![1.0, 0.0]
                } else {
                    vec![0.0, 1.0]
                }
            })
            .collect::<Vec<_>>(),
        dev,
    )
    .unwrap();
    let (_, trained) = enc.select_vars(&varmap, 0).unwrap();
    let mut opt_e = AdamW::new(
        trained,
        AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let mut opt_h = AdamW::new(
        head.vars(),
        AdamWConfig {
            weight_decay: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    let (med, runs) = timed(
        || {
            let loss = head.loss(&enc.embed(&r).unwrap(), &y).unwrap();
            let g = loss.backward().unwrap();
            opt_e.step(&g, 5e-5, 1.0).unwrap();
            opt_h.step(&g, 1e-3, 0.0).unwrap();
        },
        2,
        9,
    );
    // Forward, then input and weight gradients (two more forwards' worth of products).
    let toks: Vec<usize> = r.iter().map(|t| enc.tokenize(t).unwrap().len()).collect();
    let flop = 3.0 * encoder_forward_flop(&enc, &toks);
    print_result("finetune", med, runs, flop, None);
}

fn run() {
    let work = std::env::args()
        .nth(1)
        .expect("workload: train | train-lora | gen1 | gen16 | encode | finetune | correct | augment | mix-align");
    let dev = Device::Cpu;
    if work == "finetune" {
        return finetune_step_bench(&dev);
    }
    if work == "adaptor-path" {
        let p = inversed_mixup::method::shipped::default_adaptor().unwrap();
        return println!("{}", p.display());
    }
    if matches!(work.as_str(), "correct" | "augment" | "mix-align") {
        return shipped_bench(&work);
    }
    if work == "encode" {
        let enc = Encoder::load(&fetch::resolve(None, &fetch::ENCODER).unwrap(), &dev).unwrap();
        let s: Vec<String> = (0..64)
            .map(|i| {
                format!("sentence number {i} is about the weather in a small town near the river.")
            })
            .collect();
        let r: Vec<&str> = s.iter().map(String::as_str).collect();
        if std::env::var_os("BENCH_AB").is_some() {
            // Raw inference path vs the candle composition, alternating in one process.
            let ids: Vec<Vec<u32>> = r.iter().map(|t| enc.tokenize(t).unwrap()).collect();
            let (mut a, mut b) = (vec![], vec![]);
            for _ in 0..15 {
                let t = std::time::Instant::now();
                enc.embed_ids(&ids).unwrap();
                a.push(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                enc.embed_ids_composed(&ids).unwrap();
                b.push(t.elapsed().as_secs_f64());
            }
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            eprintln!(
                "raw median {:.4} min {:.4} | composed median {:.4} min {:.4}",
                a[7], a[0], b[7], b[0]
            );
        }
        let (med, runs) = timed(
            || {
                enc.embed(&r).unwrap();
            },
            2,
            9,
        );
        // MiniLM: per token 2*(4 d^2 + 2 d ffn) per layer, plus attention.
        let toks: Vec<usize> = r.iter().map(|t| enc.tokenize(t).unwrap().len()).collect();
        let flop = encoder_forward_flop(&enc, &toks);
        print_result(&work, med, runs, flop, Some(("items_per_s", 64.0 / med)));
        return;
    }
    let mut llm = Llm::load(&fetch::resolve(None, &fetch::LLM).unwrap(), &dev).unwrap();
    if std::env::var_os("BENCH_PLAIN").is_some() {
        llm.set_lean_training(false);
    }
    rss_note("llm loaded");
    // BENCH_LORA=R: the adaptor carries rank-R LoRA deltas on every projection (alpha 2R), as peft's
    // LoraConfig(r=R, lora_alpha=2R, target_modules=q,k,v,o,gate,up,down) on the PyTorch side.
    // The train-lora workload: rank 16, as the shipped adaptor.
    let rank = std::env::var("BENCH_LORA")
        .ok()
        .or_else(|| (work == "train-lora").then(|| "16".into()));
    let lora = rank.map(|r| {
        let rank: usize = r.parse().expect("BENCH_LORA=rank");
        LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            targets: Target::ALL.to_vec(),
            dims: LoraDims::of(llm.config()),
        }
    });
    let cfg = AdaptorConfig {
        encoder: "bench".into(),
        enc_dim: 384,
        llm: llm.name().into(),
        llm_dim: llm.config().hidden,
        k: 4,
        hidden: 1024,
        template: DEFAULT_TEMPLATE.into(),
        lora,
        deep: None,
    };
    let a = Adaptor::new(cfg, 0, &dev).unwrap();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 4, &llm).unwrap();
    if work == "train" || work == "train-lora" {
        let h = unit_rows(8, 0);
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        // 31 target tokens + EOS = 32 predicted positions, as the PyTorch side's 32 targets.
        let tg: Vec<Vec<u32>> = (0..8)
            .map(|_| (0..31).map(|_| r.random_range(100..40000)).collect())
            .collect();
        let mut opt = AdamW::new(
            a.sorted_vars(),
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        let (med, runs) = timed(
            || {
                let t0 = std::time::Instant::now();
                let (loss, _) = prompt
                    .gen_loss_lora(&llm, a.lora(), &a.forward(&h).unwrap(), &tg, true)
                    .unwrap();
                rss_note("after forward");
                let t1 = std::time::Instant::now();
                let g = loss.backward().unwrap();
                rss_note("after backward");
                if std::env::var_os("BENCH_PHASES").is_some() {
                    let gn: f32 = a
                        .sorted_vars()
                        .iter()
                        .map(|(_, v)| {
                            g.get(v.as_tensor())
                                .unwrap()
                                .sqr()
                                .unwrap()
                                .sum_all()
                                .unwrap()
                                .to_scalar::<f32>()
                                .unwrap()
                        })
                        .sum();
                    eprintln!(
                        "forward {:.3} s, backward {:.3} s, loss {:.6}, grad norm {:.6}",
                        (t1 - t0).as_secs_f64(),
                        t1.elapsed().as_secs_f64(),
                        loss.to_scalar::<f32>().unwrap(),
                        gn.sqrt()
                    );
                }
                opt.step(&g, 1e-3, 0.0).unwrap();
            },
            2,
            9,
        );
        // Forward + input-only backward (about the forward again), logits at the 32 targets only.
        let c = llm.config();
        let fwd =
            llm_forward_flop(c, 8, prompt.len() + 31) + (8 * 32 * 2 * c.hidden * c.vocab) as f64;
        print_result(&work, med, runs, 2.0 * fwd, None);
    } else {
        let b = if work == "gen1" { 1 } else { 16 };
        let x = prompt
            .embeds(&llm, &a.forward(&unit_rows(b, 0)).unwrap())
            .unwrap();
        let (med, runs) = timed(
            || {
                llm.generate_fixed(&x, 32).unwrap();
            },
            1,
            5,
        );
        // Prefill + 32 cached steps (attention over the growing cache) + the output layer per new token.
        let c = llm.config();
        let p = prompt.len();
        let mut flop = llm_forward_flop(c, b, p);
        for t in 0..32 {
            let kv = c.hidden / c.heads * c.kv_heads;
            let lin = 2 * (2 * c.hidden * c.hidden + 2 * c.hidden * kv + 3 * c.hidden * c.ffn);
            flop += (c.layers * b * (lin + 4 * (p + t + 1) * c.hidden)) as f64;
        }
        flop += (b * 32 * 2 * c.hidden * c.vocab) as f64;
        print_result(
            &work,
            med,
            runs,
            flop,
            Some(("tokens_per_s", (b * 32) as f64 / med)),
        );
    }
}

/// The 16 sentences of bench/sentences.txt (the PyTorch side reads the same file).
fn bench_sentences() -> Vec<String> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/sentences.txt");
    std::fs::read_to_string(p)
        .expect("bench/sentences.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Workloads of the shipped adaptor (rank-16 LoRA) on real sentences:
/// - `correct`: `correct:16` decoding of the 16 sentences' embeddings (16 greedy rounds, each
///   re-embedded); sentences per second.
/// - `augment`: what `imix augment` does per batch of 16 rows with its defaults: embed both
///   sources, mix at fixed lambdas (renormalised), greedy decoding, re-embed the rows and label
///   them with a (random) 2-class head; rows per second.
/// - `mix-align`: one mix-alignment step: 4 mixes and 4 replayed sentences, L_GEN with the LoRA
///   deltas, backward, AdamW on the adaptor and deltas.
fn shipped_bench(work: &str) {
    use inversed_mixup::api::Pipeline;
    use inversed_mixup::method::augment::mix_embeddings;
    use inversed_mixup::method::classifier::Classifier;
    use inversed_mixup::nets::llm::{Decode, GenerateOptions};
    let mut p = Pipeline::load(None, None, None).unwrap();
    let s = bench_sentences();
    let refs: Vec<&str> = s.iter().map(String::as_str).collect();
    // Decoding workloads merge the LoRA in place, as `imix augment` and `imix invert` do; the
    // mix-alignment step trains on the unmerged LLM.
    if work != "mix-align" {
        p.merge_for_decoding().unwrap();
    }
    // Lambdas as drawn from Beta(0.2, 0.2) would be mostly near the ends; fixed values keep both
    // sides decoding the same mixes.
    let lambdas: Vec<f64> = (0..16)
        .map(|i| [0.05, 0.3, 0.5, 0.7, 0.95][i % 5])
        .collect();
    match work {
        "correct" => {
            let h = p.encoder.embed(&refs).unwrap();
            let opts = GenerateOptions {
                decode: Decode::Correct(16),
                ..Default::default()
            };
            let inv = p.inverter().unwrap();
            let mut out = vec![];
            // One call is 256 decodes: two runs, no warm-up (the first rounds warm up).
            let (med, runs) = timed(|| out = inv.decode(&h, &opts).unwrap(), 0, 2);
            eprintln!("{out:?}");
            print_result(work, med, runs, 0.0, Some(("items_per_s", 16.0 / med)));
        }
        "augment" => {
            let head = Classifier::new(
                vec!["a".into(), "b".into()],
                p.encoder.dim(),
                &p.llm.device().clone(),
            )
            .unwrap();
            let inv = p.inverter().unwrap();
            let rev: Vec<&str> = refs.iter().rev().copied().collect();
            let opts = GenerateOptions::default();
            let mut out = vec![];
            let (med, runs) = timed(
                || {
                    let ha = p.encoder.embed(&refs).unwrap();
                    let hb = p.encoder.embed(&rev).unwrap();
                    let hm = mix_embeddings(&ha, &hb, &lambdas, true).unwrap();
                    out = inv.decode(&hm, &opts).unwrap();
                    let g = inv.embed_texts(&out).unwrap();
                    head.probs(&g).unwrap();
                },
                1,
                5,
            );
            eprintln!("{out:?}");
            print_result(work, med, runs, 0.0, Some(("items_per_s", 16.0 / med)));
        }
        _ => {
            let h = p.encoder.embed(&refs[..8]).unwrap();
            let hb = p.encoder.embed(&refs[8..]).unwrap();
            let mixed = mix_embeddings(
                &h.narrow(0, 0, 4).unwrap(),
                &hb.narrow(0, 0, 4).unwrap(),
                &lambdas[1..5],
                true,
            )
            .unwrap();
            let x = Tensor::cat(&[&mixed, &h.narrow(0, 4, 4).unwrap()], 0).unwrap();
            // Targets: the sentences themselves (a kept mix is a sentence of the same length).
            let tg: Vec<Vec<u32>> = s[..8]
                .iter()
                .map(|t| p.llm.tokenizer().encode(t).unwrap())
                .collect();
            let a = &p.adaptor;
            let mut opt = AdamW::new(
                a.sorted_vars(),
                AdamWConfig {
                    weight_decay: 0.01,
                    ..Default::default()
                },
            )
            .unwrap();
            let prompt = Prompt::new(&a.config().template, a.config().k, &p.llm).unwrap();
            let (med, runs) = timed(
                || {
                    let (loss, _) = prompt
                        .gen_loss_lora(&p.llm, a.lora(), &a.forward(&x).unwrap(), &tg, true)
                        .unwrap();
                    let g = loss.backward().unwrap();
                    opt.step(&g, 1e-4, 1.0).unwrap();
                },
                2,
                9,
            );
            print_result(work, med, runs, 0.0, None);
        }
    }
}
