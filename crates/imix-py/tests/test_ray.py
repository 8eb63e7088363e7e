"""examples/ray_augment.py on a local Ray instance: its output equals one process's, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from inversed_mixup import Augmenter

pytest.importorskip("ray")


def test_ray_example_equals_single_process(aug: Augmenter, small, small_tsv: Path, bundle: str, tmp_path: Path):
    out = tmp_path / "ray.jsonl"
    args = ["--decode", "top-p:0.9", "--seed", "5", "--max-new-tokens", "8", "--batch-size", "4", "--lambda", "grid:0,0.5,1"]
    p = subprocess.run(
        [sys.executable, str(REPO / "examples" / "ray_augment.py"), "--input", str(small_tsv), "--model", bundle, "--out", str(out), "--shards", "3", "--concurrency", "2", "--num-cpus", "2", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )
    assert p.returncode == 0, p.stderr[-4000:]
    single = aug.augment_jsonl(*small, bundle, decode="top-p:0.9", seed=5, max_new_tokens=8, batch_size=4, lam="grid:0,0.5,1", progress=False)
    assert out.read_text(encoding="utf-8") == single and single
