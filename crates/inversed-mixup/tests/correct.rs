//! `correct:N` decoding on tiny random models: it keeps the candidate closest to the target, so it
//! is never further than greedy; it explores beyond greedy; it is deterministic.

mod common;

use inversed_mixup::method::invert::{cosine_rows, Inverter};
use inversed_mixup::nets::llm::{Decode, GenerateOptions};

#[test]
fn correct_is_never_further_than_greedy_and_explores() {
    let d = tempfile::tempdir().unwrap();
    let (enc, llm, adaptor) = common::tiny_inverter_parts(d.path(), 3);
    let inv = Inverter::new(&enc, &llm, &adaptor).unwrap();
    let texts = [
        "the cat sat",
        "a dog ran far",
        "birds sing",
        "fish swim here",
        "x y z",
        "hello there",
        "one two",
        "red blue green",
    ];
    let h = enc.embed(&texts).unwrap();
    let decode = |decode: Decode| {
        inv.decode(
            &h,
            &GenerateOptions {
                decode,
                max_new_tokens: 6,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let cos = |out: &[String]| {
        let refs: Vec<&str> = out
            .iter()
            .map(|s| if s.is_empty() { " " } else { s.as_str() })
            .collect();
        cosine_rows(&h, &enc.embed(&refs).unwrap()).unwrap()
    };
    let greedy = decode(Decode::Greedy);
    assert_eq!(decode(Decode::Correct(1)), greedy, "one round is greedy");
    let corrected = decode(Decode::Correct(6));
    assert_eq!(corrected, decode(Decode::Correct(6)), "deterministic");
    for (i, (g, c)) in cos(&greedy).into_iter().zip(cos(&corrected)).enumerate() {
        assert!(c >= g - 1e-6, "row {i}: corrected {c} below greedy {g}");
    }
    assert_ne!(
        corrected, greedy,
        "the moved inputs decode to other sentences, some of them closer"
    );
}
