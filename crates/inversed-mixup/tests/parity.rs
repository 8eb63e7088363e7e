//! Parity with the PyTorch/transformers reference on the real default models.
//! Fixtures come from reference/make_fixtures.py (run once; never needed by CI).

mod common;

use candle_core::{Device, D};
use inversed_mixup::nets::encoder::Encoder;
use inversed_mixup::nets::fetch;
use inversed_mixup::nets::llm::Llm;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}

fn llm() -> Llm {
    let path = fetch::resolve(None, &fetch::LLM).expect("fetch default LLM");
    Llm::load(&path, &Device::Cpu).expect("load LLM")
}

/// Python: SentenceTransformer(dir).encode(sentences) and st.tokenizer(s)["input_ids"].
#[test]
fn encoder_matches_sentence_transformers() {
    let dir = fetch::resolve(None, &fetch::ENCODER).expect("fetch default encoder");
    let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
    let f = fixture("encoder.json");
    let sents: Vec<&str> = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for (s, ids) in sents.iter().zip(f["input_ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.tokenize(s).unwrap(), want, "token ids of {s:?}");
    }
    // The raw inference path (packed rows, used by `embed`) and the padded candle composition
    // both match the reference, and each other; the fixture's sentences differ in length.
    let got = enc.embed(&sents).unwrap().to_vec2::<f32>().unwrap();
    let ids: Vec<Vec<u32>> = sents.iter().map(|s| enc.tokenize(s).unwrap()).collect();
    let composed = enc
        .embed_ids_composed(&ids)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, want) in f["embeddings"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (path, got) in [("raw", &got[i]), ("composed", &composed[i])] {
            let c = cosine(got, &want);
            assert!(c >= 0.9999, "sentence {i}, {path} path: cosine {c}");
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "modules.json asks for L2 normalisation; {path} path norm {norm}"
            );
        }
        let d = got[i]
            .iter()
            .zip(&composed[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d < 1e-5,
            "sentence {i}: raw and composed paths differ by {d}"
        );
    }
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "the fixture should mix lengths (padding vs packing): {lens:?}"
    );
}

/// Python: AutoTokenizer.from_pretrained(d, gguf_file=f)(s, add_special_tokens=False)["input_ids"].
#[test]
fn llm_tokenizer_matches_transformers_gguf() {
    let m = llm();
    let f = fixture("tokenizer.json");
    for (t, ids) in f["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f["ids"].as_array().unwrap())
    {
        let t = t.as_str().unwrap();
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(m.tokenizer().encode(t).unwrap(), want, "ids of {t:?}");
    }
    assert_eq!(
        m.tokenizer()
            .decode(&m.tokenizer().encode(" Zürich 12 cafés").unwrap())
            .unwrap(),
        " Zürich 12 cafés"
    );
}

/// Python: AutoModelForCausalLM.from_pretrained(d, gguf_file=f)(ids).logits, probed at fixed ids.
#[test]
fn llm_logits_match_transformers_gguf() {
    let m = llm();
    let f = fixture("logits.json");
    let probe: Vec<usize> = f["probe_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for row in f["rows"].as_array().unwrap() {
        let ids: Vec<u32> = row["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            m.tokenizer()
                .encode(row["prompt"].as_str().unwrap())
                .unwrap(),
            ids
        );
        let logits = m.forward_ids(&ids).unwrap().squeeze(0).unwrap();
        let lse = logits
            .log_sum_exp(D::Minus1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let am = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        let l = logits.to_vec2::<f32>().unwrap();
        let want_am: Vec<u32> = row["argmax"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(am, want_am, "argmax per position");
        for (t, want) in row["logsumexp"].as_array().unwrap().iter().enumerate() {
            let w = want.as_f64().unwrap() as f32;
            assert!(
                (lse[t] - w).abs() < 2e-3,
                "logsumexp pos {t}: {} vs {w}",
                lse[t]
            );
        }
        for (t, want) in row["probe"].as_array().unwrap().iter().enumerate() {
            for (j, w) in want.as_array().unwrap().iter().enumerate() {
                let w = w.as_f64().unwrap() as f32;
                let g = l[t][probe[j]];
                assert!(
                    (g - w).abs() < 2e-3,
                    "logit pos {t} id {}: {g} vs {w}",
                    probe[j]
                );
            }
        }
    }
}

/// On the real LLM, the lean training path (blocks as single nodes, fused causal attention, loss gradient
/// formed forward) gives the plain composition's L_GEN and adaptor gradients.
#[test]
fn lean_training_path_matches_the_plain_path_on_the_real_llm() {
    use inversed_mixup::method::adaptor::{Adaptor, AdaptorConfig, DEFAULT_TEMPLATE};
    use inversed_mixup::method::prompt::Prompt;
    let mut llm = llm();
    let cfg = AdaptorConfig {
        encoder: "e".into(),
        enc_dim: 16,
        llm: llm.name().into(),
        llm_dim: llm.config().hidden,
        k: 4,
        hidden: 32,
        template: DEFAULT_TEMPLATE.into(),
        lora: None,
        deep: None,
    };
    let a = Adaptor::new(cfg, 7, &candle_core::Device::Cpu).unwrap();
    let prompt = Prompt::new(DEFAULT_TEMPLATE, 4, &llm).unwrap();
    let h = candle_core::Tensor::from_vec(
        (0..32)
            .map(|i| (i as f32 * 0.37).sin() * 0.25)
            .collect::<Vec<f32>>(),
        (2, 16),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    common::assert_lean_equals_plain(
        &mut llm,
        &prompt,
        &a,
        &h,
        &[
            "The cat sat on the mat.",
            "A short sentence about rivers and hills.",
        ],
        1e-4,
        1e-3,
    );
}

/// Whole rows: all 49,152 logits at the last position of each prompt of logits.json equal those
/// of transformers (reference/make_logit_rows.py), not only the probed ids.
#[test]
fn llm_full_logit_rows_match_transformers_gguf() {
    let m = llm();
    let path = format!(
        "{}/tests/fixtures/logit_rows.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let want = candle_core::safetensors::load(&path, &Device::Cpu).unwrap()["last_position"]
        .to_vec2::<f32>()
        .unwrap();
    let rows = fixture("logits.json")["rows"].as_array().unwrap().clone();
    assert_eq!(want.len(), rows.len());
    for (row, want) in rows.iter().zip(&want) {
        let ids: Vec<u32> = row["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let logits = m.forward_ids(&ids).unwrap().squeeze(0).unwrap();
        let got = logits.get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), 49152);
        let (worst, at) = got
            .iter()
            .zip(want)
            .enumerate()
            .map(|(j, (g, w))| ((g - w).abs(), j))
            .fold((0f32, 0), |m, x| if x.0 > m.0 { x } else { m });
        assert!(
            worst < 2e-3,
            "{:?}: logit of id {at} differs by {worst} ({} vs {})",
            row["prompt"],
            got[at],
            want[at]
        );
    }
}
