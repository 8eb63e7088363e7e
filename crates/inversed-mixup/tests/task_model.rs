//! The fine-tuned task model on a tiny random encoder: the soft-label loss reaches every trained
//! encoder weight and matches finite differences, frozen layers stay bit-identical, the kept epoch
//! is the best on the dev sample, the dev sample never overlaps the training sample, and the same
//! seed gives the same model.

mod common;

use candle_core::{Device, Var};
use inversed_mixup::data::labelled::{dev_sample, few_shot, read_labelled};
use inversed_mixup::method::classifier::{one_hot, targets_tensor, Classifier};
use inversed_mixup::method::task_model::{FinetuneConfig, TaskModel};
use inversed_mixup::nets::encoder::Encoder;

const DEV: Device = Device::Cpu;

fn encoder() -> (tempfile::TempDir, Encoder, candle_nn::VarMap) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_bert(&d.path().join("enc"), 2);
    let (e, vm) = Encoder::load_trainable(&d.path().join("enc"), None, &DEV).unwrap();
    (d, e, vm)
}

fn data() -> (Vec<String>, Vec<usize>) {
    let texts = common::sentences(24, 5);
    // A learnable rule: the label is whether the sentence mentions a cat.
    let y = texts
        .iter()
        .map(|t| usize::from(t.contains("cat")))
        .collect();
    (texts, y)
}

