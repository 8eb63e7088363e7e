//! Stage 2 with encoder fine-tuning on tiny random models: gradients reach the encoder and match
//! finite differences; frozen parts stay bit-identical.

mod common;

use candle_core::Device;
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig};
use inversed_mixup::method::classifier::{one_hot, targets_tensor, Classifier};
use inversed_mixup::method::prompt::Prompt;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::stages::warmup::{FineTune, Warmup, WarmupConfig};

const DEV: Device = Device::Cpu;

fn setup() -> (tempfile::TempDir, Llm) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&d.path().join("llm"), 1);
    common::write_tiny_bert(&d.path().join("enc"), 2);
    let llm = Llm::load(&d.path().join("llm"), &DEV).unwrap();
    (d, llm)
}

fn adaptor(enc: &Encoder, llm: &Llm) -> Adaptor {
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
    Adaptor::new(cfg, 0, &DEV).unwrap()
}

#[test]
fn encoder_gradient_of_ce_plus_gen_matches_finite_differences() {
    let (d, llm) = setup();
    let (enc, vm) = Encoder::load_trainable(&d.path().join("enc"), None, &DEV).unwrap();
    let a = adaptor(&enc, &llm);
    let cls = Classifier::new(vec!["x".into(), "y".into()], enc.dim(), &DEV).unwrap();
    cls.fit(
        &enc.embed(&["warm up", "the head"]).unwrap().detach(),
        &one_hot(&[0, 1], 2),
        5,
        0.1,
    )
    .unwrap();
    let prompt = Prompt::new("<soft>:", 2, &llm).unwrap();
    let texts = ["a good day", "bad weather"];
    let tg: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| Prompt::target_ids(&llm, t).unwrap())
        .collect();
    let y = targets_tensor(&one_hot(&[0, 1], 2), &DEV).unwrap();
    let loss = || {
        let h = enc.embed(&texts).unwrap();
        let (g, _) = prompt.gen_loss(&llm, &a.forward(&h).unwrap(), &tg).unwrap();
        (cls.loss(&h, &y).unwrap() + g).unwrap()
    };
    let grads = loss().backward().unwrap();
    let data = vm.data().lock().unwrap().clone();
    for name in [
        "encoder.layer.1.attention.self.query.weight",
        "encoder.layer.0.intermediate.dense.bias",
        "embeddings.LayerNorm.weight",
    ] {
        let var = &data[name];
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        common::check_var_grad(
            name,
            var,
            &g,
            &|| loss().to_scalar::<f32>().unwrap() as f64,
            0.02,
        );
    }
}

#[test]
fn top_layer_finetune_changes_only_the_top_layer_and_never_the_llm() {
    let (d, llm) = setup();
    let (enc, vm) = Encoder::load_trainable(&d.path().join("enc"), None, &DEV).unwrap();
    let snapshot = |prefix: &str| -> Vec<Vec<u32>> {
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().filter(|k| k.starts_with(prefix)).collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                data[*n]
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    let llm_bits = |l: &Llm| -> Vec<Vec<u32>> {
        l.weights()
            .iter()
            .map(|t| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    let (l0, l1, emb, llm0) = (
        snapshot("encoder.layer.0."),
        snapshot("encoder.layer.1."),
        snapshot("embeddings."),
        llm_bits(&llm),
    );
    let texts: Vec<String> = common::sentences(8, 1);
    let h = enc
        .embed(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap()
        .detach();
    let cls = Classifier::new(vec!["p".into(), "q".into()], enc.dim(), &DEV).unwrap();
    let cfg = WarmupConfig {
        steps: 4,
        batch_size: 4,
        finetune: Some(1),
        lr_encoder: 1e-2,
        ..Default::default()
    };
    let ft = FineTune::new(&enc, &vm, 1, &texts).unwrap();
    let mut w = Warmup::new(
        &llm,
        adaptor(&enc, &llm),
        cls,
        &texts,
        h,
        vec![0, 1, 0, 1, 0, 1, 0, 1],
        cfg,
    )
    .unwrap()
    .with_finetune(ft);
    for _ in 0..4 {
        w.train_step().unwrap();
    }
    assert_eq!(
        snapshot("encoder.layer.0."),
        l0,
        "layer 0 is below the fine-tuned top layer"
    );
    assert_eq!(snapshot("embeddings."), emb);
    assert_ne!(snapshot("encoder.layer.1."), l1, "the top layer must train");
    assert_eq!(llm_bits(&llm), llm0, "frozen LLM changed");
}

#[test]
fn warmup_resume_equals_an_uninterrupted_run() {
    let (d, llm) = setup();
    let enc = Encoder::load(&d.path().join("enc"), &DEV).unwrap();
    let texts: Vec<String> = common::sentences(8, 2);
    let h = enc
        .embed(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let y = vec![0, 1, 1, 0, 0, 1, 1, 0];
    let cfg = WarmupConfig {
        steps: 6,
        batch_size: 4,
        ..Default::default()
    };
    let new = |seed| {
        let cls = Classifier::new(vec!["p".into(), "q".into()], enc.dim(), &DEV).unwrap();
        let cfg_a = AdaptorConfig {
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
        Warmup::new(
            &llm,
            Adaptor::new(cfg_a, seed, &DEV).unwrap(),
            cls,
            &texts,
            h.clone(),
            y.clone(),
            cfg.clone(),
        )
        .unwrap()
    };
    let mut full = new(0);
    let want: Vec<(f64, f64)> = (0..6)
        .map(|_| {
            let s = full.train_step().unwrap();
            (s.ce, s.gen)
        })
        .collect();
    let ck = d.path().join("w.ckpt");
    let mut first = new(0);
    let mut got: Vec<(f64, f64)> = (0..2)
        .map(|_| {
            let s = first.train_step().unwrap();
            (s.ce, s.gen)
        })
        .collect();
    first.save_checkpoint(&ck).unwrap();
    let mut second = new(9);
    second.load_checkpoint(&ck).unwrap();
    got.extend((0..4).map(|_| {
        let s = second.train_step().unwrap();
        (s.ce, s.gen)
    }));
    assert_eq!(got, want);
}
