#!/usr/bin/env python3
"""The benchmark tables of BENCHMARKS.md, generated from rows: one table per CPU family and kernel
path (the newest run of each), newest first.

A row is one side (rust or pytorch) of one workload, as bench/run.sh writes it; the pytorch "peak"
row holds its 2048^3 matmul rate. bench/results.jsonl holds the latest run, whose "machine" row
(CPU, flags, clock, date) applies to every row of the file; bench/history.jsonl holds earlier runs,
each row carrying those fields itself (earlier tables transcribed to the millisecond, so a ratio
may differ from the original table's in its last digit). Python 3 standard library only.

    python3 bench/tables.py            # print the tables
    python3 bench/tables.py --write    # rewrite them in BENCHMARKS.md, between its markers
    python3 bench/tables.py --latest   # only the table of bench/results.jsonl
    python3 bench/tables.py --archive  # append results.jsonl's rows, stamped, to history.jsonl
"""
import json
import pathlib
import re
import sys
import textwrap

BENCH = pathlib.Path(__file__).resolve().parent
RESULTS, HISTORY, DOC = BENCH / "results.jsonl", BENCH / "history.jsonl", BENCH.parent / "BENCHMARKS.md"
BEGIN, END = "<!-- BEGIN generated: python3 bench/tables.py -->", "<!-- END generated -->"
MACHINE = ["cpu", "family", "flags", "cores", "ghz", "peak_gflops", "kernels", "pytorch", "date", "note",
           "vendor", "cpu_family", "model"]


def amd_core(m):
    """The AMD core generation from cpuinfo's family and model (AMD's model ranges per family)."""
    fam, model = m.get("cpu_family"), m.get("model")
    if m.get("vendor") != "AuthenticAMD" or model is None:
        return None
    if fam == 23:
        return "zen1" if model < 0x30 else "zen2"
    if fam == 25:
        return "zen4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF else "zen3"
    return None


def flop_per_cycle(m):
    """f32 FLOP per cycle and core of the instruction set our kernels ran, from the CPU's FMA pipes:
    Zen 1 has two 128-bit FMA pipes (16 with AVX2); Zen 2 and 3 and Intel since Haswell two 256-bit
    ones (32); with AVX-512, Zen 4 splits each 512-bit op over its 256-bit pipes (32), while Zen 5
    and Intel's server cores (two 512-bit FMA pipes on the Gold and Platinum parts) reach 64."""
    core = amd_core(m)
    if m.get("kernels") == "avx512":
        return 32 if core == "zen4" else 64
    if m.get("kernels") == "avx2":
        return 16 if core == "zen1" else 32
    return 8  # scalar code: 4-lane SSE multiply and add on two pipes at best
WORKLOADS = ["train", "train-lora", "gen1", "gen16", "encode", "finetune", "correct", "augment", "mix-align"]
# Workloads counted in items (sentences decoded, rows made) rather than in FLOPs.
UNITS = {"correct": "sentences", "augment": "rows", "encode": "sentences"}
# cpuinfo (vendor, family[, model]) -> microarchitecture, for machine rows that do not name one.
ARCH = {("AuthenticAMD", 23): "Zen/Zen 2", ("AuthenticAMD", 25): "Zen 3/Zen 4", ("AuthenticAMD", 26): "Zen 5",
        ("AuthenticAMD", 23, "zen1"): "Zen 1", ("AuthenticAMD", 23, "zen2"): "Zen 2",
        ("AuthenticAMD", 25, "zen3"): "Zen 3", ("AuthenticAMD", 25, "zen4"): "Zen 4",
        ("GenuineIntel", 6, 85): "Skylake-SP/Cascade Lake", ("GenuineIntel", 6, 106): "Ice Lake-SP",
        ("GenuineIntel", 6, 143): "Sapphire Rapids", ("GenuineIntel", 6, 207): "Emerald Rapids"}


