#!/usr/bin/env bash
# A small dev gate of guided rows (issue 41): inversed-mixup-drop with every mix decoded by
# `guided:8` (encoder-guided beam search with the content-ratio term) instead of greedy, against
# `none`, `duplicate` and EDA, on the dev splits of sst2, trec, subj and mr at 10 shots, seeds
# 0-2, under the dev gate's protocol (experiments/dev-gate.sh). Its greedy counterpart is in
# experiments/dev-gate/.
# Resumable: run it again (same arguments) until it reports "0 computed now".
#   IMIX_BENCH_DATA=DIR bash experiments/gate-guided.sh [--max-minutes N]
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/gate-guided
keep=experiments/gate-guided
source experiments/gate-keep.sh
target/release/imix-bench --data "${IMIX_BENCH_DATA:?set IMIX_BENCH_DATA to the benchmarks folder}" \
  --datasets sst2,trec,subj,mr --shots 10 --seeds 3 --eval-split dev --max-test 500 \
  --warmup-finetune --final-from-warmup --methods none,duplicate,eda,inversed-mixup-drop --decode guided:8 \
  --out "$out" "$@"
