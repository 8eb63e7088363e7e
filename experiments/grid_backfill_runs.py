"""Names the run of every row of a grid folder written before rows recorded theirs.

`imix-bench` appends rows cell by cell and records, per run, a "started" record and a "finished"
one with `cells_computed`, so the rows without a `run` are assigned in file order: the first
`cells_computed` cells (runs of consecutive rows of one dataset, shots and seed) to the first run
that computed any, and so on. A killed run (no "finished" record) gets the cells the others do not
account for, when it is the only one; otherwise, or when the counts do not add up, it refuses.
Rows that already name their run are left alone. Run once per folder, then let
`imix-bench` rewrite the report (e.g. the next sitting, or one with --max-minutes 0).

    python3 experiments/grid_backfill_runs.py results/grid-2f88c450
"""

import json
import pathlib
import sys


def main() -> None:
    folder = pathlib.Path(sys.argv[1])
    records = [json.loads(l) for l in (folder / "runs.jsonl").read_text().splitlines() if l.strip()]
    rows = [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines() if l.strip()]
    named = {r["run"] for r in rows if "run" in r}
    # (run, cells computed; None for a killed run, which wrote no "finished" record)
    runs, open_run = [], None
    for r in records:
        if r["event"] == "started":
            if open_run is not None and open_run not in named:
                runs.append((open_run, None))
            open_run = r["unix_time"]
        elif r["event"] == "finished" and open_run is not None:
            if r["cells_computed"] > 0 and open_run not in named:
                runs.append((open_run, r["cells_computed"]))
            open_run = None
    if open_run is not None and open_run not in named:
        runs.append((open_run, None))
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
    known = sum(n for _, n in runs if n is not None)
    killed = [i for i, (_, n) in enumerate(runs) if n is None]
    if len(killed) == 1 and known <= len(cells):
        # The one killed run computed what the others did not (0 when it stopped inside its first cell).
        runs[killed[0]] = (runs[killed[0]][0], len(cells) - known)
    elif killed or known != len(cells):
        sys.exit(f"{folder}: {len(cells)} cells without a run, the finished runs computed {known}, {len(killed)} killed runs; not assigning")
    runs = [(r, n) for r, n in runs if n > 0]
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
