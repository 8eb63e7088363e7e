#!/usr/bin/env bash
# The grid's ten-shot cells under the paper's whole stage 2 (RESULTS.md): stage 2 fine-tunes the
# task encoder while it refines the adaptor (--warmup-finetune), and every method's final task model
# starts from that warmed-up encoder (--final-from-warmup), the baselines' too. Same folder as
# experiments/grid-finetune.sh (its rows are marked and kept apart), methods none, EDA and
# inversedMixup keep/drop (keep and drop tie on the dev splits under this protocol: 74.6 vs 74.5)
# and sampled (every mix decoded by seeded top-p sampling: the best inversedMixup variant on the dev
# splits under this protocol, 75.3 against keep 74.6 and EDA 74.8 over the four; RESULTS.md), then
# the other baselines and policies (duplicate, embedding Mixup, retrieval Mixup, reconstruct,
# relabel, content labels). Staged: seeds 0-3 of every dataset, then 4-9. Run it in sittings: `bash
# experiments/grid-warm.sh --max-minutes 120`. Its report is summary-final-from-warmup.md (the
# grid's own stays summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p imix-bench
out=results/grid-finetune
source experiments/grid-budget.sh
run() { bench_grid --methods none,eda,inversed-mixup-keep,inversed-mixup-drop,inversed-mixup-sampled,duplicate,embed-mixup,retrieval-mixup,reconstruct,inversed-mixup-relabel,inversed-mixup-content --warmup-finetune --final-from-warmup --out $out "$@"; }
run --shots 10 --seeds 4
run --shots 10 --seeds 10
mkdir -p experiments/grid-finetune
cp $out/{summary-final-from-warmup.md,results.jsonl,runs.jsonl,accuracy-final-from-warmup.svg,controllability.svg,intrusion.svg} experiments/grid-finetune/
