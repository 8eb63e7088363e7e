#!/usr/bin/env bash
# Issue 15's whole grid with the adaptor the project ships, under the paper's whole stage 2
# (--warmup-finetune --final-from-warmup: the warm-up fine-tunes the task encoder while it refines
# the adaptor, stage 3 mixes and judges in that encoder's space, and every method's final model,
# the baselines' too, starts from the warmed-up encoder with a fresh head). The methods the issue
# names: none, duplicate, EDA, embedding Mixup, retrieval Mixup, reconstruct, inversedMixup
# keep / drop / relabel. Staged so that a partial run covers every dataset: 10 shots seeds 0-3,
# then 4-9, then 50 shots seeds 0-1, then 2-4, then the fully supervised trec and sst2 (3 seeds,
# 3 epochs, 1 row per original, fewer methods: a seed of sst2 decodes 6920 sentences).
#
# Its folder is named after the adaptor (experiments/grid-<first 8 hex of its sha256>), so a grid
# can never mix two adaptors, and it lives in git: a session's machine does not keep results/, so
# each sitting starts from the committed rows and copies its own back (commit them). Run in
# sittings: `bash experiments/grid-stage2.sh --max-minutes 120`; finished cells are never
# recomputed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imix-bench
adaptor=${ADAPTOR:-assets/adaptor-minilm-smollm2.safetensors}
grid=grid-$(sha256sum "$adaptor" | cut -c1-8)
out=results/$grid
keep=experiments/$grid
mkdir -p "$out" "$keep"
if [ ! -s "$out/results.jsonl" ] && [ -s "$keep/results.jsonl" ]; then cp "$keep"/{results,runs}.jsonl "$out"/; fi
save() { cp "$out"/results.jsonl "$out"/runs.jsonl "$out"/*.md "$out"/*.svg "$keep"/ 2>/dev/null || true; }
trap save EXIT
source experiments/grid-budget.sh
few="none,eda,inversed-mixup-keep,inversed-mixup-drop,inversed-mixup-relabel,duplicate,embed-mixup,retrieval-mixup,reconstruct"
run() { bench_grid --warmup-finetune --final-from-warmup --adaptor "$adaptor" --out "$out" "$@"; }
run --shots 10 --seeds 4 --methods "$few"
run --shots 10 --seeds 10 --methods "$few"
run --shots 50 --seeds 2 --methods "$few"
run --shots 50 --seeds 5 --methods "$few"
budget_args=()
m=$(left)
if [ -n "$budget" ]; then budget_args=(--max-minutes "$(awk -v m="$m" 'BEGIN { print (m < 0 ? 0 : m) }')"); fi
target/release/imix-bench --data "${IMIX_BENCH_DATA:-../shared/data/benchmarks}" --datasets trec,sst2 --shots all --seeds 3 \
  --epochs 3 --per-example 1 --methods none,eda,embed-mixup,inversed-mixup-keep,inversed-mixup-drop \
  --warmup-finetune --final-from-warmup --adaptor "$adaptor" --out "$out" "${budget_args[@]}"
