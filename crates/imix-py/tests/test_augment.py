"""Stage 3 from Python: the rows `imix augment` writes, seeds, and shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, run_imix

from inversed_mixup import Augmenter

FIELDS = ["text", "lambda", "source_a", "source_b", "soft_label", "mix_label", "predicted", "intrusion", "intrusion_reason", "cos_a", "cos_b", "cos_target", "content_lambda"]

#: (Python keywords, the same as imix flags)
CASES = {
    "greedy-grid": (dict(lam="grid:0,0.5,1", **TINY), ["--lambda", "grid:0,0.5,1", "--max-new-tokens", "8", "--batch-size", "4"]),
    "top-p-relabel": (
        dict(decode="top-p:0.9", seed=7, per_example=2, intrusion="relabel", threshold=0.5, label="content", pairs="random", lam="beta:0.4", **TINY),
        ["--decode", "top-p:0.9", "--seed", "7", "--per-example", "2", "--intrusion", "relabel", "--threshold", "0.5", "--label", "content", "--pairs", "random", "--lambda", "beta:0.4", "--max-new-tokens", "8", "--batch-size", "4"],
    ),
    # Mixes at a source, whose copies are sampled again.
    "resample-copies": (dict(lam="0.97", resample_copies=3, seed=5, **TINY), ["--lambda", "0.97", "--resample-copies", "3", "--seed", "5", "--max-new-tokens", "8", "--batch-size", "4"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rows_equal_imix_augment(case, aug: Augmenter, small, small_tsv: Path, bundle: str, imix_bin: str, tmp_path: Path):
    kw, flags = CASES[case]
    out = tmp_path / "cli.jsonl"
    p = run_imix(imix_bin, "augment", "--model", bundle, "--input", str(small_tsv), "--out", str(out), *flags)
    assert p.returncode == 0, p.stderr
    jsonl = aug.augment_jsonl(*small, bundle, progress=False, **kw)
    assert jsonl == out.read_text(encoding="utf-8")  # byte for byte
    rows = aug.augment(*small, bundle, progress=False, **kw)
    assert rows == [json.loads(l) for l in out.read_text().splitlines()] and rows
    assert all(list(r) == FIELDS for r in rows)
    assert all(abs(sum(r["soft_label"].values()) - 1) < 1e-5 for r in rows)


def test_same_seed_same_rows(aug: Augmenter, small, bundle: str):
    kw = dict(decode="top-p:0.9", seed=3, progress=False, **TINY)
    assert aug.augment(*small, bundle, **kw) == aug.augment(*small, bundle, **kw)


def test_different_seed_different_rows(aug: Augmenter, small, bundle: str):
    kw = dict(decode="top-p:0.9", pairs="random", progress=False, **TINY)
    a, b = aug.augment(*small, bundle, seed=0, **kw), aug.augment(*small, bundle, seed=1, **kw)
    assert [r["text"] for r in a] != [r["text"] for r in b]
    # The seed also draws the partners.
    assert [r["source_b"]["index"] for r in a] != [r["source_b"]["index"] for r in b]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_shards_concatenate_to_the_unsharded_rows(n, aug: Augmenter, small, bundle: str):
    # Batches of 2: 8 decode batches, so that 5 shards are possible.
    kw = dict(decode="top-p:0.9", seed=11, lam="grid:0.25,0.75", progress=False, **{**TINY, "batch_size": 2})
    whole = aug.augment_jsonl(*small, bundle, **kw)
    parts = [aug.augment_jsonl(*small, bundle, shard=(i, n), **kw) for i in range(n)]
    assert "".join(parts) == whole and whole
    assert aug.augment_jsonl(*small, bundle, shard=f"{n - 1}/{n}", **kw) == parts[-1]
