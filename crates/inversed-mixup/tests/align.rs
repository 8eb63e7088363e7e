//! Stage-1 training on tiny random models: frozen stays frozen, loss falls, resume is exact.

mod common;

use candle_core::Device;
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig};
use inversed_mixup::nets::encoder::embed_corpus;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::stages::align::{AlignConfig, Aligner};

const DEV: Device = Device::Cpu;

struct Tiny {
    _dir: tempfile::TempDir,
    enc: Encoder,
    llm: Llm,
    texts: Vec<String>,
}

fn tiny() -> Tiny {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&d.path().join("llm"), 1);
    common::write_tiny_bert(&d.path().join("enc"), 2);
    let enc = Encoder::load(&d.path().join("enc"), &DEV).unwrap();
    let llm = Llm::load(&d.path().join("llm"), &DEV).unwrap();
    Tiny {
        _dir: d,
        enc,
        llm,
        texts: common::sentences(48, 3),
    }
}

fn adaptor(t: &Tiny, seed: u64) -> Adaptor {
    let cfg = AdaptorConfig {
        encoder: t.enc.name().into(),
        enc_dim: t.enc.dim(),
        llm: t.llm.name().into(),
        llm_dim: t.llm.config().hidden,
        k: 4,
        hidden: 32,
        template: "<soft>:".into(),
        lora: None,
        deep: None,
    };
    Adaptor::new(cfg, seed, &DEV).unwrap()
}

fn cfg(steps: usize) -> AlignConfig {
    AlignConfig {
        steps,
        batch_size: 4,
        lr: 1e-2,
        warmup: 2,
        holdout: 8,
        eval_every: 0,
        max_target_tokens: 64,
        ..Default::default()
    }
}

#[test]
fn training_leaves_llm_and_encoder_bit_identical_and_lowers_loss() {
    let t = tiny();
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let llm_before = common::bits(&t.llm.weights());
    let emb_before = emb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let a = adaptor(&t, 0);
    let a_before = common::adaptor_bits(&a);
    let mut tr = Aligner::new(&t.llm, a, &t.texts, emb, cfg(100)).unwrap();
    let first = tr.eval_loss().unwrap();
    let curve: Vec<f64> = (0..100).map(|_| tr.train_step().unwrap().loss).collect();
    let last = tr.eval_loss().unwrap();
    let (early, late) = (
        curve[..10].iter().sum::<f64>() / 10.0,
        curve[90..].iter().sum::<f64>() / 10.0,
    );
    assert!(
        late < early - 0.3,
        "training loss should fall clearly: {early} -> {late}"
    );
    assert!(last < first, "held-out loss should fall: {first} -> {last}");
    assert_eq!(
        common::bits(&t.llm.weights()),
        llm_before,
        "frozen LLM weights changed"
    );
    let emb_after = embed_corpus(&t.enc, &t.texts, None, &|_, _| {})
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(
        emb_after.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        emb_before.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "encoder output changed"
    );
    let a_after = common::adaptor_bits(&tr.adaptor);
    assert_ne!(a_after, a_before, "the adaptor did not train");
}

#[test]
fn resume_continues_exactly_like_an_uninterrupted_run() {
    let t = tiny();
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let mut full = Aligner::new(&t.llm, adaptor(&t, 5), &t.texts, emb.clone(), cfg(8)).unwrap();
    let curve: Vec<f64> = (0..8).map(|_| full.train_step().unwrap().loss).collect();

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("a.ckpt");
    let mut first = Aligner::new(&t.llm, adaptor(&t, 5), &t.texts, emb.clone(), cfg(8)).unwrap();
    let mut resumed_curve: Vec<f64> = (0..3).map(|_| first.train_step().unwrap().loss).collect();
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    // A fresh process would build a fresh adaptor (different init) and then load the checkpoint.
    let mut second = Aligner::new(&t.llm, adaptor(&t, 77), &t.texts, emb, cfg(8)).unwrap();
    second.load_checkpoint(&ck).unwrap();
    assert_eq!(second.step, 3);
    resumed_curve.extend((0..5).map(|_| second.train_step().unwrap().loss));
    assert_eq!(
        resumed_curve, curve,
        "resumed loss curve must equal the uninterrupted one bit for bit"
    );
    let p = |a: &Aligner| common::adaptor_bits(&a.adaptor);
    assert_eq!(p(&second), p(&full));
}

#[test]
fn checkpoint_with_other_settings_is_refused() {
    let t = tiny();
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("a.ckpt");
    let mut a = Aligner::new(&t.llm, adaptor(&t, 5), &t.texts, emb.clone(), cfg(8)).unwrap();
    a.train_step().unwrap();
    a.save_checkpoint(&ck).unwrap();
    let mut other = cfg(8);
    other.lr = 5e-3;
    let mut b = Aligner::new(&t.llm, adaptor(&t, 5), &t.texts, emb, other).unwrap();
    let e = b.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("a.ckpt") && e.contains("settings differ"), "{e}");
}

#[test]
fn same_seed_same_batches_different_seed_different_batches() {
    let t = tiny();
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let a = Aligner::new(&t.llm, adaptor(&t, 0), &t.texts, emb.clone(), cfg(8)).unwrap();
    let b = Aligner::new(&t.llm, adaptor(&t, 0), &t.texts, emb.clone(), cfg(8)).unwrap();
    let mut c2 = cfg(8);
    c2.seed = 1;
    let c = Aligner::new(&t.llm, adaptor(&t, 0), &t.texts, emb, c2).unwrap();
    let sched = |x: &Aligner| (0..20).map(|s| x.batch_at(s)).collect::<Vec<_>>();
    assert_eq!(sched(&a), sched(&b));
    assert_ne!(sched(&a), sched(&c));
    // Every batch is full and within the training slice (the held-out tail never appears).
    for b in sched(&a) {
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|&i| i < t.texts.len() - 8));
    }
}
