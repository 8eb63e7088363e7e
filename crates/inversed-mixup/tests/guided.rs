//! `guided:W` decoding on tiny random models: more rows than one chunk of beams holds are decoded
//! chunk by chunk, and each row, sentence or mix, comes out as it does decoded alone.

mod common;

use inversed_mixup::method::augment::mix_embeddings;
use inversed_mixup::method::invert::{Inverter, MixSources};
use inversed_mixup::nets::llm::{Decode, GenerateOptions};

#[test]
fn guided_rows_decode_in_chunks_as_they_do_alone() {
    let d = tempfile::tempdir().unwrap();
    let (enc, llm, adaptor) = common::tiny_inverter_parts(d.path(), 3);
    let inv = Inverter::new(&enc, &llm, &adaptor).unwrap();
    let a = enc
        .embed(&[
            "the cat sat",
            "a dog ran far",
            "birds sing",
            "fish swim",
            "x y z",
        ])
        .unwrap();
    let b = enc
        .embed(&[
            "hello there",
            "one two",
            "red blue green",
            "we ate",
            "rain fell",
        ])
        .unwrap();
    let lambdas = [0.3, 0.5, 0.7, 0.4, 0.6];
    let h = mix_embeddings(&a, &b, &lambdas, true).unwrap();
    // 64 beams a row: chunks of 2 rows, so 5 rows take 3 chunks.
    let opts = GenerateOptions {
        decode: Decode::Guided(64),
        max_new_tokens: 4,
        ..Default::default()
    };
    let rows = |i: usize, n: usize| {
        let (a, b) = (a.narrow(0, i, n).unwrap(), b.narrow(0, i, n).unwrap());
        let src = MixSources {
            a: &a,
            b: &b,
            lambdas: &lambdas[i..i + n],
        };
        let h = h.narrow(0, i, n).unwrap();
        (
            inv.decode(&h, &opts).unwrap(),
            inv.decode_mixes(&h, &src, &opts).unwrap(),
        )
    };
    let (sentences, mixes) = rows(0, 5);
    assert_eq!(sentences.len(), 5);
    assert_ne!(
        sentences, mixes,
        "mixes are also ranked by their content ratio"
    );
    for i in 0..5 {
        let (s, m) = rows(i, 1);
        assert_eq!(s[0], sentences[i], "sentence row {i}");
        assert_eq!(m[0], mixes[i], "mix row {i}");
    }
}
