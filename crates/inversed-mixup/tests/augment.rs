//! Stage 3 on tiny random models: mitigation behaviour, soft labels, determinism.

mod common;

use candle_core::Device;
use inversed_mixup::data::labelled::read_labelled;
use inversed_mixup::method::augment::{augment, AugmentOptions};
use inversed_mixup::method::classifier::Classifier;
use inversed_mixup::method::intrusion::Mitigation;
use inversed_mixup::method::invert::Inverter;
use inversed_mixup::method::mixup::{plan, LambdaSpec, Pairing};
use inversed_mixup::nets::llm::{Decode, GenerateOptions};

const DEV: Device = Device::Cpu;

#[test]
fn keep_drop_relabel_on_a_classifier_that_always_contradicts() {
    let d = tempfile::tempdir().unwrap();
    let (enc, llm, adaptor) = common::tiny_inverter_parts(d.path(), 0);
    let tsv = d.path().join("t.tsv");
    std::fs::write(
        &tsv,
        "label\ttext\na\tthe cat sat\na\ta dog ran\nb\tbirds sing\nb\tfish swim\nc\tnothing here\n",
    )
    .unwrap();
    let data = read_labelled(&[tsv], "text", "label", None).unwrap();
    // Hand-made task model: whatever the sentence, it is confidently class "c".
    let cls = Classifier::new(data.labels.clone(), enc.dim(), &DEV).unwrap();
    let all = enc.embed(&["x", "y z", "hello", "a b c"]).unwrap();
    cls.fit(&all, &vec![vec![0.0, 0.0, 1.0]; 4], 200, 0.1)
        .unwrap();
    let sources: Vec<usize> = (0..4).collect(); // mix only the a/b rows
    let y: Vec<usize> = sources.iter().map(|&i| data.y[i]).collect();
    let mixes = plan(
        &y,
        Pairing::CrossClass,
        1,
        &LambdaSpec::Grid(vec![0.25, 0.75]),
        0,
    )
    .unwrap();
    let inv = Inverter::new(&enc, &llm, &adaptor).unwrap();
    let run = |m: Mitigation, decode: Decode, seed: u64| {
        let opt = AugmentOptions {
            gen: GenerateOptions {
                decode,
                max_new_tokens: 5,
                seed,
                ..Default::default()
            },
            threshold: 0.6,
            mitigation: m,
            batch_size: 3,
            renormalize: true,
            ..Default::default()
        };
        augment(&inv, &cls, &data, &mixes, &opt, &|_, _| {}).unwrap()
    };
    let (kept, st) = run(Mitigation::Keep, Decode::Greedy, 0);
    let usable = st.generated - st.empty;
    assert!(usable > 0);
    assert_eq!(
        st.intruding, usable,
        "every usable sample is predicted as class c, outside its sources"
    );
    assert!(kept.iter().all(|r| r.intrusion
        && r.soft_label == r.mix_label
        && r.intrusion_reason.contains("outside")));
    for r in &kept {
        assert!((r.soft_label.values().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((r.soft_label[&r.source_a.label] - r.lambda).abs() < 1e-9);
        assert!(r.predicted["c"] > 0.6);
    }
    let (dropped, sd) = run(Mitigation::Drop, Decode::Greedy, 0);
    assert!(dropped.is_empty());
    assert_eq!(sd.dropped, usable);
    let (relab, sr) = run(Mitigation::Relabel, Decode::Greedy, 0);
    assert_eq!(sr.relabelled, usable);
    for r in &relab {
        assert!(
            r.soft_label["c"] > 0.3,
            "relabel moves mass towards the prediction"
        );
        assert!((r.soft_label.values().sum::<f64>() - 1.0).abs() < 1e-6);
    }
    // Same seed, same output; another seed, other samples.
    let s1 = run(Mitigation::Keep, Decode::TopP(0.99), 1).0;
    assert_eq!(s1, run(Mitigation::Keep, Decode::TopP(0.99), 1).0);
    assert_ne!(
        s1.iter().map(|r| &r.text).collect::<Vec<_>>(),
        run(Mitigation::Keep, Decode::TopP(0.99), 2)
            .0
            .iter()
            .map(|r| &r.text)
            .collect::<Vec<_>>()
    );
}
