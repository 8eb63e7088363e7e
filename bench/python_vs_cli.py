"""Times `Augmenter.augment` (the Python wheel) against `imix augment` for the same work.

Both run the same stage-3 call on the same rows with the same bundle and settings, alternately,
`--rounds` times, in this one process (the CLI as a subprocess), and their rows are checked to be
identical every time. Reported per round: the command line's wall time (a new process: it loads the
models each time), the Python call on an already loaded Augmenter ("warm": what a notebook or a Ray
actor pays per call) and a fresh Augmenter plus the call ("cold": what a script pays once). Not run
in CI.

    cargo build --release -p imix && pip install target/wheels/inversed_mixup-*.whl
    python bench/python_vs_cli.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inversed_mixup import Augmenter

REPO = Path(__file__).resolve().parents[1]


def read_tsv(path: Path, n: int):
    rows = [l.split("\t") for l in path.read_text(encoding="utf-8").splitlines()[1:] if l.strip()]
    by = {}
    for label, text in rows:
        by.setdefault(label, []).append(text)
    per = max(1, n // len(by))
    picked = [(l, t) for l in sorted(by) for t in by[l][:per]]
    return [t for _, t in picked], [l for l, _ in picked]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imix", default=os.environ.get("IMIX_BIN", str(REPO / "target" / "release" / "imix")))
    p.add_argument("--input", default=str(REPO / "examples" / "reviews.tsv"))
    p.add_argument("--rows", type=int, default=40, help="labelled sentences (split evenly over the classes)")
    p.add_argument("--model", default=None, help="warm-up bundle (default: a 10-step warm-up written to a temporary folder)")
    p.add_argument("--lambda", dest="lam", default="0.5")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="imix-bench-"))
    texts, labels = read_tsv(Path(a.input), a.rows)
    data = tmp / "data.tsv"
    data.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for t, l in zip(texts, labels)), encoding="utf-8")
    aug = Augmenter()
    model = a.model or aug.warmup(texts, labels, tmp / "model", steps=10, progress=False)
    kw = dict(lam=a.lam, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, progress=False)
    flags = ["--lambda", a.lam, "--max-new-tokens", str(a.max_new_tokens), "--batch-size", str(a.batch_size)]
    aug.augment([texts[0], texts[-1]], [labels[0], labels[-1]], model, **{**kw, "max_new_tokens": 1})  # load the bundle once

    cli_t, warm_t, cold_t = [], [], []
    for r in range(a.rounds):
        out = tmp / "cli.jsonl"
        t = time.perf_counter()
        subprocess.run([a.imix, "augment", "--model", str(model), "--input", str(data), "--out", str(out), *flags], check=True, capture_output=True, env={**os.environ, "IMIX_LOG": "warn"})
        cli_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        rows = aug.augment_jsonl(texts, labels, model, **kw)
        warm_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        cold = Augmenter().augment_jsonl(texts, labels, model, **kw)
        cold_t.append(time.perf_counter() - t)
        assert rows == cold == out.read_text(encoding="utf-8"), "Python and CLI rows differ"
        print(f"round {r + 1}: imix {cli_t[-1]:.2f} s   python warm {warm_t[-1]:.2f} s   python cold {cold_t[-1]:.2f} s   ({len(rows.splitlines())} rows)", flush=True)

    med = statistics.median
    print(f"{len(texts)} sentences, lambda {a.lam}, {a.max_new_tokens} new tokens, batch {a.batch_size}; medians over {a.rounds} rounds:")
    print(f"imix augment {med(cli_t):.2f} s, Augmenter.augment warm {med(warm_t):.2f} s, cold {med(cold_t):.2f} s")
    print(f"ratio python/imix: warm {med(warm_t) / med(cli_t):.3f}, cold {med(cold_t) / med(cli_t):.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
