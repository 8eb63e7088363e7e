"""examples/python_pandas.py runs end to end (in its quick mode)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("sklearn")
pytest.importorskip("datasets")


def test_pandas_example_quick(tmp_path: Path):
    p = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python_pandas.py"), "--quick", "--model", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    # 8 reviews: 40 mixes in pandas (5 ratios), 8 through datasets (an empty decode is left out).
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(pandas|datasets): (\d+) generated rows", p.stdout, re.M)}
    assert 0 < counts["pandas"] <= 40 and 0 < counts["datasets"] <= 8, p.stdout
    acc = [float(l.rsplit("accuracy=", 1)[1]) for l in p.stdout.splitlines() if "accuracy=" in l]
    assert len(acc) == 2 and all(0.0 <= a <= 1.0 for a in acc), p.stdout
