"""Shared fixtures: one Augmenter, a small labelled set, a warm-up bundle and the imix binary.

Model work is kept tiny (8 sentences, 2 warm-up steps, at most 8 new tokens) so the suite runs in
minutes on two cores. Run through `bash scripts/test.sh`, which builds and installs the wheel and
sets IMIX_BIN to the release build of the command line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[3]


def read_tsv(path: Path) -> Tuple[List[str], List[str]]:
    """(texts, labels) of a label<TAB>text file with a header."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return [r[1] for r in rows], [r[0] for r in rows]


def write_tsv(path: Path, texts: List[str], labels: List[str]) -> Path:
    path.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for t, l in zip(texts, labels)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def imix_bin() -> str:
    """The imix binary: $IMIX_BIN, else target/release/imix, else target/debug/imix."""
    env = os.environ.get("IMIX_BIN")
    if env:
        assert Path(env).is_file(), f"IMIX_BIN={env} does not exist"
        return env
    for p in (REPO / "target" / "release" / "imix", REPO / "target" / "debug" / "imix"):
        if p.is_file():
            return str(p)
    pytest.skip("no imix binary: set IMIX_BIN or run `cargo build --release -p imix` (scripts/test.sh does)")


def run_imix(imix_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([imix_bin, *args], capture_output=True, text=True, env={**os.environ, "IMIX_LOG": "warn"})


def cli_error(proc: subprocess.CompletedProcess) -> str:
    """The message of a failed imix run (its `error: ...` line, without the prefix)."""
    assert proc.returncode != 0, proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert lines, proc.stderr
    return lines[-1][len("error: "):]


@pytest.fixture(scope="session")
def aug():
    from inversed_mixup import Augmenter

    return Augmenter()


@pytest.fixture(scope="session")
def small() -> Tuple[List[str], List[str]]:
    """Four positive and four negative reviews of examples/reviews.tsv."""
    texts, labels = read_tsv(REPO / "examples" / "reviews.tsv")
    pos = [i for i, l in enumerate(labels) if l == "pos"][:4]
    neg = [i for i, l in enumerate(labels) if l == "neg"][:4]
    idx = pos + neg
    return [texts[i] for i in idx], [labels[i] for i in idx]


@pytest.fixture(scope="session")
def small_tsv(tmp_path_factory, small) -> Path:
    return write_tsv(tmp_path_factory.mktemp("data") / "small.tsv", *small)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, aug, small) -> str:
    """A warm-up bundle of two steps on the small set."""
    out = tmp_path_factory.mktemp("bundle") / "model"
    return aug.warmup(*small, out, steps=2, batch_size=4, progress=False)


#: Augmentation settings small enough for tests: 8 mixes, 2 decode batches of 4, 8 new tokens.
TINY = dict(max_new_tokens=8, batch_size=4)
