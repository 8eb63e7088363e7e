#!/usr/bin/env bash
# Guided decoding against correct:16 and greedy on sentences and pairs that no
# training saw: the 64 lines `imix align` and `imix mix-align` hold out of results/stage1/wiki-train.txt.
# Dev (chosen on): lines 1-32 alone, and pairs (i, 32+i) for i < 20 at lambda 0.3/0.5/0.7.
# Confirmation: lines 33-64 alone (also scored by the independent judge encoder), and pairs
# (20+i, 52+i) for i < 12. Rows go to OUT (default /tmp/guided), with OUT/times.tsv.
# Usage: bash experiments/guided/run.sh [OUT] [JUDGE_DIR]   (JUDGE_DIR: experiments/judge/paraphrase_minilm.py)
# SETS, SINGLES and PAIRS (space-separated) narrow the run, e.g. SETS=dev SINGLES= PAIRS=guided:16.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/guided}
judge=${2:-}
mkdir -p "$out"
imix=target/release/imix
# The held-out lines come from align's pool file, which experiments/stage1/data.sh writes.
if [ ! -s results/stage1/wiki-train.txt ]; then
  mkdir -p results/stage1
  head -n -50 ../shared/data/unlabeled/wiki.txt > results/stage1/wiki-train.txt
fi
python3 - "$out" <<'PY'
import sys
out = sys.argv[1]
lines = [l.strip() for l in open("results/stage1/wiki-train.txt") if l.strip()][-64:]
open(f"{out}/singles-dev.txt", "w").write("\n".join(lines[:32]) + "\n")
open(f"{out}/singles-confirm.txt", "w").write("\n".join(lines[32:]) + "\n")
for name, pairs in (("dev", [(i, 32 + i) for i in range(20)]), ("confirm", [(20 + i, 52 + i) for i in range(12)])):
    with open(f"{out}/pairs-{name}.tsv", "w") as f:
        f.write("a\tb\n" + "".join(f"{lines[a]}\t{lines[b]}\n" for a, b in pairs))
PY
run() { # set decode args...
  local set=$1 decode=$2; shift 2
  # Single sentences weigh the likelihood by GUIDED_LM_WEIGHT (0.1; earlier rows used 0.05).
  local label=$decode file="$set-${decode/:/}.jsonl"
  if [[ $set == singles-* && $decode == guided:* ]]; then
    label="$decode, LM weight 0.1" file="$set-${decode/:/}-lm0.1.jsonl"
  fi
  local t0; t0=$(date +%s.%N)
  "$imix" invert "$@" --decode "$decode" --out "$out/$file" 2>/dev/null | tail -1
  printf '%s\t%s\t%s\t%s\n' "$set" "$label" "$(echo "$(date +%s.%N) - $t0" | bc)" "$file" >> "$out/times.tsv"
}
j=(); [ -n "$judge" ] && j=(--judge-encoder "$judge")
for set in ${SETS-dev confirm}; do
  for d in ${SINGLES-correct:16 guided:8 guided:16}; do run "singles-$set" "$d" --input "$out/singles-$set.txt" "${j[@]}"; done
  for d in ${PAIRS-greedy correct:16 guided:8}; do run "pairs-$set" "$d" --mixes --input "$out/pairs-$set.tsv" --lambdas 0.3,0.5,0.7; done
done
python3 experiments/guided/table.py collect "$out"
