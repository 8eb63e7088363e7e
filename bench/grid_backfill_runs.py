"""Names the run of every row of a grid folder written before rows recorded theirs.

`imix bench` appends rows cell by cell and records, per run, a "started" record and a "finished"
one with `cells_computed`, so the rows without a `run` are assigned in file order: the first
`cells_computed` cells (runs of consecutive rows of one dataset, shots and seed) to the first run
that computed any, and so on. It refuses when the counts do not add up (a killed run, whose count
is unknown), and leaves rows that already name their run alone. Run once per folder, then let
`imix bench` rewrite the report (e.g. the next sitting, or one with --max-minutes 0).

    python3 bench/grid_backfill_runs.py results/grid-2f88c450
"""

import json
import pathlib
import sys


def main() -> None:
    folder = pathlib.Path(sys.argv[1])
    records = [json.loads(l) for l in (folder / "runs.jsonl").read_text().splitlines() if l.strip()]
    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines() if l.strip()]
    named = {r["run"] for r in rows if "run" in r}
    runs, open_run = [], None
    for r in records:
        if r["event"] == "started":
            open_run = r["unix_time"]
        elif r["event"] == "finished" and open_run is not None:
            if r["cells_computed"] > 0 and open_run not in named:
                runs.append((open_run, r["cells_computed"]))
            open_run = None
    cells, last = [], None
    for i, r in enumerate(rows):
        if "run" in r:
            last = None
            continue
        key = (r["dataset"], r["shots"], r["seed"])
        if key != last:
            cells.append([])
            last = key
        cells[-1].append(i)
    if sum(n for _, n in runs) != len(cells):
        sys.exit(f"{folder}: {len(cells)} cells without a run, but the finished runs computed {sum(n for _, n in runs)}; not assigning")
    it = iter(cells)
    for run, n in runs:
        for _ in range(n):
            for i in next(it):
                rows[i]["run"] = run
    tmp = folder / "results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(folder / "results.jsonl")
    print(f"{folder}: {len(cells)} cells assigned to {len(runs)} runs")


if __name__ == "__main__":
    main()
