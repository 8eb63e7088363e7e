//! LoRA deltas on the frozen LLM: gradients through the written-out block backward equal the
//! plain composition and finite differences; base weights stay bit-identical; resume is exact;
//! merged generation weights equal the unmerged forward; adaptor files keep and check the layout.

mod common;

use candle_core::{DType, Device, Tensor};
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::encoder::{embed_corpus, Encoder};
use inversed_mixup::nets::llm::lora::{LoraDims, Target};
use inversed_mixup::nets::llm::{Llm, LoraConfig};
use inversed_mixup::stages::align::{AlignConfig, Aligner};

const DEV: Device = Device::Cpu;

fn lora_cfg(llm: &Llm, targets: &[Target]) -> LoraConfig {
    LoraConfig { rank: 2, alpha: 4.0, targets: targets.to_vec(), dims: LoraDims::of(llm.config()) }
}

fn adaptor(llm: &Llm, enc_dim: usize, targets: &[Target], seed: u64) -> Adaptor {
    let cfg = AdaptorConfig {
        encoder: "e".into(),
        enc_dim,
        llm: llm.name().into(),
        llm_dim: llm.config().hidden,
        k: 2,
        hidden: 8,
        template: DEFAULT_TEMPLATE.into(),
        lora: Some(lora_cfg(llm, targets)),
        deep: None,
    };
    Adaptor::new(cfg, seed, &DEV).unwrap()
}

/// B starts at zero (LoRA begins as the base model); tests need non-zero deltas to see gradients in A.
fn perturb(a: &Adaptor, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, v) in a.sorted_vars().into_iter().filter(|(n, _)| n.starts_with("lora")) {
        let x: Vec<f32> = (0..v.elem_count()).map(|_| r.random_range(-0.3f32..0.3)).collect();
        v.set(&Tensor::from_vec(x, v.dims(), &DEV).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn tiny_llm() -> (tempfile::TempDir, Llm) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(d.path(), 1);
    let llm = Llm::load(d.path(), &DEV).unwrap();
    (d, llm)
}

fn rand(dims: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    Tensor::from_vec((0..n).map(|_| r.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), dims, &DEV).unwrap()
}

#[test]
fn lora_gradients_match_the_plain_path_and_finite_differences() {
    let (_d, mut llm) = tiny_llm();
    // Every target at once, and subsets that leave gaps in the stacked Q/K/V and gate/up slots.
    for targets in [Target::ALL.to_vec(), vec![Target::K, Target::Up], vec![Target::Q, Target::V, Target::O, Target::Down]] {
        let a = adaptor(&llm, 6, &targets, 3);
        perturb(&a, 4);
        let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
        let h = rand(&[3, 6], 30);
        common::assert_lean_equals_plain(&mut llm, &prompt, &a, &h, &["a cat", "hello there world", "x"], 1e-5, 1e-4);
        llm.set_lean_training(true);
        let tg: Vec<Vec<u32>> = ["a cat", "hello there world"].iter().map(|t| Prompt::target_ids(&llm, t).unwrap()).collect();
        let h2 = h.narrow(0, 0, 2).unwrap();
        let loss = || prompt.gen_loss_lora(&llm, a.lora(), &a.forward(&h2).unwrap(), &tg, true).unwrap().0;
        let g = loss().backward().unwrap();
        for (name, var) in a.sorted_vars().into_iter().filter(|(n, _)| n.starts_with("lora")) {
            let gv = g.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient reached {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(gv.iter().filter(|v| **v != 0.0).count() > gv.len() / 2, "{name} ({targets:?}): most LoRA entries got no gradient");
            common::check_var_grad(&format!("{name} {targets:?}"), &var, &gv, &|| loss().to_scalar::<f32>().unwrap() as f64, 0.02);
        }
    }
}

#[test]
fn merged_weights_equal_the_unmerged_forward_and_leave_the_base_untouched() {
    let (_d, llm) = tiny_llm();
    let a = adaptor(&llm, 6, &Target::ALL, 5);
    perturb(&a, 6);
    let before: Vec<Vec<f32>> = llm.weights().iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    let merged = llm.with_lora(a.lora().unwrap()).unwrap();
    let x = rand(&[2, 5, llm.config().hidden], 7);
    let unmerged = llm.forward_embeds_lora(&x, None, false, a.lora()).unwrap();
    let m = merged.forward_embeds(&x, None, false).unwrap();
    let base = llm.forward_embeds(&x, None, false).unwrap();
    let diff = |p: &Tensor, q: &Tensor| (p - q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff(&m, &unmerged) < 1e-4, "merged and unmerged LoRA forwards differ by {}", diff(&m, &unmerged));
    assert!(diff(&base, &unmerged) > 1e-2, "the deltas should change the output");
    let after: Vec<Vec<f32>> = llm.weights().iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert_eq!(before, after, "merging changed the base weights");
}

fn tiny_stage1() -> (tempfile::TempDir, Encoder, Llm, Vec<String>) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&d.path().join("llm"), 1);
    common::write_tiny_bert(&d.path().join("enc"), 2);
    let enc = Encoder::load(&d.path().join("enc"), &DEV).unwrap();
    let llm = Llm::load(&d.path().join("llm"), &DEV).unwrap();
    (d, enc, llm, common::sentences(48, 3))
}

