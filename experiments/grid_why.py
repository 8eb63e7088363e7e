"""Why inversedMixup's rows help or not, per ten-shot cell of the main grid: how many generated rows
are a source sentence word for word (a duplicate with a softened label; imix-bench's own share), how
many carry a label their content does not (cross-class mixes whose content ratio is 0.2 or more away
from lambda), how each relates over seeds to keep - none, and keep against duplicate and reconstruct
(lambda = 1) with the paired sign-flip p; then, for every shot count, how faithful the decoded rows
are near lambda's ends (where a row should be its source) and in the middle. Reads
results/grid-<sha>/ (results.jsonl and the generated/ rows, which stay on the machine that ran the
cells); prints two markdown tables. The per-cell numbers of the second table (numbers only, no text)
are kept in experiments/grid-<sha>/fidelity.jsonl, which is committed, so a later sitting's table
still counts cells whose generated rows went with an earlier machine.

    python3 experiments/grid_why.py [results/grid-2f88c450]
"""
import collections
import glob
import json
import os
import statistics as st
import sys

grid = sys.argv[1] if len(sys.argv) > 1 else "results/grid-2f88c450"
acc = collections.defaultdict(dict)
verbatim = {}  # imix-bench's own per-cell share (generator.verbatim of the keep row)
for line in open(f"{grid}/results.jsonl"):
    r = json.loads(line)
    if r["shots"] == 10:
        acc[(r["dataset"], r["seed"])][r["method"]] = 100 * r["accuracy"]
        if r["method"] == "inversed-mixup-keep":
            verbatim[(r["dataset"], r["seed"])] = r["generator"]["verbatim"]


def corr(x, y):
    try:
        return st.correlation(x, y)
    except st.StatisticsError:  # a constant series
        return float("nan")


def sign_flip(d):
    """Two-sided exact sign-flip permutation p of the mean difference over seeds."""
    obs = abs(sum(d)) - 1e-9
    n = len(d)
    hits = sum(abs(sum(x if (mask >> i) & 1 else -x for i, x in enumerate(d))) >= obs for mask in range(1 << n))
    return hits / (1 << n)


def norm(t):
    return " ".join(t.lower().split())


def is_copy(g):
    """imix-bench's own test (augment::is_copy): the row is a source, case and spacing aside."""
    return norm(g["text"]) in (norm(g["source_a"]["text"]), norm(g["source_b"]["text"]))


generated = {}  # (dataset, shots, seed) -> the cell's generated rows
for f in sorted(glob.glob(f"{grid}/generated/*-warmup-finetune.jsonl")):
    ds, shots, seed = os.path.basename(f).split("-")[:3]
    # a full-split cell's file says "all"; results.jsonl says shots 0
    generated[(ds, 0 if shots == "all" else int(shots), int(seed))] = [json.loads(line) for line in open(f)]

# Per-cell numbers, kept beside the grid's committed rows (see the docstring).
kept = os.path.join("experiments", os.path.basename(os.path.normpath(grid)), "fidelity.jsonl")
per_cell = {}  # (dataset, shots, seed) -> {name: value}
if os.path.exists(kept):
    for line in open(kept):
        r = json.loads(line)
        per_cell[(r.pop("dataset"), r.pop("shots"), r.pop("seed"))] = r
for (ds, shots, seed), gen in sorted(generated.items()):
    # Near lambda's ends a row's target is its source: a cosine near 1 and rows word for word the
    # source mean the refined adaptor reproduces its sample (memorised it); mid-lambda is the mix.
    ends = [g for g in gen if min(g["lambda"], 1 - g["lambda"]) <= 0.05]
    mid = [g for g in gen if 0.3 <= g["lambda"] <= 0.7]
    if ends and mid:
        per_cell[(ds, shots, seed)] = {
            "label_without_content": sum(g["source_a"]["label"] != g["source_b"]["label"] and abs(g["content_lambda"] - g["lambda"]) >= 0.2 for g in gen) / len(gen),
            "ends": len(ends) / len(gen),
            "ends_cos": st.mean(g["cos_target"] for g in ends),
            "ends_verbatim": sum(map(is_copy, ends)) / len(ends),
            "mid_cos": st.mean(g["cos_target"] for g in mid),
        }
if os.path.isdir(os.path.dirname(kept)):
    tmp = kept + ".tmp"
    with open(tmp, "w") as f:
        for (ds, shots, seed), v in sorted(per_cell.items()):
            f.write(json.dumps({"dataset": ds, "shots": shots, "seed": seed, **v}) + "\n")
    os.replace(tmp, kept)

cells = collections.defaultdict(list)
for (ds, shots, seed), c in sorted(per_cell.items()):
    a = acc.get((ds, seed), {})
    if shots != 10 or "none" not in a or "inversed-mixup-keep" not in a:
        continue
    mismatch = c["label_without_content"]
    cells[ds].append((verbatim[(ds, seed)], mismatch, a["inversed-mixup-keep"] - a["none"], a["inversed-mixup-keep"] - a["duplicate"], a["inversed-mixup-keep"] - a["reconstruct"]))

print("| dataset | seeds | verbatim | label without content | keep - none | keep - duplicate | keep - reconstruct | corr(verbatim, keep - none) | corr(label without content, keep - none) |")
print("|---|---|---|---|---|---|---|---|---|")
for ds, c in sorted(cells.items()):
    v, m, d, dd, dr = (list(x) for x in zip(*c))
    print(f"| {ds} | {len(c)} | {100 * st.mean(v):.1f} % | {100 * st.mean(m):.1f} % | {st.mean(d):+.1f} (p {sign_flip(d):.3f}) | {st.mean(dd):+.1f} (p {sign_flip(dd):.3f}) | {st.mean(dr):+.1f} (p {sign_flip(dr):.3f}) | {corr(v, d):+.2f} | {corr(m, d):+.2f} |")


fid = collections.defaultdict(list)
for (ds, shots, _), c in sorted(per_cell.items()):
    fid[(ds, shots)].append((c["ends"], c["ends_cos"], c["ends_verbatim"], c["mid_cos"]))

print()
print("| dataset | shots | seeds | rows with lambda within 0.05 of an end | their cosine to target | their rows word for word a source | cosine to target at lambda in [0.3, 0.7] |")
print("|---|---|---|---|---|---|---|")
for (ds, shots), c in sorted(fid.items()):
    e, ce, v, cm = (st.mean(x) for x in zip(*c))
    print(f"| {ds} | {shots or 'all'} | {len(c)} | {100 * e:.0f} % | {ce:.3f} | {100 * v:.0f} % | {cm:.3f} |")
