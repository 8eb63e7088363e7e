//! Mix alignment on tiny random models: resume equals an uninterrupted run, replay holds the
//! x -> x loss, the adaptor records its rounds, a mismatched LLM is refused.

mod common;

use candle_core::Device;
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig};
use inversed_mixup::nets::encoder::{embed_corpus, Encoder};
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::stages::align::{AlignConfig, Aligner};
use inversed_mixup::stages::mix_align::{MixAlignConfig, MixAligner, RoundLog, Selection};

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
    Tiny {
        enc: Encoder::load(&d.path().join("enc"), &DEV).unwrap(),
        llm: Llm::load(&d.path().join("llm"), &DEV).unwrap(),
        _dir: d,
        texts: common::sentences(48, 3),
    }
}

fn adaptor(t: &Tiny, seed: u64, llm_name: Option<&str>) -> Adaptor {
    let cfg = AdaptorConfig {
        encoder: t.enc.name().into(),
        enc_dim: t.enc.dim(),
        llm: llm_name.unwrap_or(t.llm.name()).into(),
        llm_dim: t.llm.config().hidden,
        k: 2,
        hidden: 32,
        template: "<soft>:".into(),
        lora: None,
        deep: None,
    };
    Adaptor::new(cfg, seed, &DEV).unwrap()
}

/// Settings small enough for tiny models; every non-copy candidate qualifies.
fn cfg() -> MixAlignConfig {
    MixAlignConfig {
        rounds: 2,
        pairs: 4,
        corrections: 2,
        samples: 1,
        select: Selection {
            min_cos: -1.0,
            max_gap: 1.0,
        },
        steps: 3,
        batch_size: 4,
        replay: 2,
        lr: 1e-2,
        warmup: 1,
        max_target_tokens: 64,
        max_new_tokens: 6,
        holdout: 8,
        check_pairs: 2,
        ..Default::default()
    }
}

fn aligner<'a>(t: &'a Tiny, a: Adaptor, c: MixAlignConfig) -> MixAligner<'a> {
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    MixAligner::new(&t.enc, &t.llm, a, t.texts.clone(), emb, c).unwrap()
}

/// Drives `tr` as `imix mix-align` does until it finishes or `stop(tr)` says to stop; returns
/// the losses of its steps.
fn drive(tr: &mut MixAligner, stop: &dyn Fn(&MixAligner) -> bool) -> Vec<f64> {
    let mut losses = Vec::new();
    if tr.needs_baseline() {
        tr.check_and_log().unwrap();
    }
    while !tr.finished() {
        if tr.needs_mining() {
            tr.mine(&|_, _| {}).unwrap();
        }
        if stop(tr) {
            return losses;
        }
        while tr.needs_training() {
            losses.push(tr.train_step().unwrap().loss);
            if stop(tr) {
                return losses;
            }
        }
        tr.check_and_log().unwrap();
    }
    losses
}

/// The rounds log without its timings.
fn untimed(log: &[RoundLog]) -> Vec<RoundLog> {
    log.iter()
        .map(|l| RoundLog {
            sentences_per_s: 0.0,
            step_seconds: 0.0,
            ..l.clone()
        })
        .collect()
}

