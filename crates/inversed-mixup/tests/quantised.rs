//! Projections kept as quantised blocks: inference and training give the bits of the dequantised
//! dense weights; LoRA deltas attach to them instead of merging and match the merged weights.

mod common;

use candle_core::quantized::GgmlDType;
use inversed_mixup::method::adaptor::{Adaptor, DEFAULT_TEMPLATE};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::llm::lora::Target;
use inversed_mixup::nets::llm::{GenerateOptions, Llm};

/// The tiny LLM with Q4_1 projections, and its twin holding their dequantised values densely.
fn twins() -> (tempfile::TempDir, Llm, Llm) {
    let (d, llm) = common::tiny_llm();
    let q = llm.with_quantised_projections(GgmlDType::Q4_1).unwrap();
    let dense = q.with_dense_projections().unwrap();
    (d, q, dense)
}

/// Deltas on some projections of each stacked slot (Q and V, gate, down), set non-zero.
fn adaptor(llm: &Llm, seed: u64) -> Adaptor {
    let targets = [Target::Q, Target::V, Target::Gate, Target::Down];
    let a = common::lora_adaptor(llm, 6, &targets, seed);
    common::perturb_lora(&a, seed + 1);
    a
}

/// Prefill (more rows than the decoding kernel takes), one-token steps and greedy generation.
#[test]
fn quantised_projections_give_the_dense_weights_bits() {
    let (_d, q, dense) = twins();
    let h = q.config().hidden;
    for rows in [1, 40] {
        let x = common::uniform(&[2, rows, h], 7);
        assert_eq!(
            common::bits(&[&q.forward_embeds(&x, None, false).unwrap()]),
            common::bits(&[&dense.forward_embeds(&x, None, false).unwrap()]),
            "{rows} positions"
        );
    }
    let prompt = common::uniform(&[2, 3, h], 8);
    let opts = GenerateOptions {
        max_new_tokens: 8,
        ..Default::default()
    };
    assert_eq!(
        q.generate(&prompt, &opts).unwrap(),
        dense.generate(&prompt, &opts).unwrap()
    );
}

/// The training path dequantises once and then equals the dense weights' loss and gradients.
#[test]
fn training_on_quantised_projections_equals_training_on_their_values() {
    let (_d, q, dense) = twins();
    let a = adaptor(&q, 3);
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &q).unwrap();
    let tg: Vec<Vec<u32>> = ["a cat", "hello there world"]
        .iter()
        .map(|t| Prompt::target_ids(&q, t).unwrap())
        .collect();
    let x = common::uniform(&[2, 6], 30);
    let run = |llm: &Llm| {
        let loss = prompt
            .gen_loss_lora(llm, a.lora(), &a.forward(&x).unwrap(), &tg, true)
            .unwrap()
            .0;
        let g = loss.backward().unwrap();
        let mut out = common::bits(&[&loss]);
        for (_, v) in a.sorted_vars() {
            out.extend(common::bits(&[g.get(v.as_tensor()).unwrap()]));
        }
        out
    };
    assert_eq!(run(&q), run(&dense));
}

/// Attached deltas match merged dense weights to rounding; the base stays shared and unchanged;
/// an LLM carrying attached deltas is refused by the training path.
#[test]
fn lora_deltas_attach_to_quantised_projections() {
    let (_d, q, dense) = twins();
    let a = adaptor(&q, 5);
    let lora = a.lora().unwrap();
    let x = common::uniform(&[2, 5, q.config().hidden], 9);
    let base = q.forward_embeds(&x, None, false).unwrap();
    let attached = q.with_lora(lora).unwrap();
    let merged = dense.with_lora(lora).unwrap();
    let unmerged = q.forward_embeds_lora(&x, None, false, Some(lora)).unwrap();
    let got = attached.forward_embeds(&x, None, false).unwrap();
    assert!(common::max_abs_diff(&got, &merged.forward_embeds(&x, None, false).unwrap()) < 1e-4);
    assert!(common::max_abs_diff(&got, &unmerged) < 1e-4);
    assert!(
        common::max_abs_diff(&got, &base) > 1e-2,
        "the deltas should change the output"
    );
    assert_eq!(
        common::bits(&[&base]),
        common::bits(&[&q.forward_embeds(&x, None, false).unwrap()]),
        "attaching changed the base"
    );
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &q).unwrap();
    let tg = vec![Prompt::target_ids(&q, "a cat").unwrap()];
    let soft = a.forward(&common::uniform(&[1, 6], 3)).unwrap();
    let err = prompt
        .gen_loss_lora(&attached, None, &soft, &tg, true)
        .expect_err("trained through attached deltas");
    assert!(err.to_string().contains("attached LoRA"), "{err}");
}
