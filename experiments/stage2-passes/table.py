"""The gate's rows and table. From RUNS_DIR (the gate's outputs, not committed: they hold the
benchmark's sentences) it writes rows.jsonl beside this file, numbers only: per configuration,
greedy inversion of 64 dev sentences the warm-up never saw (MiniLM cosine, token F1, exact) and, at
lambda 0.02/0.98, the rows that are their dominant source word for word and those rows' cosine to
their mixed target. Without RUNS_DIR it prints the table from rows.jsonl.
Usage: python3 experiments/stage2-passes/table.py [RUNS_DIR]"""
import json, sys
from pathlib import Path

ROWS = Path(__file__).with_name("rows.jsonl")
NAMES = {"shipped": "none (shipped adaptor)", "A": "default (L_GEN every step: 24 passes)", "B": "--gen-passes 2",
         "C": "--gen-passes 2 --unlabeled train texts", "D": "--finetune-encoder 0",
         "E": "--finetune-encoder 0 --gen-passes 2", "F": "--finetune-encoder 0 --gen-passes 2 --unlabeled train texts"}
norm = lambda s: " ".join(s.lower().split())


def inv(path):
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    n = len(rows)
    return {"dev_n": n, "dev_cosine": sum(r["cosine"] for r in rows) / n,
            "dev_token_f1": sum(r["token_f1"] for r in rows) / n, "dev_exact": sum(r["exact"] for r in rows) / n}


def collect(runs):
    out = [{"config": "shipped", **inv(runs / "shipped-dev.jsonl")}]
    for cfg in "ABCDEF":
        d = runs / cfg
        if not (d / "aug.jsonl").exists():
            continue
        row = {"config": cfg}
        if (d / "dev.jsonl").exists():
            row.update(inv(d / "dev.jsonl"))
        rows = [json.loads(l) for l in (d / "aug.jsonl").read_text().splitlines()]
        ends = [r for r in rows if min(r["lambda"], 1 - r["lambda"]) <= 0.05]
        dom = lambda r: r["source_a"]["text"] if r["lambda"] >= 0.5 else r["source_b"]["text"]
        row["end_rows"] = len(ends)
        row["end_copies"] = sum(norm(r["text"]) == norm(dom(r)) for r in ends)
        row["end_cos_target"] = sum(r["cos_target"] for r in ends) / max(len(ends), 1)
        out.append(row)
    ROWS.write_text("".join(json.dumps(r) + "\n" for r in out))


def table():
    print("| warm-up (SST-2, 10 shots, seed 0) | dev cosine | dev token F1 | dev exact | end-λ rows a source word for word | their cosine to target |")
    print("|---|---|---|---|---|---|")
    for r in map(json.loads, ROWS.read_text().splitlines()):
        dev = f"{r['dev_cosine']:.3f} | {r['dev_token_f1']:.3f} | {r['dev_exact']:.1%}" if "dev_cosine" in r else "– | – | –"
        ends = f"{r['end_copies']}/{r['end_rows']} ({r['end_copies'] / max(r['end_rows'], 1):.0%}) | {r['end_cos_target']:.3f}" if "end_rows" in r else "– | –"
        print(f"| {NAMES[r['config']]} | {dev} | {ends} |")


if len(sys.argv) > 1:
    collect(Path(sys.argv[1]))
table()
