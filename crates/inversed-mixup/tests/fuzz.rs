//! Property tests: random bytes and random specs never make a reader or parser panic; each is
//! either read or refused with an error (bounded case counts, well under a minute).

use candle_core::Device;
use inversed_mixup::data::checkpoint;
use inversed_mixup::data::corpus::{read_files, ReadOptions};
use inversed_mixup::method::adaptor::Adaptor;
use inversed_mixup::method::augment::read_augmented;
use inversed_mixup::method::mixup::LambdaSpec;
use inversed_mixup::nets::llm::lora::Target;
use inversed_mixup::nets::llm::Decode;
use proptest::prelude::*;

/// Bytes that look like the inputs: mostly text with the separators, quotes and braces that matter.
fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => prop::sample::select(b"abc xyz\t,\n\"{}:[]0.5label text soft_label\r".to_vec()), 1 => any::<u8>()],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn readers_never_panic(bytes in input_bytes()) {
        let d = tempfile::tempdir().unwrap();
        for ext in ["txt", "tsv", "csv", "jsonl"] {
            let p = d.path().join(format!("in.{ext}"));
            std::fs::write(&p, &bytes).unwrap();
            for opt in [ReadOptions::default(), ReadOptions { label_column: Some("label".into()), ..Default::default() }, ReadOptions { skip_bad: true, ..Default::default() }] {
                let _ = read_files(std::slice::from_ref(&p), &opt);
            }
            let _ = read_augmented(&p, &["a".to_string(), "b".to_string()]);
        }
    }

    #[test]
    fn spec_parsers_never_panic(s in "[a-z:,.0-9eE+-]{0,24}") {
        let _ = s.parse::<LambdaSpec>();
        let _ = s.parse::<Decode>();
        let _ = Target::parse_list(&s);
        for prefix in ["beta:", "grid:", "beam:", "top-p:", "rerank:", "correct:"] {
            let _ = format!("{prefix}{s}").parse::<LambdaSpec>();
            let _ = format!("{prefix}{s}").parse::<Decode>();
        }
    }

    #[test]
    fn checkpoint_and_adaptor_readers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), header in "[ -~]{0,80}") {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let _ = checkpoint::load(&p, &Device::Cpu);
        let _ = Adaptor::load(&p, &Device::Cpu);
        // A well-formed safetensors file with an arbitrary (often malformed) JSON header.
        let mut f = Vec::new();
        let meta = format!("{{\"__metadata__\":{{\"inversed_mixup\":{}}}}}", serde_json::to_string(&header).unwrap());
        f.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        f.extend_from_slice(meta.as_bytes());
        std::fs::write(&p, &f).unwrap();
        let _ = checkpoint::load(&p, &Device::Cpu);
        let _ = Adaptor::load(&p, &Device::Cpu);
    }
}