fn bits(vars: &[(String, Var)]) -> Vec<Vec<u32>> {
    vars.iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn soft_label_loss_reaches_every_trained_weight_and_matches_finite_differences() {
    let (_d, enc, vm) = encoder();
    let head = Classifier::new(vec!["no".into(), "yes".into()], enc.dim(), &DEV).unwrap();
    head.fit(
        &enc.embed(&["warm up", "the head"]).unwrap().detach(),
        &one_hot(&[0, 1], 2),
        5,
        0.1,
    )
    .unwrap();
    let texts = ["a good day", "the cat sat", "bad weather"];
    // Soft labels, as augmented rows carry them.
    let y = targets_tensor(&[vec![0.7, 0.3], vec![0.2, 0.8], vec![1.0, 0.0]], &DEV).unwrap();
    let loss = || head.loss(&enc.embed(&texts).unwrap(), &y).unwrap();
    let grads = loss().backward().unwrap();
    let (all, trained) = enc.select_vars(&vm, 0).unwrap();
    assert_eq!(all.len(), trained.len());
    for (name, var) in &trained {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached encoder weight {name}"));
        assert!(
            g.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
                || name.contains("token_type"),
            "{name}: zero gradient"
        );
    }
    let data = vm.data().lock().unwrap().clone();
    for name in [
        "encoder.layer.1.output.dense.weight",
        "encoder.layer.0.attention.self.key.weight",
        "embeddings.word_embeddings.weight",
    ] {
        let var = &data[name];
        let g = grads
            .get(var.as_tensor())
            .unwrap()
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
fn top_layer_finetune_keeps_lower_layers_and_keeps_the_best_dev_epoch() {
    let (_d, enc, vm) = encoder();
    let (texts, y) = data();
    let (train_t, dev_t) = texts.split_at(16);
    let (train_y, dev_y) = y.split_at(16);
    let head = Classifier::new(vec!["no".into(), "yes".into()], enc.dim(), &DEV).unwrap();
    let (all, trained) = enc.select_vars(&vm, 1).unwrap();
    let frozen: Vec<(String, Var)> = all
        .iter()
        .filter(|(n, _)| !trained.iter().any(|(t, _)| t == n))
        .cloned()
        .collect();
    assert!(!frozen.is_empty() && frozen.iter().any(|(n, _)| n.starts_with("embeddings")));
    let (frozen_before, trained_before) = (bits(&frozen), bits(&trained));
    let cfg = FinetuneConfig {
        epochs: 6,
        batch_size: 4,
        lr_encoder: 1e-3,
        lr_head: 1e-2,
        top_layers: 1,
        seed: 3,
        ..Default::default()
    };
    let seen = std::cell::RefCell::new(Vec::new());
    let m = TaskModel {
        encoder: &enc,
        varmap: &vm,
        head: &head,
    };
    let r = m
        .finetune(
            train_t,
            &one_hot(train_y, 2),
            Some((dev_t, dev_y)),
            &cfg,
            &|l| seen.borrow_mut().push(l.dev_accuracy.unwrap()),
        )
        .unwrap();
    assert_eq!(bits(&frozen), frozen_before, "frozen layers changed");
    assert_ne!(
        bits(&trained),
        trained_before,
        "the top layer did not train"
    );
    let accs = seen.into_inner();
    let best = accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(accs[r.kept_epoch - 1], best);
    assert_eq!(
        accs.iter().position(|&a| a == best).unwrap() + 1,
        r.kept_epoch,
        "the first best epoch is kept"
    );
    // The restored weights are those of the kept epoch: the dev accuracy is reproduced.
    assert_eq!(m.accuracy(dev_t, dev_y).unwrap(), best);
}

#[test]
fn same_seed_same_model() {
    let (texts, y) = data();
    let run = |seed| {
        let (_d, enc, vm) = encoder();
        let head = Classifier::new(vec!["no".into(), "yes".into()], enc.dim(), &DEV).unwrap();
        let cfg = FinetuneConfig {
            epochs: 2,
            batch_size: 5,
            lr_encoder: 1e-3,
            lr_head: 1e-2,
            seed,
            ..Default::default()
        };
        TaskModel {
            encoder: &enc,
            varmap: &vm,
            head: &head,
        }
        .finetune(&texts, &one_hot(&y, 2), None, &cfg, &|_| {})
        .unwrap();
        bits(&enc.select_vars(&vm, 0).unwrap().0)
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn dev_sample_is_drawn_outside_the_training_sample() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("train.tsv");
    let mut body = String::from("label\ttext\n");
    for i in 0..40 {
        body.push_str(&format!(
            "{}\tsentence number {i}\n",
            if i % 2 == 0 { "a" } else { "b" }
        ));
    }
    std::fs::write(&p, body).unwrap();
    let all = read_labelled(&[p], "text", "label", None).unwrap();
    let train = few_shot(&all, 5, 7);
    let dev = dev_sample(&all, &train, 5, 7);
    assert_eq!((train.rows.len(), dev.rows.len()), (10, 10));
    for r in &dev.rows {
        assert!(
            !train.rows.iter().any(|t| t.line == r.line),
            "dev row {} is also a training row",
            r.line
        );
    }
    assert_eq!(dev.y.iter().filter(|&&c| c == 0).count(), 5);
    assert_eq!(
        dev_sample(&all, &train, 5, 7).rows,
        dev.rows,
        "same seed, same dev sample"
    );
    // When the pool is exhausted, the dev sample shrinks instead of reusing training rows.
    let big = few_shot(&all, 18, 1);
    assert_eq!(dev_sample(&all, &big, 5, 1).rows.len(), 4);
}

/// Predictions of a fine-tuned encoder run through a frozen snapshot on the fused inference path:
/// its embeddings equal the differentiable composition's, and it keeps the weights it was taken
/// with while training goes on.
#[test]
fn snapshot_embeds_like_the_trainable_encoder_and_stays_fixed() {
    let (texts, y) = data();
    let (_d, enc, vm) = encoder();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let snap = enc.snapshot().unwrap();
    assert!(!snap.grad);
    let diff = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let before = enc.embed(&refs).unwrap();
    assert!(diff(&before, &snap.embed(&refs).unwrap()) < 1e-5);
    let head = Classifier::new(vec!["no".into(), "yes".into()], enc.dim(), &DEV).unwrap();
    let cfg = FinetuneConfig {
        epochs: 2,
        batch_size: 5,
        lr_encoder: 1e-2,
        lr_head: 1e-2,
        ..Default::default()
    };
    let model = TaskModel {
        encoder: &enc,
        varmap: &vm,
        head: &head,
    };
    model
        .finetune(&texts, &one_hot(&y, 2), None, &cfg, &|_| {})
        .unwrap();
    let after = enc.embed(&refs).unwrap();
    assert!(diff(&before, &after) > 1e-3, "training moved the encoder");
    assert!(
        diff(&before, &snap.embed(&refs).unwrap()) < 1e-5,
        "the snapshot kept its weights"
    );
    assert!(diff(&after, &enc.snapshot().unwrap().embed(&refs).unwrap()) < 1e-5);
    // predict() goes through a snapshot: the head applied to the composition's embeddings agrees.
    let composed: Vec<usize> = head
        .probs(&after.detach())
        .unwrap()
        .iter()
        .map(|p| inversed_mixup::eval::classes::argmax(p))
        .collect();
    assert_eq!(model.predict(&texts).unwrap(), composed);
    // Over several batches (predict groups rows by length), predictions come back in input order.
    let many: Vec<String> = texts
        .iter()
        .rev()
        .chain(&texts)
        .chain(texts.iter().rev())
        .cloned()
        .collect();
    let want: Vec<usize> = composed
        .iter()
        .rev()
        .chain(&composed)
        .chain(composed.iter().rev())
        .copied()
        .collect();
    assert_eq!(model.predict(&many).unwrap(), want);
}
