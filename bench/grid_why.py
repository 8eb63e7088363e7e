"""Why inversedMixup's rows help or not, per ten-shot cell of the main grid: how many generated rows
are a source sentence word for word (a duplicate with a softened label), how many carry a label
their content does not (cross-class mixes whose content ratio is 0.2 or more away from lambda),
and how each relates over seeds to keep - none. Reads results/grid-<sha>/ (results.jsonl and the
generated/ rows, which stay on the machine that ran the cells); prints a markdown table.

    python3 bench/grid_why.py [results/grid-2f88c450]
"""
import collections
import glob
import json
import os
import statistics as st
import sys

grid = sys.argv[1] if len(sys.argv) > 1 else "results/grid-2f88c450"
acc = collections.defaultdict(dict)
for line in open(f"{grid}/results.jsonl"):
    r = json.loads(line)
    if r["shots"] == 10:
        acc[(r["dataset"], r["seed"])][r["method"]] = 100 * r["accuracy"]


def norm(s):
    return " ".join(s.lower().split())


def corr(x, y):
    mx, my = st.mean(x), st.mean(y)
    sx, sy = sum((a - mx) ** 2 for a in x) ** 0.5, sum((b - my) ** 2 for b in y) ** 0.5
    return float("nan") if sx == 0 or sy == 0 else sum((a - mx) * (b - my) for a, b in zip(x, y)) / (sx * sy)


cells = collections.defaultdict(list)
for f in sorted(glob.glob(f"{grid}/generated/*-10-*-warmup-finetune.jsonl")):
    ds, _, seed = os.path.basename(f).split("-")[:3]
    a = acc.get((ds, int(seed)), {})
    if "none" not in a or "inversed-mixup-keep" not in a:
        continue
    gen = [json.loads(line) for line in open(f)]
    verbatim = sum(norm(g["text"]) in (norm(g["source_a"]["text"]), norm(g["source_b"]["text"])) for g in gen) / len(gen)
    mismatch = sum(g["source_a"]["label"] != g["source_b"]["label"] and abs(g["content_lambda"] - g["lambda"]) >= 0.2 for g in gen) / len(gen)
    cells[ds].append((verbatim, mismatch, a["inversed-mixup-keep"] - a["none"], a["inversed-mixup-keep"] - a["duplicate"]))

print("| dataset | seeds | verbatim | label without content | keep - none | keep - duplicate | corr(verbatim, keep - none) | corr(label without content, keep - none) |")
print("|---|---|---|---|---|---|---|---|")
for ds, c in sorted(cells.items()):
    v, m, d, dd = (list(x) for x in zip(*c))
    print(f"| {ds} | {len(c)} | {100 * st.mean(v):.1f} % | {100 * st.mean(m):.1f} % | {st.mean(d):+.1f} | {st.mean(dd):+.1f} | {corr(v, d):+.2f} | {corr(m, d):+.2f} |")
