//! LoRA deltas on the frozen LLM: gradients through the written-out block backward equal the
//! plain composition and finite differences; base weights stay bit-identical; resume is exact;
//! merged generation weights equal the unmerged forward; adaptor files keep and check the layout.

mod common;

use candle_core::{Device, Tensor};
use inversed_mixup::method::adaptor::{Adaptor, DEFAULT_TEMPLATE};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::llm::lora::Target;

const DEV: Device = Device::Cpu;

use common::{lora_adaptor as adaptor, perturb_lora as perturb};

#[test]
fn lora_gradients_match_the_plain_path_and_finite_differences() {
    let (_d, mut llm) = common::tiny_llm();
    // Every target at once, and subsets that leave gaps in the stacked Q/K/V and gate/up slots.
    for targets in [
        Target::ALL.to_vec(),
        vec![Target::K, Target::Up],
        vec![Target::Q, Target::V, Target::O, Target::Down],
    ] {
        let a = adaptor(&llm, 6, &targets, 3);
        perturb(&a, 4);
        let prompt = Prompt::new(DEFAULT_TEMPLATE, 2, &llm).unwrap();
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
                .gen_loss_lora(&llm, a.lora(), &a.forward(&h2).unwrap(), &tg, true)
                .unwrap()
                .0
        };
        let g = loss().backward().unwrap();
        for (name, var) in a
            .sorted_vars()
            .into_iter()
            .filter(|(n, _)| n.starts_with("lora"))
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
                "{name} ({targets:?}): most LoRA entries got no gradient"
            );
            // One entry in 4 (drawn at random): the full check took 20 s, three times per test run.
            common::check_var_grad_every(
                &format!("{name} {targets:?}"),
                &var,
                &gv,
                &|| loss().to_scalar::<f32>().unwrap() as f64,
                0.02,
                4,
            );
        }
    }
}

#[test]
fn merged_weights_equal_the_unmerged_forward_and_leave_the_base_untouched() {
    let (_d, llm) = common::tiny_llm();
    let a = adaptor(&llm, 6, &Target::ALL, 5);
    perturb(&a, 6);
    let before: Vec<Vec<f32>> = llm
        .weights()
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let merged = llm.with_lora(a.lora().unwrap()).unwrap();
    let x = common::uniform(&[2, 5, llm.config().hidden], 7);
    let unmerged = llm.forward_embeds_lora(&x, None, false, a.lora()).unwrap();
    let m = merged.forward_embeds(&x, None, false).unwrap();
    let base = llm.forward_embeds(&x, None, false).unwrap();
    let diff = common::max_abs_diff;
    assert!(
        diff(&m, &unmerged) < 1e-4,
        "merged and unmerged LoRA forwards differ by {}",
        diff(&m, &unmerged)
    );
    assert!(
        diff(&base, &unmerged) > 1e-2,
        "the deltas should change the output"
    );
    let after: Vec<Vec<f32>> = llm
        .weights()
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(before, after, "merging changed the base weights");
}

#[test]
fn training_with_lora_keeps_base_weights_bit_identical_and_resumes_exactly() {
    let lora_bits = |a: &Adaptor| {
        common::bits(
            &a.lora()
                .unwrap()
                .named_vars()
                .iter()
                .map(|(_, v)| v.as_tensor())
                .collect::<Vec<_>>(),
        )
    };
    common::assert_stage1_frozen_and_resumes_exactly(
        "LoRA on",
        &|llm, dim, seed| adaptor(llm, dim, &Target::ALL, seed),
        &|before, after| {
            assert_ne!(
                lora_bits(after),
                lora_bits(before),
                "the LoRA deltas did not train"
            );
        },
    );
}

#[test]
fn adaptor_file_keeps_the_lora_layout_and_refuses_a_mismatched_llm() {
    let (_d, llm) = common::tiny_llm();
    let a = adaptor(&llm, 6, &[Target::Q, Target::Down], 1);
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
    assert!(e.contains("a.safetensors") && e.contains("LoRA"), "{e}");
    // A file whose LoRA tensors do not match its header is refused when loading.
    let mut cfg = a.config().clone();
    cfg.lora.as_mut().unwrap().rank = 3;
    let c = Adaptor::new(cfg, 0, &DEV).unwrap();
    let t: std::collections::HashMap<String, Tensor> = a
        .sorted_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let e = c.set_weights(&t).unwrap_err().to_string();
    assert!(e.contains("lora.000") && e.contains("shape"), "{e}");
    assert!(Target::parse_list("q,kk").is_err());
    assert_eq!(Target::parse_list("all").unwrap(), Target::ALL.to_vec());
}

#[test]
fn merging_in_place_decodes_as_the_merged_copy_and_refuses_other_deltas() {
    use inversed_mixup::method::invert::Inverter;
    use inversed_mixup::nets::llm::GenerateOptions;
    let d = tempfile::tempdir().unwrap();
    let (enc, mut llm, _) = common::tiny_inverter_parts(d.path(), 0);
    let a = adaptor(&llm, enc.dim(), &Target::ALL, 5);
    perturb(&a, 6);
    let other = adaptor(&llm, enc.dim(), &Target::ALL, 9);
    perturb(&other, 10);
    let h = enc.embed(&["the cat sat", "birds sing here"]).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let x = common::uniform(&[2, 5, llm.config().hidden], 7);
    let copy = llm.with_lora(a.lora().unwrap()).unwrap();
    let want = common::bits(&[&copy.forward_embeds(&x, None, false).unwrap()]);
    drop(copy);
    let from_copy = Inverter::new(&enc, &llm, &a)
        .unwrap()
        .decode(&h, &opts)
        .unwrap();

    llm.merge_lora(a.lora().unwrap()).unwrap();
    let got = common::bits(&[&llm.forward_embeds(&x, None, false).unwrap()]);
    assert_eq!(
        want, got,
        "merging in place and merging a copy give other weights"
    );
    let in_place = Inverter::new(&enc, &llm, &a)
        .unwrap()
        .decode(&h, &opts)
        .unwrap();
    assert_eq!(from_copy, in_place);

    let err = Inverter::new(&enc, &llm, &other)
        .err()
        .expect("other deltas decoded");
    assert!(err.to_string().contains("another adaptor"), "{err}");
    let err = llm.merge_lora(a.lora().unwrap()).expect_err("merged twice");
    assert!(err.to_string().contains("already carries"), "{err}");
}
