//! Stage 2 refines without memorising, on tiny random models: L_GEN on the labelled sample stops
//! after `gen_passes` passes over it, replayed unlabelled sentences keep refining the adaptor, and
//! a run with a pool resumes exactly.

mod common;

use candle_core::{Device, Tensor};
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig};
use inversed_mixup::method::classifier::Classifier;
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::llm::Llm;
use inversed_mixup::stages::warmup::{Warmup, WarmupConfig};

const DEV: Device = Device::Cpu;

struct Tiny {
    _dir: tempfile::TempDir,
    llm: Llm,
    enc: Encoder,
    texts: Vec<String>,
    pool: Vec<String>,
}

fn tiny() -> Tiny {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&d.path().join("llm"), 1);
    common::write_tiny_bert(&d.path().join("enc"), 2);
    Tiny {
        llm: Llm::load(&d.path().join("llm"), &DEV).unwrap(),
        enc: Encoder::load(&d.path().join("enc"), &DEV).unwrap(),
        texts: common::sentences(8, 2),
        pool: common::sentences(6, 7),
        _dir: d,
    }
}

fn embed(enc: &Encoder, t: &[String]) -> Tensor {
    enc.embed(&t.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap()
}

fn warmup<'a>(t: &'a Tiny, cfg: WarmupConfig, with_pool: bool) -> Warmup<'a> {
    let cls = Classifier::new(vec!["p".into(), "q".into()], t.enc.dim(), &DEV).unwrap();
    let a = AdaptorConfig {
        encoder: t.enc.name().into(),
        enc_dim: t.enc.dim(),
        llm: t.llm.name().into(),
        llm_dim: 32,
        k: 2,
        hidden: 16,
        template: "<soft>:".into(),
        lora: None,
        deep: None,
    };
    let y = vec![0, 1, 1, 0, 0, 1, 1, 0];
    let w = Warmup::new(
        &t.llm,
        Adaptor::new(a, 0, &DEV).unwrap(),
        cls,
        &t.texts,
        embed(&t.enc, &t.texts),
        y,
        cfg,
    )
    .unwrap();
    if with_pool {
        w.with_pool(&t.pool, &embed(&t.enc, &t.pool)).unwrap()
    } else {
        w
    }
}

fn adaptor_bits(w: &Warmup) -> Vec<u32> {
    w.adaptor
        .sorted_vars()
        .iter()
        .flat_map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
        })
        .collect()
}

fn cfg(gen_passes: Option<f64>, replay: usize) -> WarmupConfig {
    WarmupConfig {
        steps: 6,
        batch_size: 4,
        gen_passes,
        replay,
        ..Default::default()
    }
}

/// One pass over 8 sentences in batches of 4 is two steps: L_GEN is on for those only, and the
/// adaptor is then left bit for bit as it was, while the classifier goes on training.
#[test]
fn labelled_refinement_stops_after_its_passes() {
    let t = tiny();
    let mut w = warmup(&t, cfg(Some(1.0), 0), false);
    let logs: Vec<_> = (0..2).map(|_| w.train_step().unwrap()).collect();
    assert!(logs.iter().all(|l| l.gen > 0.0), "{logs:?}");
    let after_pass = adaptor_bits(&w);
    for _ in 2..6 {
        let l = w.train_step().unwrap();
        assert_eq!(l.gen, 0.0, "L_GEN after its passes at step {}", l.step);
        assert!(l.ce > 0.0);
    }
    assert_eq!(
        adaptor_bits(&w),
        after_pass,
        "the adaptor changed after its passes"
    );
    // Without a limit, every step refines.
    let mut all = warmup(&t, cfg(None, 0), false);
    let last = (0..6).map(|_| all.train_step().unwrap()).last().unwrap();
    assert!(last.gen > 0.0);
}

/// Replayed unlabelled sentences keep refining the adaptor after the labelled passes, and a run
/// with a pool stopped at a checkpoint and resumed equals the uninterrupted one.
#[test]
fn replayed_pool_keeps_refining_and_resumes_exactly() {
    let t = tiny();
    let mut full = warmup(&t, cfg(Some(1.0), 2), true);
    let want: Vec<(f64, f64)> = (0..6)
        .map(|_| {
            let before = adaptor_bits(&full);
            let s = full.train_step().unwrap();
            assert!(s.gen > 0.0, "no L_GEN at step {}", s.step);
            assert_ne!(
                adaptor_bits(&full),
                before,
                "adaptor idle at step {}",
                s.step
            );
            (s.ce, s.gen)
        })
        .collect();
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("w.ckpt");
    let mut first = warmup(&t, cfg(Some(1.0), 2), true);
    let mut got: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let s = first.train_step().unwrap();
            (s.ce, s.gen)
        })
        .collect();
    first.save_checkpoint(&ck).unwrap();
    let mut second = warmup(&t, cfg(Some(1.0), 2), true);
    second.load_checkpoint(&ck).unwrap();
    got.extend((0..3).map(|_| {
        let s = second.train_step().unwrap();
        (s.ce, s.gen)
    }));
    assert_eq!(got, want);
    assert_eq!(adaptor_bits(&second), adaptor_bits(&full));
    // A checkpoint with a pool does not resume a run without one.
    let mut plain = warmup(&t, cfg(Some(1.0), 0), false);
    assert!(plain.load_checkpoint(&ck).is_err());
}
