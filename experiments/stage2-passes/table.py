"""The gate's table: per configuration, greedy inversion of 64 dev sentences the warm-up never saw
(MiniLM cosine, token F1, exact) and, at lambda 0.02/0.98, the share of rows that are their
dominant source word for word, beside those rows' cosine to their mixed target.
Usage: python3 experiments/stage2-passes/table.py RUNS_DIR"""
import json, sys
from pathlib import Path

runs = Path(sys.argv[1])
norm = lambda s: " ".join(s.lower().split())


def inv(path):
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    n = len(rows)
    return n, sum(r["cosine"] for r in rows) / n, sum(r["token_f1"] for r in rows) / n, sum(r["exact"] for r in rows) / n


print("| warm-up | dev cosine | dev token F1 | dev exact | end-λ rows a source word for word | their cosine to target |")
print("|---|---|---|---|---|---|")
n, c, f, e = inv(runs / "shipped-dev.jsonl")
print(f"| none (shipped adaptor) | {c:.3f} | {f:.3f} | {e:.1%} | – | – |")
names = {"A": "default (L_GEN every step, 24 passes)", "B": "--gen-passes 2", "C": "--gen-passes 2 --unlabeled train texts",
         "D": "--finetune-encoder 0", "E": "--finetune-encoder 0 --gen-passes 2", "F": "--finetune-encoder 0 --gen-passes 2 --unlabeled train texts"}
for cfg, name in names.items():
    d = runs / cfg
    if not (d / "aug.jsonl").exists():
        continue
    c = f = e = None
    if (d / "dev.jsonl").exists():
        n, c, f, e = inv(d / "dev.jsonl")
    rows = [json.loads(l) for l in (d / "aug.jsonl").read_text().splitlines()]
    ends = [r for r in rows if min(r["lambda"], 1 - r["lambda"]) <= 0.05]
    dom = lambda r: r["source_a"]["text"] if r["lambda"] >= 0.5 else r["source_b"]["text"]
    copies = [r for r in ends if norm(r["text"]) == norm(dom(r))]
    cos = sum(r["cos_target"] for r in ends) / max(len(ends), 1)
    dev = f"{c:.3f} | {f:.3f} | {e:.1%}" if c is not None else "– | – | –"
    print(f"| {name} | {dev} | {len(copies)}/{len(ends)} ({len(copies) / max(len(ends), 1):.0%}) | {cos:.3f} |")