fn cfg(steps: usize) -> AlignConfig {
    AlignConfig { steps, batch_size: 4, lr: 1e-2, warmup: 2, holdout: 8, eval_every: 0, max_target_tokens: 64, ..Default::default() }
}

fn bits(ts: &[&Tensor]) -> Vec<Vec<u32>> {
    ts.iter().map(|t| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

#[test]
fn training_with_lora_keeps_base_weights_bit_identical_and_resumes_exactly() {
    let (_d, enc, llm, texts) = tiny_stage1();
    let emb = embed_corpus(&enc, &texts, None, &|_, _| {}).unwrap();
    let llm_before = bits(&llm.weights());
    let a = adaptor(&llm, enc.dim(), &Target::ALL, 0);
    let lora_before = bits(&a.lora().unwrap().named_vars().iter().map(|(_, v)| v.as_tensor()).collect::<Vec<_>>());
    let mut full = Aligner::new(&llm, a, &texts, emb.clone(), cfg(8)).unwrap();
    let curve: Vec<f64> = (0..8).map(|_| full.train_step().unwrap().loss).collect();
    assert_eq!(bits(&llm.weights()), llm_before, "frozen LLM weights changed");
    let lora_after = bits(&full.adaptor.lora().unwrap().named_vars().iter().map(|(_, v)| v.as_tensor()).collect::<Vec<_>>());
    assert_ne!(lora_after, lora_before, "the LoRA deltas did not train");

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("a.ckpt");
    let mut first = Aligner::new(&llm, adaptor(&llm, enc.dim(), &Target::ALL, 0), &texts, emb.clone(), cfg(8)).unwrap();
    let mut resumed: Vec<f64> = (0..3).map(|_| first.train_step().unwrap().loss).collect();
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    let mut second = Aligner::new(&llm, adaptor(&llm, enc.dim(), &Target::ALL, 9), &texts, emb, cfg(8)).unwrap();
    second.load_checkpoint(&ck).unwrap();
    resumed.extend((0..5).map(|_| second.train_step().unwrap().loss));
    assert_eq!(resumed, curve, "resumed loss curve must equal the uninterrupted one bit for bit (LoRA on)");
    let p = |a: &Aligner| bits(&a.adaptor.sorted_vars().iter().map(|(_, v)| v.as_tensor()).collect::<Vec<_>>());
    assert_eq!(p(&second), p(&full));
}

#[test]
fn adaptor_file_keeps_the_lora_layout_and_refuses_a_mismatched_llm() {
    let (_d, llm) = tiny_llm();
    let a = adaptor(&llm, 6, &[Target::Q, Target::Down], 1);
    perturb(&a, 2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    a.save(&p, false).unwrap();
    let b = Adaptor::load(&p, &DEV).unwrap();
    assert_eq!(b.config(), a.config());
    assert_eq!(bits(&b.sorted_vars().iter().map(|(_, v)| v.as_tensor()).collect::<Vec<_>>()), bits(&a.sorted_vars().iter().map(|(_, v)| v.as_tensor()).collect::<Vec<_>>()));
    assert!(b.check_models(&p, "e", 6, llm.name(), llm.config()).is_ok());
    let mut other = llm.config().clone();
    other.layers += 1;
    let e = b.check_models(&p, "e", 6, llm.name(), &other).unwrap_err().to_string();
    assert!(e.contains("a.safetensors") && e.contains("LoRA"), "{e}");
    // A file whose LoRA tensors do not match its header is refused when loading.
    let mut cfg = a.config().clone();
    cfg.lora.as_mut().unwrap().rank = 3;
    let c = Adaptor::new(cfg, 0, &DEV).unwrap();
    let t: std::collections::HashMap<String, Tensor> = a.sorted_vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    let e = c.set_weights(&t).unwrap_err().to_string();
    assert!(e.contains("lora.000") && e.contains("shape"), "{e}");
    assert!(Target::parse_list("q,kk").is_err());
    assert_eq!(Target::parse_list("all").unwrap(), Target::ALL.to_vec());
}
