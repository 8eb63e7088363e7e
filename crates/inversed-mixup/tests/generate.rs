//! Decoding on a tiny random model: the KV cache changes nothing, beam 1 is greedy, sampling is seeded.

mod common;

use candle_core::{Device, Tensor, D};
use inversed_mixup::nets::llm::{Decode, GenerateOptions, Llm};

fn tiny() -> (tempfile::TempDir, Llm) {
    let d = tempfile::tempdir().unwrap();
    common::write_tiny_llama(d.path(), 4);
    let l = Llm::load(d.path(), &Device::Cpu).unwrap();
    (d, l)
}

fn prompts(llm: &Llm) -> Tensor {
    let a = llm
        .embed_ids(&llm.tokenizer().encode("hello wor").unwrap())
        .unwrap();
    let b = llm
        .embed_ids(&llm.tokenizer().encode("a cat sat").unwrap())
        .unwrap();
    Tensor::stack(&[a, b], 0).unwrap()
}

#[test]
fn cached_greedy_equals_uncached_recomputation() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    // The raw argmax: no repetition control, no UTF-8 guard.
    let opts = GenerateOptions {
        max_new_tokens: 6,
        no_repeat_ngram: 0,
        valid_utf8: false,
        ..Default::default()
    };
    let got = llm.generate(&p, &opts).unwrap();
    for (row, out) in got.iter().enumerate() {
        let mut x = p.get(row).unwrap().unsqueeze(0).unwrap();
        let mut want = Vec::new();
        for _ in 0..6 {
            let h = llm.forward_embeds(&x, None, true).unwrap();
            let t = h.dim(1).unwrap();
            let next = llm
                .logits(&h.narrow(1, t - 1, 1).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .argmax(D::Minus1)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            if next == llm.tokenizer().eos {
                break;
            }
            want.push(next);
            x = Tensor::cat(
                &[x, llm.embed_ids(&[next]).unwrap().unsqueeze(0).unwrap()],
                1,
            )
            .unwrap();
        }
        assert_eq!(out, &want, "row {row}");
    }
}

#[test]
fn beam_of_one_is_greedy_and_beam_search_gives_one_sequence_per_row() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    let g = llm
        .generate(
            &p,
            &GenerateOptions {
                max_new_tokens: 5,
                ..Default::default()
            },
        )
        .unwrap();
    let b1 = llm
        .generate(
            &p,
            &GenerateOptions {
                decode: Decode::Beam(1),
                max_new_tokens: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(g, b1);
    let b3 = llm
        .generate(
            &p,
            &GenerateOptions {
                decode: Decode::Beam(3),
                max_new_tokens: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(b3.len(), 2);
    assert!(b3.iter().all(|s| !s.is_empty() && s.len() <= 5));
}

/// `guided:3` options for 5 new tokens, and greedy's 5 tokens for prompts `p`.
fn guided_and_greedy(llm: &Llm, p: &Tensor) -> (GenerateOptions, Vec<Vec<u32>>) {
    let greedy = GenerateOptions {
        max_new_tokens: 5,
        ..Default::default()
    };
    let opts = GenerateOptions {
        decode: Decode::Guided(3),
        ..greedy.clone()
    };
    (opts, llm.generate(p, &greedy).unwrap())
}

/// The guided beam follows its score, row by row: row 0's score penalises greedy's first token,
/// which the search then avoids; row 1's rewards greedy's path, which it then returns. Only the
/// rows of the batch are scored, and the same call gives the same output.
#[test]
fn guided_beam_search_follows_its_score_per_row() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    let (opts, greedy) = guided_and_greedy(&llm, &p);
    let run = || {
        let mut score = |asked: &[(usize, &[u32])]| {
            Ok(asked
                .iter()
                .map(|&(r, ids)| {
                    assert!(r < 2, "row {r} scored");
                    let g = &greedy[r];
                    if r == 0 {
                        -((ids.first() == g.first()) as u32 as f32)
                    } else {
                        ids.iter().zip(g).take_while(|(a, b)| a == b).count() as f32
                    }
                })
                .collect())
        };
        llm.guided_beam(&p, None, 3, 0.05, &opts, &mut score)
            .unwrap()
    };
    let out = run();
    assert_eq!(out.len(), 2);
    assert_ne!(
        out[0].first(),
        greedy[0].first(),
        "{out:?} vs greedy {greedy:?}"
    );
    assert!(!out[0].is_empty());
    assert_eq!(out[1], greedy[1]);
    assert_eq!(out, run());
    // Without the encoder, `generate` decodes guided:W as beam:W.
    let beam = GenerateOptions {
        decode: Decode::Beam(3),
        ..opts.clone()
    };
    assert_eq!(
        llm.generate(&p, &opts).unwrap(),
        llm.generate(&p, &beam).unwrap()
    );
}

/// The likelihood weight trades the score against the LLM's own log-probabilities: without it
/// a small penalty on greedy's first token steers row 0 away from it; with a large one the
/// penalty is drowned and the search returns what it returns with no score at all.
#[test]
fn guided_beam_weighs_likelihood_against_its_score() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    let (opts, greedy) = guided_and_greedy(&llm, &p);
    let run = |penalty: f32, lm_weight: f32| {
        let mut score = |asked: &[(usize, &[u32])]| {
            Ok(asked
                .iter()
                .map(|&(r, ids)| {
                    let first = r == 0 && ids.first() == greedy[0].first();
                    -penalty * first as u32 as f32
                })
                .collect())
        };
        llm.guided_beam(&p, None, 3, lm_weight, &opts, &mut score)
            .unwrap()
    };
    let unweighted = run(0.01, 0.0);
    assert_ne!(unweighted[0].first(), greedy[0].first(), "{unweighted:?}");
    let weighted = run(0.01, 1e4);
    assert_eq!(weighted, run(0.0, 1e4));
    assert_ne!(weighted, unweighted);
}

#[test]
fn top_p_is_reproducible_per_seed() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    let o = |seed| GenerateOptions {
        decode: Decode::TopP(0.95),
        max_new_tokens: 8,
        seed,
        ..Default::default()
    };
    let a = llm.generate(&p, &o(1)).unwrap();
    assert_eq!(a, llm.generate(&p, &o(1)).unwrap());
    assert_ne!(a, llm.generate(&p, &o(2)).unwrap());
}

