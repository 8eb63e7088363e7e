//! Tiny random models written to disk in the real file formats, so tests exercise the real loaders.
#![allow(dead_code)]
#![allow(clippy::needless_range_loop)]

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

fn randn(rng: &mut rand_chacha::ChaCha8Rng, dims: &[usize], scale: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn save(path: &Path, t: HashMap<String, Tensor>) {
    candle_core::safetensors::save(&t, path).unwrap();
}

/// A tiny Llama (hidden 32, 2 layers, 4 heads / 2 KV heads, byte-level vocab of 257) as a
/// Hugging Face safetensors directory.
pub fn write_tiny_llama(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, layers, heads, kv, ffn) = (32usize, 2usize, 4usize, 2usize, 64usize);
    let hd = h / heads;
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort();
    let mut vocab = serde_json::Map::new();
    for (i, c) in alphabet.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let eos = alphabet.len();
    vocab.insert("<eos>".into(), json!(eos));
    let v = eos + 1;
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": eos, "content": "<eos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let cfg = json!({
        "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "intermediate_size": ffn, "vocab_size": v, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256, "eos_token_id": eos, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut t = HashMap::new();
    t.insert(
        "model.embed_tokens.weight".to_string(),
        randn(&mut rng, &[v, h], 0.2),
    );
    t.insert(
        "model.norm.weight".to_string(),
        (randn(&mut rng, &[h], 0.1) + 1.0).unwrap(),
    );
    let s = 1.0 / (h as f32).sqrt();
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        let mut put = |n: &str, d: &[usize], sc: f32| {
            t.insert(format!("{p}.{n}"), randn(&mut rng, d, sc));
        };
        put("self_attn.q_proj.weight", &[heads * hd, h], s);
        put("self_attn.k_proj.weight", &[kv * hd, h], s);
        put("self_attn.v_proj.weight", &[kv * hd, h], s);
        put("self_attn.o_proj.weight", &[h, heads * hd], s);
        put("mlp.gate_proj.weight", &[ffn, h], s);
        put("mlp.up_proj.weight", &[ffn, h], s);
        put("mlp.down_proj.weight", &[h, ffn], 1.0 / (ffn as f32).sqrt());
        t.insert(
            format!("{p}.input_layernorm.weight"),
            (randn(&mut rng, &[h], 0.1) + 1.0).unwrap(),
        );
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            (randn(&mut rng, &[h], 0.1) + 1.0).unwrap(),
        );
    }
    save(&dir.join("model.safetensors"), t);
}

/// A tiny BERT sentence encoder (hidden 16, 2 layers, character-level WordPiece) with
/// sentence-transformers pooling files.
pub fn write_tiny_bert(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-".chars() {
        words.push(c.to_string());
        words.push(format!("##{c}"));
    }
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let special = |id: usize, c: &str| json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let (h, layers, ffn, v) = (16usize, 2usize, 32usize, words.len());
    let cfg = json!({"vocab_size": v, "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 4,
                     "intermediate_size": ffn, "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": h, "pooling_mode_mean_tokens": true}).to_string(),
    )
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut t = HashMap::new();
    let mut put = |n: String, d: &[usize], sc: f32| {
        t.insert(n, randn(&mut rng, d, sc));
    };
    put("embeddings.word_embeddings.weight".into(), &[v, h], 1.0);
    put(
        "embeddings.position_embeddings.weight".into(),
        &[64, h],
        0.1,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, h],
        0.1,
    );
    let s = 1.0 / (h as f32).sqrt();
    for i in 0..layers {
        let p = format!("encoder.layer.{i}");
        for n in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            put(format!("{p}.{n}.weight"), &[h, h], s);
            put(format!("{p}.{n}.bias"), &[h], 0.1);
        }
        put(format!("{p}.intermediate.dense.weight"), &[ffn, h], s);
        put(format!("{p}.intermediate.dense.bias"), &[ffn], 0.1);
        put(
            format!("{p}.output.dense.weight"),
            &[h, ffn],
            1.0 / (ffn as f32).sqrt(),
        );
        put(format!("{p}.output.dense.bias"), &[h], 0.1);
    }
    let ones = Tensor::ones(h, DType::F32, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(h, DType::F32, &Device::Cpu).unwrap();
    for ln in std::iter::once("embeddings.LayerNorm".to_string()).chain((0..layers).flat_map(|i| {
        [
            format!("encoder.layer.{i}.attention.output.LayerNorm"),
            format!("encoder.layer.{i}.output.LayerNorm"),
        ]
    })) {
        t.insert(format!("{ln}.weight"), ones.clone());
        t.insert(format!("{ln}.bias"), zeros.clone());
    }
    save(&dir.join("model.safetensors"), t);
}

