#!/usr/bin/env bash
# Side-by-side benchmark: each workload runs in its own process (so peak RSS is per workload),
# Rust then PyTorch, on the same machine in the same run. Results: bench/results.jsonl.
# Usage: bash bench/run.sh [PYTHON]   (PYTHON needs torch, transformers, gguf, accelerate, sentence-transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
cargo build --release -q -p inversed-mixup --example bench
enc=$(target/release/imix fetch | sed -n 's/^encoder: *//p')
llm=$(target/release/imix fetch | sed -n 's/^llm: *//p')
: > bench/results.jsonl
for w in train gen1 gen16 encode; do
  target/release/examples/bench "$w" | tee -a bench/results.jsonl
  "$py" bench/torch_bench.py "$w" "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
done
"$py" - <<'PY'
import json
rows = [json.loads(l) for l in open("bench/results.jsonl")]
by = {(r["workload"], r["side"]): r for r in rows}
print("| workload | Rust median | PyTorch median | Rust/PyTorch time | Rust RSS MB | PyTorch RSS MB |")
print("|---|---|---|---|---|---|")
for w in ["train", "gen1", "gen16", "encode"]:
    r, p = by[(w, "rust")], by[(w, "pytorch")]
    print(f"| {w} | {r['median_s']:.3f} s | {p['median_s']:.3f} s | {r['median_s']/p['median_s']:.2f} | {r['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} |")
PY
