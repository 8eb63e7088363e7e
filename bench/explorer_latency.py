#!/usr/bin/env python3
"""Latency of the explorer page (`imix serve`) as a person feels it, in headless Chromium: page load
(navigation start to the load event, then to the first decoded sentence on screen) and slider move
to new sentence (greedy; the page's 150 ms debounce included), median and 95th percentile.

Each run appends one row (with the CPU: model name, family, model, AVX-512 flags) to
bench/explorer.jsonl; --write renders the rows into BENCHMARKS.md between its markers. Needs
selenium (crates/imix-py/requirements-test.txt) and Debian's chromium and chromium-driver; measure
on a quiet machine.

    python bench/explorer_latency.py [--moves 40] [--loads 5]    # measure, append a row
    python bench/explorer_latency.py --write                     # the table in BENCHMARKS.md
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
ROWS, DOC = BENCH / "explorer.jsonl", ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- BEGIN generated: python3 bench/explorer_latency.py --write -->", "<!-- END explorer -->"
A = "A warm, funny and moving film."
B = "The service was slow and the food was cold."


def cpu():
    info = dict(
        (k.strip(), v.strip())
        for k, v in (l.split(":", 1) for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in l)
    )
    flags = sorted(f for f in info.get("Flags", "").split() if f.startswith("avx512") or f.startswith("amx"))
    return {"cpu": info.get("Model name"), "cpu_family": info.get("CPU family"), "model": info.get("Model"),
            "cores": os.cpu_count(), "flags": flags}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def measure(moves, loads):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    binary = os.environ.get("IMIX_BIN", str(ROOT / "target" / "release" / "imix"))
    srv = subprocess.Popen([binary, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = re.search(r"http://\S+/", srv.stdout.readline()).group(0)
    opt = Options()
    opt.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage"]:
        opt.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opt)
    try:
        load, first = [], []
        for _ in range(loads):
            t0 = time.perf_counter()
            d.get(url)
            load.append(d.execute_script("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;") / 1e3)
            WebDriverWait(d, 60, poll_frequency=0.005).until(lambda d: d.find_element(By.ID, "out").text)
            first.append(time.perf_counter() - t0)
        d.execute_script("for (const [k, v] of [['a', arguments[0]], ['b', arguments[1]]]) { const e = document.getElementById(k);"
                         " e.value = v; e.dispatchEvent(new Event('change')); }", A, B)
        lat = []
        for i in range(moves + 1):
            lam = [0.1, 0.3, 0.5, 0.7, 0.9, 0.75, 0.25, 0.6][i % 8]
            t0 = time.perf_counter()
            d.execute_script("const e = document.getElementById('lambda'); e.value = arguments[0]; e.dispatchEvent(new Event('input'));", str(lam))
            WebDriverWait(d, 60, poll_frequency=0.005).until(
                lambda d: (v := d.find_element(By.ID, "out").get_attribute("data-lambda")) is not None and float(v) == lam
                and d.find_element(By.ID, "status").text == "idle")
            if i:  # the first move also carries the new pair's change
                lat.append(time.perf_counter() - t0)
    finally:
        d.quit()
        srv.send_signal(2)
        srv.wait(timeout=30)
    return {"page_load_s": statistics.median(load), "first_sentence_s": statistics.median(first),
            "move_median_s": statistics.median(lat), "move_p95_s": pct(lat, 0.95), "moves": len(lat), "loads": loads}


def commit():
    r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() or "?"


def render(rows):
    out = ["| CPU (family, model) | AVX-512 / AMX | cores | page load | first sentence | slider move median | p95 | moves | commit |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in reversed(rows):
        out.append(f"| {r['cpu']} ({r['cpu_family']}, {r['model']}) | {' '.join(r['flags']) or 'none'} | {r['cores']} | "
                   f"{1e3 * r['page_load_s']:.0f} ms | {r['first_sentence_s']:.2f} s | {r['move_median_s']:.2f} s | "
                   f"{r['move_p95_s']:.2f} s | {r['moves']} | {r['commit']} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--moves", type=int, default=40)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--write", action="store_true", help="render bench/explorer.jsonl into BENCHMARKS.md")
    a = p.parse_args()
    if a.write:
        rows = [json.loads(l) for l in ROWS.read_text().splitlines() if l.strip()]
        doc = DOC.read_text()
        pat = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pat.search(doc):
            sys.exit(f"{DOC.name}: no '{BEGIN}' ... '{END}' block to fill")
        DOC.with_suffix(".md.tmp").write_text(pat.sub(lambda _: f"{BEGIN}\n\n{render(rows)}\n\n{END}", doc))
        DOC.with_suffix(".md.tmp").replace(DOC)
        print(f"{DOC.name}: explorer table, {len(rows)} rows")
        return
    row = {**cpu(), **measure(a.moves, a.loads), "commit": commit(), "decode": "greedy"}
    with ROWS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
