#!/usr/bin/env bash
# Soft tokens and adaptor width at equal CPU time (issue 14): today's design (frozen LLM, k = 4
# input soft tokens, hidden 1024) against k = 16 and hidden 4096, each trained from scratch on the
# stage-1 data (run experiments/stage1/lora16.sh once first for the data files and the embedding
# cache) for the same wall-clock budget (MINUTES, default 30) under the same planned schedule, then
# each inverts the 50 held-out Wikipedia lines. Compare held-out losses at equal seconds in the
# curves. Needs quiet cores: the budget is wall-clock time.
set -euo pipefail
cd "$(dirname "$0")/../.."
s=results/stage1
out=$s/capacity-ab
min=${MINUTES:-30}
mkdir -p $out
cargo build --release -q -p imix
for arm in "k4:--k 4" "k16:--k 16" "h4096:--k 4 --hidden 4096"; do
  name=${arm%%:*}
  # shellcheck disable=SC2086 # the flags of the arm are words
  [ -s $out/$name.safetensors ] || target/release/imix align \
    --input ../shared/data/benchmarks/{sst2,trec,subj,mr}/train.tsv $s/brown.txt $s/wiki-train.txt \
    --emb-cache $s/lora16.safetensors.emb.safetensors --out $out/$name.safetensors \
    --steps 4000 --lr 2e-3 --warmup 50 --eval-every 100 --seed 0 --max-minutes "$min" ${arm#*:}
  [ -s $out/invert-$name.jsonl ] || target/release/imix invert --input $s/wiki-heldout.txt \
    --adaptor $out/$name.safetensors --output $out/invert-$name.jsonl | tail -1
done
