//! Parity of a converted judge encoder (experiments/judge/paraphrase_minilm.py) with the ONNX graph it
//! came from: `cargo run --release --example judge_parity -- DIR` compares our embeddings of the
//! sentences in DIR/parity.json with the ONNX runtime's, by cosine and largest difference.
use inversed_mixup::nets::encoder::Encoder;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: judge_parity DIR"));
    let p: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("parity.json")).expect("DIR/parity.json"),
    )
    .unwrap();
    let enc = Encoder::load(&dir, &candle_core::Device::Cpu).unwrap();
    for (s, want) in p["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .zip(p["embeddings"].as_array().unwrap())
    {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = enc
            .embed(&[s.as_str().unwrap()])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "cosine {:.6} max |diff| {:.2e}  {}",
            dot / (n(&got) * n(&want)),
            diff,
            s
        );
    }
}
