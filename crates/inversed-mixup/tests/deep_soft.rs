//! Deep soft tokens (per-layer K/V deltas at the soft-token positions): gradients through the
//! written-out block backward equal the plain composition and finite differences, with and
//! without the prompt-prefix cache and with LoRA; they start as an exact no-op; generation applies
//! them where training does; base weights stay bit-identical; resume is exact; files keep and
//! check the layout.

mod common;

use candle_core::{Device, Tensor};
use inversed_mixup::method::adaptor::{Adaptor, DEFAULT_TEMPLATE};
use inversed_mixup::method::deep_soft::DeepConfig;
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::llm::lora::Target;
use inversed_mixup::nets::llm::Llm;

const DEV: Device = Device::Cpu;

fn adaptor(llm: &Llm, enc_dim: usize, lora: bool, seed: u64) -> Adaptor {
    let targets = if lora { &Target::ALL[..] } else { &[] };
    let deep = Some(DeepConfig::for_llm(3, 2.0, llm.config()).unwrap());
    common::small_adaptor(llm, enc_dim, targets, deep, seed)
}

/// The up-projection (and LoRA's B) start at zero; gradients of the other factor need them
/// non-zero, and the down-projection is drawn wider so that the deltas are large enough for
/// finite differences in f32 to resolve their gradients.
fn perturb(a: &Adaptor, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, v) in a
        .sorted_vars()
        .into_iter()
        .filter(|(n, _)| n.starts_with("deep") || n.starts_with("lora"))
    {
        let w = if name == "deep.down" { 1.0 } else { 0.3 };
        let x: Vec<f32> = (0..v.elem_count()).map(|_| r.random_range(-w..w)).collect();
        v.set(&Tensor::from_vec(x, v.dims(), &DEV).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn deep_gradients_match_the_plain_path_and_finite_differences() {
    let (_d, mut llm) = common::tiny_llm();
    // The prompt prefix cached (deltas from position 0 of the input), not cached (from the end of
    // the prefix), and with LoRA (which runs the whole prompt).
    for (lora, cached) in [(false, true), (false, false), (true, true)] {
        let a = adaptor(&llm, 6, lora, 3);
        perturb(&a, 4);
        let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
        let prompt = if cached {
            prompt
        } else {
            prompt.without_prefix_cache()
        };
        let h = common::uniform(&[3, 6], 30);
        common::assert_lean_equals_plain(
            &mut llm,
            &prompt,
            &a,
            &h,
            &["a cat", "hello there world", "x"],
            1e-5,
            1e-4,
        );
        llm.set_lean_training(true);
        let tg: Vec<Vec<u32>> = ["a cat", "hello there world"]
            .iter()
            .map(|t| Prompt::target_ids(&llm, t).unwrap())
            .collect();
        let h2 = h.narrow(0, 0, 2).unwrap();
        let loss = || {
            prompt
                .gen_loss_deep(
                    &llm,
                    a.lora(),
                    a.deep(),
                    &a.forward(&h2).unwrap(),
                    &tg,
                    true,
                )
                .unwrap()
                .0
        };
        let g = loss().backward().unwrap();
        for (name, var) in a
            .sorted_vars()
            .into_iter()
            .filter(|(n, _)| n.starts_with("deep"))
        {
            let gv = g
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient reached {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                gv.iter().filter(|v| **v != 0.0).count() > gv.len() / 2,
                "{name}: most entries got no gradient"
            );
            common::check_var_grad(
                &format!("{name} lora {lora} cached {cached}"),
                &var,
                &gv,
                &|| loss().to_scalar::<f32>().unwrap() as f64,
                0.02,
            );
        }
    }
}

#[test]
fn deep_soft_tokens_start_as_a_no_op_and_generation_applies_them_where_training_does() {
    let (_d, llm) = common::tiny_llm();
    let a = adaptor(&llm, 6, false, 5);
    let mut plain_cfg = a.config().clone();
    plain_cfg.deep = None;
    let plain = Adaptor::new(plain_cfg, 0, &DEV).unwrap();
    plain
        .set_weights_present(
            &a.sorted_vars()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect(),
        )
        .unwrap();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
    let h = common::uniform(&[2, 6], 8);
    let tg: Vec<Vec<u32>> = ["a cat", "the dog ran"]
        .iter()
        .map(|t| Prompt::target_ids(&llm, t).unwrap())
        .collect();
    let loss = |x: &Adaptor| {
        prompt
            .gen_loss_deep(&llm, None, x.deep(), &x.forward(&h).unwrap(), &tg, true)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(
        loss(&a).to_bits(),
        loss(&plain).to_bits(),
        "a zero up-projection must leave the model exactly as it was"
    );
    perturb(&a, 9);
    assert!(
        (loss(&a) - loss(&plain)).abs() > 1e-3,
        "the deltas should change the loss once trained"
    );
    // Generation's prefill (inference kernels, KV cache) and the training forward see the same deltas.
    let soft = a.forward(&h).unwrap();
    let p = prompt.embeds(&llm, &soft).unwrap();
    let deltas = a
        .deep()
        .unwrap()
        .deltas(&soft, prompt.soft_start())
        .unwrap();
    let mut cache = llm.new_cache();
    let infer = llm
        .forward_embeds_deep(&p, Some(&mut cache), false, None, Some(&deltas))
        .unwrap();
    let train = llm
        .forward_embeds_deep(&p, None, true, None, Some(&deltas))
        .unwrap();
    let without = llm.forward_embeds(&p, None, false).unwrap();
    let diff = |x: &Tensor, y: &Tensor| {
        (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        diff(&infer, &train) < 1e-4,
        "inference and training forwards differ by {}",
        diff(&infer, &train)
    );
    assert!(
        diff(&infer, &without) > 1e-3,
        "the deltas did not reach the inference forward"
    );
    // Positions before the soft tokens never see them (causal): the cached prompt prefix stays valid.
    let s = prompt.soft_start();
    assert!(
        s > 0
            && diff(
                &infer.narrow(1, 0, s).unwrap(),
                &without.narrow(1, 0, s).unwrap()
            ) < 1e-6
    );
    // Out of range deltas are refused, not silently truncated.
    let bad = a
        .deep()
        .unwrap()
        .deltas(&soft, p.dim(1).unwrap() - 1)
        .unwrap();
    assert!(llm
        .forward_embeds_deep(&p, None, false, None, Some(&bad))
        .is_err());
}

#[test]
fn training_with_deep_soft_tokens_keeps_base_weights_bit_identical_and_resumes_exactly() {
    let deep_bits = |a: &Adaptor| {
        common::bits(
            &a.deep()
                .unwrap()
                .named_vars()
                .iter()
                .map(|(_, v)| v.as_tensor())
                .collect::<Vec<_>>(),
        )
    };
    common::assert_stage1_frozen_and_resumes_exactly(
        "deep soft tokens on",
        &|llm, dim, seed| adaptor(llm, dim, false, seed),
        &|before, after| {
            assert!(
                deep_bits(after)
                    .iter()
                    .zip(&deep_bits(before))
                    .all(|(x, y)| x != y),
                "both deep projections must train"
            );
        },
    );
}

#[test]
fn adaptor_file_keeps_the_deep_layout_and_refuses_a_mismatched_llm() {
    let (_d, llm) = common::tiny_llm();
    let a = adaptor(&llm, 6, false, 1);
    perturb(&a, 2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    a.save(&p, false).unwrap();
    let b = Adaptor::load(&p, &DEV).unwrap();
    assert_eq!(b.config(), a.config());
    assert_eq!(common::adaptor_bits(&b), common::adaptor_bits(&a));
    assert!(b.check_models(&p, "e", 6, llm.name(), llm.config()).is_ok());
    let mut other = llm.config().clone();
    other.layers += 1;
    let e = b
        .check_models(&p, "e", 6, llm.name(), &other)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.safetensors") && e.contains("deep soft tokens"),
        "{e}"
    );
    // Tensors that do not match the header's rank are refused.
    let mut cfg = a.config().clone();
    cfg.deep.as_mut().unwrap().rank = 4;
    let c = Adaptor::new(cfg, 0, &DEV).unwrap();
    let t: std::collections::HashMap<String, Tensor> = a
        .sorted_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let e = c.set_weights(&t).unwrap_err().to_string();
    assert!(e.contains("deep.") && e.contains("shape"), "{e}");
    assert!(
        DeepConfig::for_llm(0, 1.0, llm.config()).is_err()
            && DeepConfig::for_llm(2, 0.0, llm.config()).is_err()
    );
}