#[test]
fn decode_specs_parse() {
    assert_eq!("greedy".parse::<Decode>().unwrap(), Decode::Greedy);
    assert_eq!("beam:4".parse::<Decode>().unwrap(), Decode::Beam(4));
    assert_eq!("top-p:0.9".parse::<Decode>().unwrap(), Decode::TopP(0.9));
    assert_eq!("rerank:8".parse::<Decode>().unwrap(), Decode::Rerank(8));
    assert_eq!("correct:4".parse::<Decode>().unwrap(), Decode::Correct(4));
    assert_eq!("guided:8".parse::<Decode>().unwrap(), Decode::Guided(8));
    for bad in [
        "beam:0",
        "top-p:1.5",
        "nucleus",
        "beam:x",
        "beam:100000",
        "rerank:0",
        "rerank:65",
        "correct:0",
        "correct:65",
        "correct:x",
        "guided:0",
        "guided:65",
    ] {
        assert!(bad.parse::<Decode>().is_err(), "{bad}");
    }
}

/// Token n-grams that occur more than once in `s`.
fn repeated(s: &[u32], n: usize) -> usize {
    let mut seen = std::collections::HashSet::new();
    s.windows(n).filter(|w| !seen.insert(w.to_vec())).count()
}

#[test]
fn no_repeat_ngram_stops_the_loops_greedy_and_beam_fall_into() {
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    for decode in [Decode::Greedy, Decode::Beam(3)] {
        let free = llm
            .generate(
                &p,
                &GenerateOptions {
                    decode,
                    max_new_tokens: 40,
                    no_repeat_ngram: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        // The case is constructed so that the plain decoder loops: the test would prove nothing otherwise.
        assert!(
            free.iter().any(|s| repeated(s, 3) > 0),
            "{decode:?}: the random model did not loop: {free:?}"
        );
        let held = llm
            .generate(
                &p,
                &GenerateOptions {
                    decode,
                    max_new_tokens: 40,
                    no_repeat_ngram: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        for s in &held {
            assert_eq!(repeated(s, 3), 0, "{decode:?}: a 3-gram repeats in {s:?}");
        }
        // A strong repetition penalty alone also breaks the loop of greedy decoding.
        if decode == Decode::Greedy {
            let pen = llm
                .generate(
                    &p,
                    &GenerateOptions {
                        decode,
                        max_new_tokens: 40,
                        no_repeat_ngram: 0,
                        repetition_penalty: 50.0,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert!(
                pen.iter().map(|s| repeated(s, 3)).sum::<usize>()
                    < free.iter().map(|s| repeated(s, 3)).sum::<usize>(),
                "penalty: {pen:?}"
            );
        }
    }
}

#[test]
fn generated_text_is_valid_utf8_where_the_unguarded_model_breaks_characters() {
    // The tiny model's vocabulary is the 256 bytes: sampling from it at random breaks characters.
    let (_d, llm) = tiny();
    let p = prompts(&llm);
    let text = |decode, valid_utf8, seed| -> Vec<String> {
        let o = GenerateOptions {
            decode,
            max_new_tokens: 24,
            seed,
            no_repeat_ngram: 0,
            valid_utf8,
            ..Default::default()
        };
        llm.generate(&p, &o)
            .unwrap()
            .iter()
            .map(|s| llm.tokenizer().decode(s).unwrap())
            .collect()
    };
    let mut broken = 0;
    for seed in 0..6 {
        broken += text(Decode::TopP(1.0), false, seed)
            .iter()
            .filter(|t| t.contains('\u{FFFD}'))
            .count();
        for t in
            text(Decode::TopP(1.0), true, seed)
                .into_iter()
                .chain(text(Decode::Beam(3), true, seed))
        {
            assert!(!t.contains('\u{FFFD}'), "{t:?}");
        }
    }
    assert!(
        broken > 0,
        "unguarded sampling never broke a character: this test would prove nothing"
    );
}

#[test]
fn the_utf8_guard_lets_any_valid_text_through() {
    let (_d, llm) = tiny();
    let tok = llm.tokenizer();
    for text in [
        "plain ascii",
        "héllo wörld",
        "日本語 ok",
        "emoji 😀 and ñ",
        "\u{10FFFF}",
    ] {
        let ids = tok.encode(text).unwrap();
        for i in 0..ids.len() {
            let mut row = vec![0.0f32; tok.vocab_size()];
            tok.utf8_guard().constrain(&ids[..i], &mut row, tok.eos);
            assert!(
                row[ids[i] as usize].is_finite(),
                "{text:?}: token {i} banned"
            );
        }
        let mut row = vec![0.0f32; tok.vocab_size()];
        tok.utf8_guard().constrain(&ids, &mut row, tok.eos);
        assert!(
            row[tok.eos as usize].is_finite(),
            "{text:?}: the end banned after whole characters"
        );
    }
}
