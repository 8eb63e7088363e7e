#!/usr/bin/env bash
# The fully supervised setting of the fine-tuned grid (RESULTS.md): the whole train split of trec
# and sst2, the best of 3 epochs chosen on each dataset's dev.tsv, 3 seeds, 1 augmented row per
# original, into the same folder as experiments/grid-finetune.sh (its cells are `shots: all`, apart
# from the few-shot ones). Long (a seed of sst2 decodes 6920 sentences and fine-tunes five models on
# 7k-14k rows): run it in sittings with the same command, e.g. `bash experiments/grid-full.sh
# --max-minutes 120`; finished cells are never recomputed. Reports are copied to
# experiments/grid-finetune/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imix-bench
out=results/grid-finetune
budget=()
if [ "${1:-}" = "--max-minutes" ]; then budget=(--max-minutes "$2"); fi
target/release/imix-bench --data "${IMIX_BENCH_DATA:-../shared/data/benchmarks}" --datasets trec,sst2 --shots all --seeds 3 \
  --epochs 3 --per-example 1 --methods none,eda,embed-mixup,inversed-mixup-keep,inversed-mixup-drop \
  --out $out "${budget[@]}"
mkdir -p experiments/grid-finetune
cp $out/{summary.md,results.jsonl,runs.jsonl,accuracy.svg,controllability.svg,intrusion.svg} experiments/grid-finetune/
