"""Reference values for token F1 and sentence BLEU, written to
crates/inversed-mixup/tests/fixtures/bleu.json and checked by crates/inversed-mixup/tests/text_metrics.rs.

Usage: python reference/make_bleu_fixture.py   (needs sacrebleu 2.x; made with 2.6.0)

Definitions (those of crates/inversed-mixup/src/eval/text.rs):
- tokens: `words` below, a port of the Rust `words` (lower-cased runs of alphanumerics and apostrophes;
  every other non-space character is a token of its own).
- BLEU: sacreBLEU's sentence_bleu (exp smoothing, effective order, BLEU-4) on those tokens, scaled to
  [0, 1]. Fed to sacreBLEU pre-tokenised with tokenize="none". Where sacreBLEU's own 13a tokenizer
  (lower-cased) gives the same tokens, the script checks that plain sentence_bleu(lowercase=True,
  tokenize="13a") gives the same score; the pairs where they differ (hyphens inside words, '.' and ','
  between digits, non-ASCII punctuation) are marked `same_tokens_as_13a: false`.
- token F1: SQuAD's multiset F1 (Counter intersection; 1 when both sides are empty, 0 when one is)
  on the same tokens, without SQuAD's article and punctuation removal.
"""
import json, os
from collections import Counter

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "inversed-mixup", "tests", "fixtures", "bleu.json")

PAIRS = [
    # (reference, hypothesis)
    ("The cat sat on the mat.", "The cat sat on the mat."),                       # identical
    ("The cat sat on the mat.", ""),                                              # empty hypothesis
    ("", "a stray hypothesis"),                                                   # empty reference
    ("", ""),                                                                     # both empty
    ("The cat sat on the mat.", "cat"),                                           # one-word hypothesis
    ("good movie", "good movie"),                                                 # shorter than 4 tokens, exact
    ("what a film", "what a mess"),                                               # 3 tokens, partial
    ("a b c d e", "v w x y z"),                                                   # no overlap at all
    ("The Quick Brown Fox Jumps Over The Lazy Dog", "the quick brown fox jumps over the lazy dog"),  # case
    ("Hello, world! How are you today?", "hello world , how are you ?"),          # punctuation
    ("the cat is on the mat", "the the the the the the the"),                     # repeated words (clipping)
    ("the cat is on the mat", "mat the on is cat the"),                           # same words, other order
    ("He was born in 1633 in Naples and became a priest.",
     "He was born in Naples in 1633 and later he became a well respected priest of the town."),  # longer hyp
    ("I can't believe it's not butter!", "I can not believe it is not butter!"),  # apostrophes
    ("Quantum entanglement links particles across large distances, even kilometres apart.",
     "Entanglement links quantum particles across distances."),                   # partial overlap, brevity
    ("A gripping, beautifully acted film that never lets go of you until the final scene.",
     "a gripping and beautifully acted film that never lets you go until the last scene ."),  # long
    ("one two three four five", "one two three four"),                            # exact prefix, brevity
    # Tokenisations differ from 13a (the Rust tokens split these, 13a keeps them whole):
    ("a well-known author of short stories", "a well known author of stories"),   # hyphen inside a word
    ("Stocks fell 3.2% on Tuesday, after 1,000 layoffs.", "stocks fell 3.2 % on tuesday after layoffs"),
    ("Zürich's café — naïvely priced at €12.50.", "zürich café naïvely priced at 12 euros"),
]


def words(s):
    out, cur = [], ""
    for c in s.lower():
        if c.isalnum() or c == "'":
            cur += c
        else:
            if cur:
                out.append(cur)
                cur = ""
            if not c.isspace():
                out.append(c)
    if cur:
        out.append(cur)
    return out


def token_f1(r, h):
    if not r or not h:
        return float(r == h)
    common = sum((Counter(r) & Counter(h)).values())
    if common == 0:
        return 0.0
    p, rr = common / len(h), common / len(r)
    return 2 * p * rr / (p + rr)


def main():
    tok13a = Tokenizer13a()
    rows = []
    for ref, hyp in PAIRS:
        rt, ht = words(ref), words(hyp)
        score = sacrebleu.sentence_bleu(" ".join(ht), [" ".join(rt)], smooth_method="exp", tokenize="none",
                                        use_effective_order=True).score / 100
        same = tok13a(ref.lower()).split() == rt and tok13a(hyp.lower()).split() == ht
        s13a = sacrebleu.sentence_bleu(hyp, [ref], smooth_method="exp", lowercase=True, tokenize="13a",
                                       use_effective_order=True).score / 100
        if same:
            assert abs(s13a - score) < 1e-12, (ref, hyp, s13a, score)
        rows.append({"reference": ref, "hypothesis": hyp, "reference_tokens": rt, "hypothesis_tokens": ht,
                     "bleu": score, "sacrebleu_13a_lowercase": s13a, "same_tokens_as_13a": same,
                     "token_f1": token_f1(rt, ht)})
    meta = {"made_by": "reference/make_bleu_fixture.py", "sacrebleu": sacrebleu.__version__,
            "bleu": "sentence_bleu(smooth_method='exp', use_effective_order=True, tokenize='none') on the "
                    "space-joined Rust `words` tokens, / 100",
            "token_f1": "SQuAD multiset F1 on the Rust `words` tokens"}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "pairs": rows}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(rows)} pairs to {os.path.normpath(OUT)} "
          f"({sum(r['same_tokens_as_13a'] for r in rows)} tokenised alike by 13a)")


if __name__ == "__main__":
    main()
