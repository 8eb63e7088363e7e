"""inversedMixup from Python with pandas, Hugging Face `datasets` and scikit-learn.

Warms up the task model on examples/reviews.tsv, augments the reviews twice (a pandas DataFrame,
then a `datasets.Dataset` through `map(..., batched=True)`), and trains a logistic regression on
`Augmenter.embed` features of the original rows alone and with the generated ones, evaluated on
examples/reviews-test.tsv. A generated row carries a soft label (e.g. 75 % pos, 25 % neg): it
enters the regression once per class, weighted by that class's probability, which is the soft-label
cross-entropy the paper trains with.

    pip install inversed_mixup pandas scikit-learn datasets
    python examples/python_pandas.py            # about as long as examples/demo.sh
    python examples/python_pandas.py --quick    # 8 reviews, 2 warm-up steps, short sentences
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from sklearn.linear_model import LogisticRegression

from inversed_mixup import Augmenter

HERE = Path(__file__).resolve().parent


def read_tsv(path: Path) -> pd.DataFrame:
    # No quoting: a TSV text may contain bare quotes (as imix reads it).
    return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)


def soft_rows(texts: list, soft: list, classes: list) -> tuple:
    """One (text, class, weight) row per class with probability > 0."""
    t, y, w = [], [], []
    for text, s in zip(texts, soft):
        for c in classes:
            if s.get(c, 0.0) > 0:
                t.append(text)
                y.append(c)
                w.append(s[c])
    return t, y, w


def fit_and_score(aug: Augmenter, texts: list, labels: list, weights: list, test: pd.DataFrame) -> float:
    clf = LogisticRegression(max_iter=2000, C=10.0)
    clf.fit(aug.embed(texts), labels, sample_weight=np.asarray(weights))
    return float((clf.predict(aug.embed(test.text.tolist())) == test.label.to_numpy()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=str(HERE / "reviews.tsv"))
    p.add_argument("--test", default=str(HERE / "reviews-test.tsv"))
    p.add_argument("--model", default="results/python/model", help="where the warm-up bundle is written")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 reviews per class, 2 warm-up steps, 8 new tokens")
    a = p.parse_args()

    train, test = read_tsv(Path(a.train)), read_tsv(Path(a.test))
    steps, tokens = 30, 48
    if a.quick:
        train = train.groupby("label", group_keys=False).head(4).reset_index(drop=True)
        steps, tokens = 2, 8
    classes = sorted(train.label.unique())
    aug = Augmenter()
    # A new warm-up, not the continuation of an earlier run's checkpoint (which warmup refuses to
    # overwrite without resume=True).
    Path(a.model, "warmup.ckpt").unlink(missing_ok=True)
    aug.warmup(train.text, train.label, a.model, steps=steps, seed=0)

    # 1. A pandas DataFrame: every review mixed with a review of the other class at five ratios.
    rows = aug.augment(train.text, train.label, a.model, lam="grid:0,0.25,0.5,0.75,1", max_new_tokens=tokens, seed=0)
    df = pd.json_normalize(rows)  # nested fields become columns: soft_label.pos, source_a.text, ...
    print(f"pandas: {len(df)} generated rows, {int(df.intrusion.sum())} judged intruding")
    print(df[["lambda", "soft_label." + classes[-1], "text"]].head(6).to_string(index=False))

    # 2. A Hugging Face Dataset through map(batched=True). Pairs are drawn across the whole set,
    #    so the batch is the whole dataset (batch_size=None); the output has its own row count.
    def augment_batch(batch: dict) -> dict:
        out = aug.augment(batch["text"], batch["label"], a.model, lam="0.5", seed=1, max_new_tokens=tokens, progress=False)
        return {"text": [r["text"] for r in out], "soft_label": [r["soft_label"] for r in out], "lambda": [r["lambda"] for r in out]}

    # (new_fingerprint: datasets cannot hash a function holding the models, and says so otherwise.)
    ds = Dataset.from_pandas(train).map(augment_batch, batched=True, batch_size=None, remove_columns=list(train.columns), new_fingerprint="inversed-mixup-0.5-seed1")
    print(f"datasets: {ds.num_rows} generated rows, e.g. {ds[0]['text']!r} with soft label {ds[0]['soft_label']}")

    # 3. scikit-learn on embeddings: the original rows alone, then with both augmentations.
    base = fit_and_score(aug, train.text.tolist(), train.label.tolist(), [1.0] * len(train), test)
    t1, y1, w1 = soft_rows(df.text.tolist(), [r["soft_label"] for r in rows], classes)
    t2, y2, w2 = soft_rows(ds["text"], ds["soft_label"], classes)
    mixed = fit_and_score(aug, train.text.tolist() + t1 + t2, train.label.tolist() + y1 + y2, [1.0] * len(train) + w1 + w2, test)
    print(f"logistic regression on embeddings, {len(test)} test reviews:")
    print(f"  original {len(train)} rows:                accuracy={base:.4f}")
    print(f"  original + {len(rows) + ds.num_rows} generated rows:  accuracy={mixed:.4f}")


if __name__ == "__main__":
    main()
