//! Wrong, corrupt or mismatched model and adaptor files give clear errors naming the file.

mod common;

use candle_core::Device;
use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::llm::{Llm, LlmConfig};

const DEV: Device = Device::Cpu;

fn cfg() -> AdaptorConfig {
    AdaptorConfig {
        encoder: "enc".into(),
        enc_dim: 16,
        llm: "llm".into(),
        llm_dim: 32,
        k: 2,
        hidden: 8,
        template: DEFAULT_TEMPLATE.into(),
        lora: None,
        deep: None,
    }
}

#[test]
fn adaptor_roundtrip_keeps_weights_and_config() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    let a = Adaptor::new(cfg(), 1, &DEV).unwrap();
    a.save(&p, false).unwrap();
    let b = Adaptor::load(&p, &DEV).unwrap();
    assert_eq!(b.config(), a.config());
    for ((n1, v1), (_, v2)) in a.sorted_vars().iter().zip(b.sorted_vars()) {
        assert_eq!(
            v1.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            v2.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            "{n1}"
        );
    }
    // No temp file is left behind by the atomic write.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn mismatched_adaptor_is_refused() {
    let p = std::path::Path::new("a.safetensors");
    let a = Adaptor::new(cfg(), 1, &DEV).unwrap();
    let llm = LlmConfig {
        hidden: 32,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        ffn: 64,
        vocab: 100,
        rope_theta: 1e4,
        rms_eps: 1e-5,
        max_pos: 64,
    };
    assert!(a.check_models(p, "enc", 16, "llm", &llm).is_ok());
    let e = a
        .check_models(p, "enc", 16, "other-llm", &llm)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.safetensors")
            && e.contains("trained for LLM \"llm\"")
            && e.contains("other-llm"),
        "{e}"
    );
    let e = a
        .check_models(p, "enc", 384, "llm", &llm)
        .unwrap_err()
        .to_string();
    assert!(e.contains("encoder") && e.contains("384"), "{e}");
}

#[test]
fn corrupt_or_foreign_adaptor_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.safetensors");
    Adaptor::new(cfg(), 1, &DEV)
        .unwrap()
        .save(&p, true)
        .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Adaptor::load(&cut, &DEV).err().unwrap().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    let junk = d.path().join("junk.safetensors");
    std::fs::write(&junk, b"this is not a safetensors file at all").unwrap();
    let e = Adaptor::load(&junk, &DEV).err().unwrap().to_string();
    assert!(
        e.contains("junk.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    // A valid safetensors file without our header (e.g. a model file) is not an adaptor.
    let foreign = d.path().join("foreign.safetensors");
    let t = std::collections::HashMap::from([(
        "x".to_string(),
        candle_core::Tensor::zeros(3, candle_core::DType::F32, &DEV).unwrap(),
    )]);
    candle_core::safetensors::save(&t, &foreign).unwrap();
    let e = Adaptor::load(&foreign, &DEV).err().unwrap().to_string();
    assert!(
        e.contains("foreign.safetensors") && e.contains("not written by this tool"),
        "{e}"
    );
    // A training checkpoint (its header says so) passed where an adaptor goes.
    let ckpt = d.path().join("a.safetensors.ckpt");
    let meta = serde_json::json!({ "kind": "align-checkpoint", "adaptor": cfg(), "step": 3 });
    inversed_mixup::data::checkpoint::save(&ckpt, &t, &meta).unwrap();
    let e = Adaptor::load(&ckpt, &DEV).err().unwrap().to_string();
    assert!(
        e.contains("a.safetensors.ckpt")
            && e.contains("a training checkpoint (align-checkpoint), not an adaptor"),
        "{e}"
    );
}

#[test]
fn wrong_model_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gguf = d.path().join("fake.gguf");
    std::fs::write(&gguf, b"GGUF but not really").unwrap();
    let e = Llm::load(&gguf, &DEV).err().unwrap().to_string();
    assert!(
        e.contains("fake.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
    let missing = d.path().join("nothing.gguf");
    let e = Llm::load(&missing, &DEV).err().unwrap().to_string();
    assert!(e.contains("nothing.gguf"), "{e}");
    let empty_dir = d.path().join("enc");
    std::fs::create_dir(&empty_dir).unwrap();
    let e = Encoder::load(&empty_dir, &DEV).err().unwrap().to_string();
    assert!(e.contains("enc") && e.contains("model.safetensors"), "{e}");
    // A Llama directory handed over as the encoder.
    let llm_dir = d.path().join("llama");
    common::write_tiny_llama(&llm_dir, 1);
    let e = Encoder::load(&llm_dir, &DEV).err().unwrap().to_string();
    assert!(e.contains("llama"), "{e}");
    // An encoder directory handed over as the LLM.
    let enc_dir = d.path().join("bert");
    common::write_tiny_bert(&enc_dir, 1);
    let e = Llm::load(&enc_dir, &DEV).err().unwrap().to_string();
    assert!(e.contains("bert"), "{e}");
}
