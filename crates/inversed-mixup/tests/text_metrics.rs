//! Token F1 and sentence BLEU against reference values: sacreBLEU 2.6.0 and SQuAD's F1 formula.
//! The fixture comes from reference/make_bleu_fixture.py (run once; never needed by CI).

use inversed_mixup::eval::text::{bleu, token_f1, words};
use serde_json::Value;

/// Both metrics are compared to the reference within this: the same arithmetic in another order.
const TOL: f64 = 1e-9;

fn pairs() -> Vec<Value> {
    let p = format!("{}/tests/fixtures/bleu.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["pairs"].as_array().unwrap().clone()
}

fn text(p: &Value, k: &str) -> String {
    p[k].as_str().unwrap().to_string()
}

fn tokens(p: &Value, k: &str) -> Vec<String> {
    p[k].as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// The tokens both metrics count are those the fixture's port of `words` made.
#[test]
fn words_match_the_reference_tokens() {
    for p in pairs() {
        assert_eq!(
            words(&text(&p, "reference")),
            tokens(&p, "reference_tokens")
        );
        assert_eq!(
            words(&text(&p, "hypothesis")),
            tokens(&p, "hypothesis_tokens")
        );
    }
}

/// Sentence BLEU equals sacreBLEU's sentence_bleu (exp smoothing, effective order) / 100 on every pair,
/// including hypotheses shorter than 4 tokens and hypotheses sharing no token with the reference.
#[test]
fn bleu_matches_sacrebleu() {
    let ps = pairs();
    assert!(ps.len() >= 15);
    let mut bad = Vec::new();
    for p in &ps {
        let (r, h, want) = (
            text(p, "reference"),
            text(p, "hypothesis"),
            p["bleu"].as_f64().unwrap(),
        );
        let got = bleu(&r, &h);
        if (got - want).abs() > TOL {
            bad.push(format!("bleu({r:?}, {h:?}) = {got}, sacreBLEU {want}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} pairs differ:\n{}",
        bad.len(),
        ps.len(),
        bad.join("\n")
    );
}

/// Where sacreBLEU's own 13a tokenizer splits like `words`, plain sentence_bleu(lowercase=True) agrees too.
#[test]
fn bleu_matches_plain_sacrebleu_where_13a_tokenises_alike() {
    let ps: Vec<Value> = pairs()
        .into_iter()
        .filter(|p| p["same_tokens_as_13a"].as_bool().unwrap())
        .collect();
    assert!(ps.len() >= 15);
    for p in ps {
        let (r, h) = (text(&p, "reference"), text(&p, "hypothesis"));
        let want = p["sacrebleu_13a_lowercase"].as_f64().unwrap();
        assert!(
            (bleu(&r, &h) - want).abs() <= TOL,
            "bleu({r:?}, {h:?}) = {}, sacreBLEU 13a {want}",
            bleu(&r, &h)
        );
    }
}

/// Token F1 equals SQuAD's multiset F1 over the same tokens on every pair (1 for two empty texts).
#[test]
fn token_f1_matches_squad_formula() {
    for p in pairs() {
        let (r, h, want) = (
            text(&p, "reference"),
            text(&p, "hypothesis"),
            p["token_f1"].as_f64().unwrap(),
        );
        let got = token_f1(&r, &h);
        assert!(
            (got - want).abs() <= TOL,
            "token_f1({r:?}, {h:?}) = {got}, reference {want}"
        );
    }
}
