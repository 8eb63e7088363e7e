"""Wall time of each method of the dev gate, from its rows (the seconds each row records: a
generating method's include its cell's warm-up and its generation, which methods sharing one
generation each count in full), as the markdown table RESULTS.md quotes.

    python3 experiments/gate_times.py [experiments/dev-gate/results.jsonl]
"""

import collections
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "experiments/dev-gate/results.jsonl"
rows = [json.loads(line) for line in open(path)]
cells = collections.defaultdict(set)
seconds = collections.Counter()
for r in rows:
    cells[r["method"]].add((r["dataset"], r["shots"], r["seed"]))
    seconds[r["method"]] += r["seconds"]
total = len({(r["dataset"], r["shots"], r["seed"]) for r in rows})
print(f"| method | cells | minutes | minutes per cell | projected for 40 cells |")
print("|---|---|---|---|---|")
for m in cells:
    n = len(cells[m])
    print(f"| {m} | {n} | {seconds[m] / 60:.1f} | {seconds[m] / 60 / n:.2f} | {40 * seconds[m] / 60 / n:.0f} |")
print(f"\n{total} cells of 40 so far.")
