#!/usr/bin/env bash
# Deep soft tokens against today's design at equal steps (issue 14): both arms continue the shipped
# adaptor (LoRA rank 16, step 9874) for STEPS steps on the stage-1 data
# (experiments/stage1/lora16.sh; run it once first for the data files and the embedding cache), same
# seed, batches and held-out slice, constant learning rate after a short warm-up; the second arm
# adds --deep-rank RANK --deep-scale SCALE. Compare the held-out losses in the two curve files
# (eval_loss) and the step times (seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
s=results/stage1
out=$s/deep-ab
steps=${STEPS:-200}
rank=${RANK:-64}
scale=${SCALE:-1}
mkdir -p $out
cargo build --release -q -p imix
common=(--input ../shared/data/benchmarks/{sst2,trec,subj,mr}/train.tsv $s/brown.txt $s/wiki-train.txt
  --emb-cache $s/lora16.safetensors.emb.safetensors --init assets/adaptor-minilm-smollm2.safetensors
  --lora-rank 16 --lora-alpha 32 --k 4 --steps "$steps" --lr 3e-4 --warmup 20 --lr-floor 1 --eval-every 50 --seed 0)
[ -s $out/base.safetensors ] || target/release/imix align "${common[@]}" --out $out/base.safetensors
[ -s $out/deep$rank-s$scale.safetensors ] || target/release/imix align "${common[@]}" --deep-rank "$rank" --deep-scale "$scale" --out $out/deep$rank-s$scale.safetensors