/// A small corpus of varied sentences, generated (tests never read ../shared).
pub fn sentences(n: usize, seed: u64) -> Vec<String> {
    let subj = [
        "the cat",
        "a dog",
        "my friend",
        "the old man",
        "this film",
        "our team",
        "the river",
        "a bird",
    ];
    let verb = [
        "sees",
        "likes",
        "finds",
        "hates",
        "crosses",
        "watches",
        "builds",
        "remembers",
    ];
    let obj = [
        "the house",
        "a red ball",
        "the quiet town",
        "every song",
        "the long road",
        "two apples",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            format!(
                "{} {} {}.",
                subj[rng.random_range(0..subj.len())],
                verb[rng.random_range(0..verb.len())],
                obj[rng.random_range(0..obj.len())]
            )
        })
        .collect()
}

/// Compares autograd `grad` of `var` with central finite differences of `loss` on every entry.
/// Each entry must agree within `ATOL + rel * |autograd|` (ATOL 1e-4: the largest error seen on
/// small entries of the tiny models was 4e-5, f32 loss, step 1e-2), the whole gradient within
/// `rel` in L2 norm (seen: 1e-4 to 1e-2), and the check
/// must have signal: at least 3 entries `SIGNAL` times above ATOL, so that a zero, halved or
/// misrouted gradient cannot pass.
pub fn check_var_grad(
    name: &str,
    var: &candle_core::Var,
    grad: &[f32],
    loss: &dyn Fn() -> f64,
    rel: f64,
) {
    check_var_grad_every(name, var, grad, loss, rel, 1);
}

/// [`check_var_grad`] on one entry in `stride`, drawn at random (seed 0): for weights whose full
/// check would take long. That the gradient reaches every entry is for the caller to assert on the
/// whole of `grad`.
pub fn check_var_grad_every(
    name: &str,
    var: &candle_core::Var,
    grad: &[f32],
    loss: &dyn Fn() -> f64,
    rel: f64,
    stride: usize,
) {
    const ATOL: f64 = 1e-4;
    const SIGNAL: f64 = 10.0;
    let base = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(base.len(), grad.len(), "{name}: gradient shape");
    let mut picked = rand::seq::index::sample(
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
        base.len(),
        base.len().div_ceil(stride.max(1)),
    )
    .into_vec();
    picked.sort_unstable();
    let strong = picked
        .iter()
        .filter(|&&i| (grad[i] as f64).abs() >= SIGNAL * ATOL)
        .count();
    assert!(strong >= 3, "{name}: only {strong} gradient entries are {SIGNAL}x above the tolerance {ATOL}: the check would prove nothing");
    let set = |v: &[f32]| {
        var.set(&Tensor::from_slice(v, var.dims(), &Device::Cpu).unwrap())
            .unwrap()
    };
    let eps = 1e-2f32;
    let mut p = base.clone();
    let (mut diff2, mut norm2) = (0f64, 0f64);
    for &i in &picked {
        p[i] = base[i] + eps;
        set(&p);
        let lp = loss();
        p[i] = base[i] - eps;
        set(&p);
        let lm = loss();
        p[i] = base[i];
        let fd = (lp - lm) / (2.0 * eps as f64);
        let an = grad[i] as f64;
        assert!(
            (fd - an).abs() <= ATOL + rel * an.abs(),
            "{name}[{i}]: autograd {an} vs finite difference {fd}"
        );
        diff2 += (fd - an).powi(2);
        norm2 += an.powi(2);
    }
    set(&base);
    assert!(
        diff2.sqrt() <= rel * norm2.sqrt(),
        "{name}: relative L2 error {:.4} above {rel}",
        diff2.sqrt() / norm2.sqrt()
    );
}

/// Runs L_GEN through the lean and the plain training path of `llm` and asserts the same loss
/// (relative `loss_tol`) and the same adaptor gradients (relative to each gradient's largest entry).
pub fn assert_lean_equals_plain(
    llm: &mut inversed_mixup::nets::llm::Llm,
    prompt: &inversed_mixup::method::prompt::Prompt,
    a: &inversed_mixup::method::adaptor::Adaptor,
    h: &Tensor,
    texts: &[&str],
    loss_tol: f32,
    grad_tol: f32,
) {
    use inversed_mixup::method::prompt::Prompt;
    let targets: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| Prompt::target_ids(llm, t).unwrap())
        .collect();
    let mut run = |lean: bool| {
        llm.set_lean_training(lean);
        let loss = prompt
            .gen_loss_deep(
                llm,
                a.lora(),
                a.deep(),
                &a.forward(h).unwrap(),
                &targets,
                true,
            )
            .unwrap()
            .0;
        let g = loss.backward().unwrap();
        let grads: Vec<Vec<f32>> = a
            .sorted_vars()
            .iter()
            .map(|(_, v)| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        (loss.to_scalar::<f32>().unwrap(), grads)
    };
    let ((ll, gl), (lp, gp)) = (run(true), run(false));
    assert!(
        (ll - lp).abs() <= loss_tol * lp.abs().max(1.0),
        "lean loss {ll} vs plain {lp}"
    );
    for (a, b) in gl.iter().zip(&gp) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "no gradient reached the adaptor");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= grad_tol * scale,
                "gradient {x} vs {y} (scale {scale})"
            );
        }
    }
}