/// Stopped after round 2's mining and one of its steps, checkpointed, and resumed into an adaptor
/// of another seed: the same losses, kept mixes, rounds log and weights, bit for bit.
#[test]
fn resumed_mix_alignment_equals_an_uninterrupted_run() {
    let t = tiny();
    let mut full = aligner(&t, adaptor(&t, 0, None), cfg());
    let curve = drive(&mut full, &|_| false);
    assert_eq!(curve.len(), 6);
    assert_eq!(full.log.len(), 3, "baseline and two rounds");
    assert!(
        !full.mined.is_empty(),
        "tiny decodes qualify under these settings"
    );

    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("m.ckpt");
    let mut first = aligner(&t, adaptor(&t, 0, None), cfg());
    let mut resumed = drive(&mut first, &|tr| tr.step == 4);
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    let mut second = aligner(&t, adaptor(&t, 7, None), cfg());
    second.load_checkpoint(&ck).unwrap();
    resumed.extend(drive(&mut second, &|_| false));
    assert_eq!(resumed, curve, "losses differ after resume");
    assert_eq!(second.mined, full.mined, "kept mixes differ after resume");
    assert_eq!(untimed(&second.log), untimed(&full.log));
    assert_eq!(
        common::adaptor_bits(&second.adaptor),
        common::adaptor_bits(&full.adaptor),
        "resumed weights differ"
    );

    // Stopped between mining and training: resume does not mine again.
    let mut third = aligner(&t, adaptor(&t, 0, None), cfg());
    let mut again = drive(&mut third, &|tr| tr.rounds_mined == 2 && tr.step == 3);
    third.save_checkpoint(&ck).unwrap();
    let mut fourth = aligner(&t, adaptor(&t, 7, None), cfg());
    fourth.load_checkpoint(&ck).unwrap();
    assert!(!fourth.needs_mining());
    again.extend(drive(&mut fourth, &|_| false));
    assert_eq!(again, curve);
    assert_eq!(untimed(&fourth.log), untimed(&full.log));
}

/// An adaptor trained by stage 1 on the tiny pool: mix alignment with half of every batch
/// replaying pool sentences keeps their x -> x loss from rising.
#[test]
fn replay_keeps_the_single_sentence_loss_from_rising() {
    let t = tiny();
    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let stage1 = AlignConfig {
        steps: 40,
        batch_size: 4,
        lr: 1e-2,
        warmup: 2,
        holdout: 8,
        eval_every: 0,
        max_target_tokens: 64,
        ..Default::default()
    };
    let mut al = Aligner::new(&t.llm, adaptor(&t, 0, None), &t.texts, emb, stage1).unwrap();
    for _ in 0..40 {
        al.train_step().unwrap();
    }
    let c = MixAlignConfig {
        rounds: 1,
        pairs: 16,
        steps: 20,
        lr: 3e-3,
        check_pairs: 0,
        ..cfg()
    };
    let mut tr = aligner(&t, al.adaptor, c);
    let rows = tr.train_rows().to_vec();
    let before = tr.replay_loss(&rows).unwrap();
    drive(&mut tr, &|_| false);
    let after = tr.replay_loss(&rows).unwrap();
    assert!(!tr.mined.is_empty());
    assert!(
        after <= before,
        "x -> x loss rose from {before:.4} to {after:.4} with replay"
    );
}

/// The written adaptor says how many rounds it has seen (counting those before it), and an
/// adaptor trained for another LLM is refused before any work.
#[test]
fn the_adaptor_records_its_rounds_and_another_llm_is_refused() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let c = MixAlignConfig {
        check_pairs: 0,
        ..cfg()
    };
    let mut tr = aligner(&t, adaptor(&t, 0, None), c.clone());
    drive(&mut tr, &|_| false);
    let p = dir.path().join("a.safetensors");
    tr.save_adaptor(&p, false).unwrap();
    let a = Adaptor::load(&p, &DEV).unwrap();
    assert_eq!(a.mix_rounds(), 2);
    let mut tr = aligner(
        &t,
        a,
        MixAlignConfig {
            rounds: 1,
            ..c.clone()
        },
    );
    drive(&mut tr, &|_| false);
    tr.save_adaptor(&p, false).unwrap();
    assert_eq!(Adaptor::load(&p, &DEV).unwrap().mix_rounds(), 3);

    let emb = embed_corpus(&t.enc, &t.texts, None, &|_, _| {}).unwrap();
    let other = adaptor(&t, 0, Some("another-llm.gguf"));
    let err = MixAligner::new(&t.enc, &t.llm, other, t.texts.clone(), emb, c)
        .err()
        .expect("an adaptor for another LLM must be refused")
        .to_string();
    assert!(err.contains("another-llm.gguf"), "{err}");
}
