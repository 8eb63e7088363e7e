#!/usr/bin/env bash
# Side-by-side benchmark: each workload runs in its own process (so peak RSS is per workload),
# Rust then PyTorch, on the same machine in the same run. Rows: bench/results.jsonl, a "machine"
# row first (CPU, SIMD flags, clock, date); the table (bench/tables.py) names the instruction set
# our kernels ran (IMIX_SIMD caps it) and the one PyTorch reports (ATEN_CPU_CAPABILITY caps it).
# Usage: bash bench/run.sh [PYTHON]   (PYTHON needs torch, transformers, gguf, accelerate,
# sentence-transformers and peft)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
# BENCH_BIN: a bench binary built elsewhere (e.g. without gemm's AVX-512 kernels, to time the
# AVX2 code path on an AVX-512 machine together with IMIX_SIMD=avx2).
bench=${BENCH_BIN:-target/release/examples/bench}
[ -n "${BENCH_BIN:-}" ] || cargo build --release -q -p imix --example bench
enc=$(target/release/imix fetch | sed -n 's/^encoder: *//p')
llm=$(target/release/imix fetch | sed -n 's/^llm: *//p')
# The previous run's rows go to bench/history.jsonl (BENCHMARKS.md keeps the newest run per CPU).
[ -s bench/results.jsonl ] && python3 bench/tables.py --archive
python3 - > bench/results.jsonl <<'PY'
import json, os, time
info = open("/proc/cpuinfo").read().splitlines()
field = lambda k: next((l.split(":", 1)[1].strip() for l in info if l.startswith(k)), "?")
flags = set(field("flags").split())
simd = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "asimd"]
# The clock: the largest "cpu MHz" (nominal; a guest may boost above it).
mhz = max((float(l.split(":")[1]) for l in info if l.startswith("cpu MHz")), default=0.0)
print(json.dumps({"side": "machine", "cpu": field("model name"), "vendor": field("vendor_id"),
                  "cpu_family": int(field("cpu family")) if field("cpu family").isdigit() else None,
                  "model": int(field("model\t")) if field("model\t").isdigit() else None,
                  "flags": [f for f in simd if f in flags], "cores": os.cpu_count(), "ghz": round(mhz / 1000, 2),
                  "date": time.strftime("%Y-%m-%d", time.gmtime())}))
PY
"$py" bench/torch_bench.py peak "$enc" "$llm" 2>/dev/null | tee -a bench/results.jsonl
adaptor=$("$bench" adaptor-path)
for w in train train-lora gen1 gen16 encode finetune correct augment mix-align; do
  "$bench" "$w" | tee -a bench/results.jsonl
  "$py" bench/torch_bench.py "$w" "$enc" "$llm" "$adaptor" 2>/dev/null | tee -a bench/results.jsonl
done
python3 bench/tables.py --latest
echo "(python3 bench/tables.py --write puts it into BENCHMARKS.md)"
