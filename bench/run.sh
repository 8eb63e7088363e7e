#!/usr/bin/env bash
# Side-by-side benchmark: each workload runs in its own process (so peak RSS is per workload),
# Rust then PyTorch, on the same machine in the same run. Results: bench/results.jsonl.
# Usage: bash bench/run.sh [PYTHON]   (PYTHON needs torch, transformers, gguf, accelerate, sentence-transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
cargo build --release -q -p imix --example bench
enc=$(target/release/imix fetch | sed -n 's/^encoder: *//p')
llm=$(target/release/imix fetch | sed -n 's/^llm: *//p')
: > bench/results.jsonl
"$py" bench/torch_bench.py peak "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
for w in train gen1 gen16 encode; do
  target/release/examples/bench "$w" | tee -a bench/results.jsonl
  "$py" bench/torch_bench.py "$w" "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
done
"$py" - <<'PY'
import json
rows = [json.loads(l) for l in open("bench/results.jsonl")]
by = {(r["workload"], r["side"]): r for r in rows}
# Peak f32 rate: cores x clock x 32 FLOP/cycle (AVX2: two 8-lane FMA pipes) at the nominal clock;
# the guest may boost above it, so the large-matmul rate is shown beside it.
import os
mhz = max(float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz"))
peak = os.cpu_count() * mhz / 1000 * 32
print(f"CPU peak ~ {peak:.0f} GFLOP/s at the nominal clock ({os.cpu_count()} cores x {mhz/1000:.2f} GHz x 32 FLOP/cycle); "
      f"PyTorch 2048^3 matmul: {by[('peak', 'pytorch')]['gflops']:.0f} GFLOP/s")
print("| workload | Rust median | PyTorch median | Rust/PyTorch time | Rust GFLOP/s (% peak) | PyTorch GFLOP/s (% peak) | Rust RSS MB | PyTorch RSS MB | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for w in ["train", "gen1", "gen16", "encode"]:
    r, p = by[(w, "rust")], by[(w, "pytorch")]
    gr, gp = r["flop"] / r["median_s"] / 1e9, r["flop"] / p["median_s"] / 1e9
    print(f"| {w} | {r['median_s']:.3f} s | {p['median_s']:.3f} s | {r['median_s']/p['median_s']:.2f} | {gr:.1f} ({100*gr/peak:.0f} %) | {gp:.1f} ({100*gp/peak:.0f} %) | {r['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} | {r['peak_rss_mb']/p['peak_rss_mb']:.2f} |")
PY