def read(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def stamped(rows):
    """The rows of a run.sh file with its machine row's fields (and the paths each side ran)."""
    machine = next((r for r in rows if r.get("side") == "machine"), {})
    rows = [r for r in rows if r.get("side") != "machine"]
    m = {k: machine[k] for k in MACHINE if k in machine}
    if "family" not in m:
        key = (machine.get("vendor"), machine.get("cpu_family"))
        m["family"] = (ARCH.get(key + (machine.get("model"),)) or ARCH.get(key + (amd_core(machine),)) or ARCH.get(key)
                       or f"family {key[1]} model {machine.get('model')}")
    m.setdefault("vendor", machine.get("vendor"))
    m.setdefault("cpu_family", machine.get("cpu_family"))
    m.setdefault("model", machine.get("model"))
    m.setdefault("kernels", next((r["simd"] for r in rows if r.get("side") == "rust" and "simd" in r), "?"))
    m.setdefault("pytorch", next((r["simd"] for r in rows if r.get("workload") == "peak" and "simd" in r), "?"))
    return [{**r, **m} for r in rows]


def runs(rows):
    """The newest run per (CPU, family, kernel path), newest first; per side and workload the last row wins."""
    by = {}
    for r in rows:
        by.setdefault((r.get("cpu"), r.get("family"), r.get("kernels"), r.get("date")), []).append(r)
    newest = {}
    for key, rs in by.items():  # dict order is file order, so a later run of the same date wins
        if key[:3] not in newest or (key[3] or "") >= (newest[key[:3]][0][3] or ""):
            newest[key[:3]] = (key, rs)
    return sorted(newest.values(), key=lambda kr: kr[0][3] or "", reverse=True)


def table(rows):
    m = rows[-1]
    by = {(r["workload"], r["side"]): r for r in rows}
    fpc = flop_per_cycle(m)
    peak = m.get("peak_gflops") or m["cores"] * m["ghz"] * fpc
    mm = by.get(("peak", "pytorch"), {}).get("gflops")
    about = (f"PyTorch ran {m['pytorch']}. Peak ~{peak:.0f} GFLOP/s at the nominal clock "
             f"({m['cores']} cores x {m['ghz']:.2f} GHz x {fpc} FLOP/cycle)"
             + (f"; PyTorch's 2048^3 matmul: {mm:.0f} GFLOP/s." if mm else ".") + (" " + m["note"] if m.get("note") else ""))
    out = [f"### {m['date']}: {m['cpu']} ({m['family']}), {m['cores']} cores; flags {' '.join(m['flags'])}; our kernels "
           f"{m['kernels']}", "",
           *textwrap.wrap(about, 100, break_on_hyphens=False), "",
           "| workload | Rust median | PyTorch median | Rust/PyTorch time | Rust GFLOP/s (% peak) | "
            "PyTorch GFLOP/s (% peak) | Rust RSS MB | PyTorch RSS MB | RSS ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for w in WORKLOADS:
        if (w, "rust") not in by or (w, "pytorch") not in by:
            continue
        r, p = by[(w, "rust")], by[(w, "pytorch")]
        gr, gp = r["flop"] / r["median_s"] / 1e9, r["flop"] / p["median_s"] / 1e9
        rate = lambda g: f"{g:.1f} ({100 * g / peak:.0f} %)" if g else "–"
        name = w
        if w in UNITS and "items_per_s" in r and "items_per_s" in p:
            name = f"{w} ({r['items_per_s']:.2f} vs {p['items_per_s']:.2f} {UNITS[w]}/s)"
        out.append(f"| {name} | {r['median_s']:.3f} s | {p['median_s']:.3f} s | {r['median_s'] / p['median_s']:.2f} | "
                   f"{rate(gr)} | {rate(gp)} | {r['peak_rss_mb']:.0f} | "
                   f"{p['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / p['peak_rss_mb']:.2f} |")
    return "\n".join(out)


def main(args):
    latest = stamped(read(RESULTS))
    if "--archive" in args:
        old = read(HISTORY)
        new = [r for r in latest if r not in old]
        with HISTORY.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
        print(f"{HISTORY.name}: {len(new)} rows appended")
        return
    text = "\n\n".join(table(rs) for _, rs in runs(latest if "--latest" in args else read(HISTORY) + latest))
    if "--write" not in args:
        print(text)
        return
    doc = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        sys.exit(f"{DOC.name}: no '{BEGIN}' ... '{END}' block to fill")
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(pattern.sub(lambda _: f"{BEGIN}\n\n{text}\n\n{END}", doc))
    tmp.replace(DOC)
    print(f"{DOC.name}: {text.count('### ')} tables written")


if __name__ == "__main__":
    main(sys.argv[1:])
