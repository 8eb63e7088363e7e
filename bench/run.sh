#!/usr/bin/env bash
# Side-by-side benchmark: each workload runs in its own process (so peak RSS is per workload),
# Rust then PyTorch, on the same machine in the same run. Results: bench/results.jsonl.
# Usage: bash bench/run.sh [PYTHON]   (PYTHON needs torch, transformers, gguf, accelerate, sentence-transformers)
# The table starts with the CPU model, its SIMD flags, the instruction set our kernels ran
# (IMIX_SIMD caps it) and the one PyTorch reports (ATEN_CPU_CAPABILITY caps it).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
# BENCH_BIN: a bench binary built elsewhere (e.g. without gemm's AVX-512 kernels, to time the
# AVX2 code path on an AVX-512 machine together with IMIX_SIMD=avx2).
bench=${BENCH_BIN:-target/release/examples/bench}
[ -n "${BENCH_BIN:-}" ] || cargo build --release -q -p imix --example bench
enc=$(target/release/imix fetch | sed -n 's/^encoder: *//p')
llm=$(target/release/imix fetch | sed -n 's/^llm: *//p')
: > bench/results.jsonl
"$py" bench/torch_bench.py peak "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
for w in train train-lora gen1 gen16 encode finetune; do
  "$bench" "$w" | tee -a bench/results.jsonl
  "$py" bench/torch_bench.py "$w" "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
done
"$py" - <<'PY'
import json
rows = [json.loads(l) for l in open("bench/results.jsonl")]
by = {(r["workload"], r["side"]): r for r in rows}
# Peak f32 rate: cores x clock x 32 FLOP/cycle (AVX2: two 8-lane FMA pipes) at the nominal clock;
# the guest may boost above it, so the large-matmul rate is shown beside it.
import os
info = open("/proc/cpuinfo").read().splitlines()
field = lambda k: next((l.split(":", 1)[1].strip() for l in info if l.startswith(k)), "?")
flags = set(field("flags").split())
simd = [f for f in ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "asimd"] if f in flags]
mhz = max(float(l.split(":")[1]) for l in info if l.startswith("cpu MHz"))
# f32 FLOP/cycle per core: two FMA pipes of 8 lanes (AVX2) or 16 lanes (AVX-512, when our kernels
# ran it; cores with one 512-bit pipe reach half of that).
fpc = 64 if by[("train", "rust")].get("simd") == "avx512" else 32
peak = os.cpu_count() * mhz / 1000 * fpc
print(f"CPU: {field('model name')} ({os.cpu_count()} cores); SIMD flags: {' '.join(simd)}; "
      f"our kernels ran: {by[('train', 'rust')].get('simd', '?')}; PyTorch: {by[('peak', 'pytorch')].get('simd', '?')}")
print(f"CPU peak ~ {peak:.0f} GFLOP/s at the nominal clock ({os.cpu_count()} cores x {mhz/1000:.2f} GHz x {fpc} FLOP/cycle); "
      f"PyTorch 2048^3 matmul: {by[('peak', 'pytorch')]['gflops']:.0f} GFLOP/s")
print("| workload | Rust median | PyTorch median | Rust/PyTorch time | Rust GFLOP/s (% peak) | PyTorch GFLOP/s (% peak) | Rust RSS MB | PyTorch RSS MB | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for w in ["train", "train-lora", "gen1", "gen16", "encode", "finetune"]:
    r, p = by[(w, "rust")], by[(w, "pytorch")]
    gr, gp = r["flop"] / r["median_s"] / 1e9, r["flop"] / p["median_s"] / 1e9
    print(f"| {w} | {r['median_s']:.3f} s | {p['median_s']:.3f} s | {r['median_s']/p['median_s']:.2f} | {gr:.1f} ({100*gr/peak:.0f} %) | {gp:.1f} ({100*gp/peak:.0f} %) | {r['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} | {r['peak_rss_mb']/p['peak_rss_mb']:.2f} |")
PY