/// The tiny Llama of [`write_tiny_llama`] (seed 1), loaded; keep the directory alive with it.
pub fn tiny_llm() -> (tempfile::TempDir, inversed_mixup::nets::llm::Llm) {
    let d = tempfile::tempdir().unwrap();
    write_tiny_llama(d.path(), 1);
    let llm = inversed_mixup::nets::llm::Llm::load(d.path(), &Device::Cpu).unwrap();
    (d, llm)
}

/// An f32 tensor of seeded uniform values in [-1, 1).
pub fn uniform(dims: &[usize], seed: u64) -> Tensor {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    Tensor::from_vec(
        (0..n)
            .map(|_| r.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
        dims,
        &Device::Cpu,
    )
    .unwrap()
}

/// The bit patterns of tensors (as f32): equality means bit-identical.
pub fn bits(ts: &[&Tensor]) -> Vec<Vec<u32>> {
    ts.iter()
        .map(|t| {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

/// The bit patterns of an adaptor's trainable variables, in `sorted_vars` order.
pub fn adaptor_bits(a: &inversed_mixup::method::adaptor::Adaptor) -> Vec<Vec<u32>> {
    bits(
        &a.sorted_vars()
            .iter()
            .map(|(_, v)| v.as_tensor())
            .collect::<Vec<_>>(),
    )
}

/// Stage 1 on the tiny models with adaptors made by `make(llm, enc_dim, seed)`: 8 steps keep the
/// LLM's weights bit-identical, and a run stopped after 3 steps, checkpointed and resumed into an
/// adaptor of another seed gives the same loss curve and weights bit for bit. `trained(before,
/// after)` then checks what the 8 steps changed (`what` names the setting in messages).
pub fn assert_stage1_frozen_and_resumes_exactly(
    what: &str,
    make: &dyn Fn(
        &inversed_mixup::nets::llm::Llm,
        usize,
        u64,
    ) -> inversed_mixup::method::adaptor::Adaptor,
    trained: &dyn Fn(
        &inversed_mixup::method::adaptor::Adaptor,
        &inversed_mixup::method::adaptor::Adaptor,
    ),
) {
    use inversed_mixup::nets::encoder::{embed_corpus, Encoder};
    use inversed_mixup::nets::llm::Llm;
    use inversed_mixup::stages::align::{AlignConfig, Aligner};
    let d = tempfile::tempdir().unwrap();
    write_tiny_llama(&d.path().join("llm"), 1);
    write_tiny_bert(&d.path().join("enc"), 2);
    let enc = Encoder::load(&d.path().join("enc"), &Device::Cpu).unwrap();
    let llm = Llm::load(&d.path().join("llm"), &Device::Cpu).unwrap();
    let texts = sentences(48, 3);
    let emb = embed_corpus(&enc, &texts, None, &|_, _| {}).unwrap();
    let cfg = AlignConfig {
        steps: 8,
        batch_size: 4,
        lr: 1e-2,
        warmup: 2,
        holdout: 8,
        eval_every: 0,
        max_target_tokens: 64,
        ..Default::default()
    };
    let llm_before = bits(&llm.weights());
    let mut full = Aligner::new(
        &llm,
        make(&llm, enc.dim(), 0),
        &texts,
        emb.clone(),
        cfg.clone(),
    )
    .unwrap();
    let curve: Vec<f64> = (0..8).map(|_| full.train_step().unwrap().loss).collect();
    assert_eq!(
        bits(&llm.weights()),
        llm_before,
        "frozen LLM weights changed ({what})"
    );
    trained(&make(&llm, enc.dim(), 0), &full.adaptor);

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("a.ckpt");
    let mut first = Aligner::new(
        &llm,
        make(&llm, enc.dim(), 0),
        &texts,
        emb.clone(),
        cfg.clone(),
    )
    .unwrap();
    let mut resumed: Vec<f64> = (0..3).map(|_| first.train_step().unwrap().loss).collect();
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    let mut second = Aligner::new(&llm, make(&llm, enc.dim(), 9), &texts, emb, cfg).unwrap();
    second.load_checkpoint(&ck).unwrap();
    resumed.extend((0..5).map(|_| second.train_step().unwrap().loss));
    assert_eq!(
        resumed, curve,
        "resumed loss curve must equal the uninterrupted one bit for bit ({what})"
    );
    assert_eq!(
        adaptor_bits(&second.adaptor),
        adaptor_bits(&full.adaptor),
        "resumed weights differ ({what})"
    );
}

/// A tiny random encoder (seed 2), LLM (seed 1) and a fresh adaptor (`adaptor_seed`, k = 2) between
/// them, written under `dir` and loaded: the parts of an `Inverter`.
pub fn tiny_inverter_parts(
    dir: &Path,
    adaptor_seed: u64,
) -> (
    inversed_mixup::nets::encoder::Encoder,
    inversed_mixup::nets::llm::Llm,
    inversed_mixup::method::adaptor::Adaptor,
) {
    use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig};
    write_tiny_llama(&dir.join("llm"), 1);
    write_tiny_bert(&dir.join("enc"), 2);
    let enc = inversed_mixup::nets::encoder::Encoder::load(&dir.join("enc"), &Device::Cpu).unwrap();
    let llm = inversed_mixup::nets::llm::Llm::load(&dir.join("llm"), &Device::Cpu).unwrap();
    let cfg = AdaptorConfig {
        encoder: enc.name().into(),
        enc_dim: enc.dim(),
        llm: llm.name().into(),
        llm_dim: 32,
        k: 2,
        hidden: 16,
        template: "<soft>:".into(),
        lora: None,
        deep: None,
    };
    let adaptor = Adaptor::new(cfg, adaptor_seed, &Device::Cpu).unwrap();
    (enc, llm, adaptor)
}

/// Writes the tiny encoder, LLM and an adaptor between them (seed 3) under `dir`, and returns the
/// command-line flags that select them: `--encoder DIR --llm DIR --adaptor FILE`.
pub fn write_tiny_model_flags(dir: &Path) -> [String; 6] {
    let (_, _, adaptor) = tiny_inverter_parts(dir, 3);
    let a = dir.join("adaptor.safetensors");
    adaptor.save(&a, false).unwrap();
    let s = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    [
        "--encoder".into(),
        s(dir.join("enc")),
        "--llm".into(),
        s(dir.join("llm")),
        "--adaptor".into(),
        s(a),
    ]
}

/// [`write_tiny_model_flags`] once per test binary, under cargo's scratch folder (named after the
/// binary, so that two binaries never share one).
pub fn tiny_model_flags() -> &'static [String; 6] {
    static FLAGS: std::sync::OnceLock<[String; 6]> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_str().unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-models-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        write_tiny_model_flags(&dir)
    })
}

