"""The mix-alignment run's rounds as a table: what each round kept, its training loss and step
time, and the held-out check after it (greedy decoding; round 0 is the adaptor it started from).
Rows: RUN.jsonl beside this file (default `rounds`, the first run), a copy of the run's
OUT.rounds.jsonl.
Usage: python3 experiments/mix-align/table.py [RUN [ROUNDS_JSONL]]   (with a file: copy it first)"""
import json, shutil, sys
from pathlib import Path

ROWS = Path(__file__).with_name(f"{sys.argv[1] if len(sys.argv) > 1 else 'rounds'}.jsonl")
if len(sys.argv) > 2:
    shutil.copyfile(sys.argv[2], ROWS)
rows = [json.loads(l) for l in ROWS.read_text().splitlines()]
print("| round | kept / mined | candidates/s | train loss | s/step | mid-λ cos to target | copies | gap | carries both | single cos | single F1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    train = f"{r['kept']} / {r['mined']} | {r['sentences_per_s']:.1f} | {r['train_loss']:.3f} | {r['step_seconds']:.2f}" if r["round"] else "start | – | – | –"
    print(f"| {r['round']} | {train} | {r['mid_cos_target']:.3f} | {r['mid_copies']:.1%} | {r['mid_gap']:.3f} | "
          f"{r['carries_both']:.0%} | {r['single_cosine']:.3f} | {r['single_token_f1']:.3f} |")
