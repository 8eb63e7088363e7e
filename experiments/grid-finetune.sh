#!/usr/bin/env bash
# The benchmark grid under the fine-tuned task model (RESULTS.md): every method of `imix-bench` on
# sst2, trec, subj and mr, 10 shots per class with 10 seeds, then 50 shots with 5 seeds, the shipped
# adaptor, the settings chosen on dev splits. Staged so that a partial run covers every dataset:
# seeds 0-3 at 10 shots first, then 4-9, then 50 shots. Long: run it in sittings with the same
# command, e.g. `bash experiments/grid-finetune.sh --max-minutes 120`; finished cells are never
# recomputed. The reports (summary.md with paired tests and generated claims, plots, results.jsonl,
# runs.jsonl naming commit, command and CPU of every sitting) are copied to
# experiments/grid-finetune/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imix-bench
out=results/grid-finetune
source experiments/grid-budget.sh
run() { bench_grid --out $out "$@"; }
run --shots 10 --seeds 4
run --shots 10 --seeds 10
run --shots 50 --seeds 5
mkdir -p experiments/grid-finetune
cp $out/{summary.md,results.jsonl,runs.jsonl,accuracy.svg,controllability.svg,intrusion.svg} experiments/grid-finetune/