/// An adaptor (k = 2, hidden 8) with rank-2, alpha-4 LoRA deltas on `targets` of `llm`.
pub fn lora_adaptor(
    llm: &inversed_mixup::nets::llm::Llm,
    enc_dim: usize,
    targets: &[inversed_mixup::nets::llm::lora::Target],
    seed: u64,
) -> inversed_mixup::method::adaptor::Adaptor {
    small_adaptor(llm, enc_dim, targets, None, seed)
}

/// An adaptor (k = 2, hidden 8) with rank-2, alpha-4 LoRA deltas on `targets` (none when empty)
/// and the given deep soft tokens.
pub fn small_adaptor(
    llm: &inversed_mixup::nets::llm::Llm,
    enc_dim: usize,
    targets: &[inversed_mixup::nets::llm::lora::Target],
    deep: Option<inversed_mixup::method::deep_soft::DeepConfig>,
    seed: u64,
) -> inversed_mixup::method::adaptor::Adaptor {
    use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
    use inversed_mixup::nets::llm::lora::LoraDims;
    let lora = (!targets.is_empty()).then(|| inversed_mixup::nets::llm::LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: targets.to_vec(),
        dims: LoraDims::of(llm.config()),
    });
    let cfg = AdaptorConfig {
        encoder: "e".into(),
        enc_dim,
        llm: llm.name().into(),
        llm_dim: llm.config().hidden,
        k: 2,
        hidden: 8,
        template: DEFAULT_TEMPLATE.into(),
        lora,
        deep,
    };
    Adaptor::new(cfg, seed, &Device::Cpu).unwrap()
}

/// B starts at zero (LoRA begins as the base model); tests need non-zero deltas to see gradients in A.
pub fn perturb_lora(a: &inversed_mixup::method::adaptor::Adaptor, seed: u64) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, v) in a
        .sorted_vars()
        .into_iter()
        .filter(|(n, _)| n.starts_with("lora"))
    {
        let x: Vec<f32> = (0..v.elem_count())
            .map(|_| r.random_range(-0.3f32..0.3))
            .collect();
        v.set(&Tensor::from_vec(x, v.dims(), &Device::Cpu).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(p: &Tensor, q: &Tensor) -> f32 {
    (p - q)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
