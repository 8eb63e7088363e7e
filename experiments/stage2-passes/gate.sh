#!/usr/bin/env bash
# Dev gate of issue 41 item 2 (stage 2 adapts without memorising), SST-2 at 10 shots, seed 0:
# A the default warm-up (L_GEN every step: 60 steps of 8 = 24 passes over 20 sentences),
# B --gen-passes 2, C --gen-passes 2 --unlabeled (the train split's texts, labels unused).
# Each bundle's adaptor inverts 64 dev sentences it never saw (greedy) and its 20 labelled ones;
# augment at lambda 0.02/0.98 counts rows that are a source word for word. D, E, F are A, B, C
# with --finetune-encoder 0 (the grid's protocol; `imix invert` takes no bundle encoder, so only
# the augment columns).
# Usage: bash experiments/stage2-passes/gate.sh DATA_DIR   (the benchmarks folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?benchmarks folder}/sst2
out=experiments/stage2-passes/runs
mkdir -p $out
imix=target/release/imix
sed -n 2,65p $data/dev.tsv | cut -f2 > $out/dev64.txt
$imix invert --input $out/dev64.txt --decode greedy --out $out/shipped-dev.jsonl > $out/shipped-dev.txt
for cfg in A B C D E F; do
  case $cfg in
    A) flags=() ;;
    B) flags=(--gen-passes 2) ;;
    C) flags=(--gen-passes 2 --unlabeled $data/train.tsv) ;;
    D) flags=(--finetune-encoder 0) ;;
    E) flags=(--finetune-encoder 0 --gen-passes 2) ;;
    F) flags=(--finetune-encoder 0 --gen-passes 2 --unlabeled $data/train.tsv) ;;
  esac
  d=$out/$cfg
  [ -s $d/adaptor.safetensors ] || $imix warmup --data $data/train.tsv --shots 10 --out $d "${flags[@]}"
  [ -s $d/encoder.safetensors ] || [ -s $d/dev.jsonl ] || \
    $imix invert --input $out/dev64.txt --adaptor $d/adaptor.safetensors --decode greedy --out $d/dev.jsonl > $d/dev.txt
  [ -s $d/aug.jsonl ] || $imix augment --model $d --input $data/train.tsv --shots 10 --lambda grid:0.02,0.98 --out $d/aug.jsonl > $d/aug.txt
  echo "== $cfg done"
done
python3 experiments/stage2-passes/table.py $out
