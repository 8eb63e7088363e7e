"""Summary of experiments/guided/run.sh: `collect DIR` reads its rows into summary.jsonl (metrics
only, no sentences; rows of other sets and decodings stay); `--write` puts the table into RESULTS.md; no argument prints it."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUMMARY = os.path.join(HERE, "summary.jsonl")
ROOT = os.path.dirname(os.path.dirname(HERE))
MARK = "<!-- BEGIN generated: python3 experiments/guided/table.py --write -->"
END = "<!-- END generated -->"


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def collect(d):
    times = {}
    for line in open(os.path.join(d, "times.tsv")):
        # set, decoding, seconds[, rows file when not SET-DECODING.jsonl]
        s, dec, t, *f = line.rstrip("\n").split("\t")
        times[(s, dec)] = (float(t), f[0] if f else f"{s}-{dec.replace(':', '')}.jsonl")
    out = []
    for (s, dec), (t, f) in times.items():
        rows = [json.loads(l) for l in open(os.path.join(d, f))]
        r = {"set": s, "decode": dec, "n": len(rows), "seconds": round(t, 1)}
        if s.startswith("pairs"):
            r["cos_target"] = mean([x["cos_target"] for x in rows])
            r["copies"] = mean([float(x["copy"]) for x in rows])
            r["gap"] = mean([abs(x["content_lambda"] - x["lambda"]) for x in rows])
            r["carries_both"] = mean([float(0.15 <= x["content_lambda"] <= 0.85) for x in rows])
        else:
            r["cosine"] = mean([x["cosine"] for x in rows])
            r["token_f1"] = mean([x["token_f1"] for x in rows])
            js = [x["judge_cosine"] for x in rows if x.get("judge_cosine") is not None]
            r["judge_cosine"] = mean(js)
        out.append(r)
    # Rows of earlier runs stay unless this run measured the same set and decoding again.
    new = {(r["set"], r["decode"]) for r in out}
    old = [json.loads(l) for l in open(SUMMARY)] if os.path.exists(SUMMARY) else []
    keep = [r for r in old if (r["set"], r["decode"]) not in new]
    with open(SUMMARY, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep + out)


def table():
    rows = [json.loads(l) for l in open(SUMMARY)]
    f = lambda v, p="{:.3f}": "–" if v is None else p.format(v)
    lines = ["| held-out set | decoding | n | cosine to target | token F1 | judge cosine | copies | λ gap | carries both | s per item |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pairs = r["set"].startswith("pairs")
        lines.append("| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["set"] + (" (mid-λ mixes)" if pairs else " (sentences)"), r["decode"], r["n"],
            f(r.get("cos_target") if pairs else r.get("cosine")), f(r.get("token_f1")), f(r.get("judge_cosine")),
            f(r.get("copies"), "{:.0%}"), f(r.get("gap")), f(r.get("carries_both"), "{:.0%}"), f(r["seconds"] / r["n"], "{:.1f}")))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "collect":
        collect(sys.argv[2])
        print(table())
    elif sys.argv[1:] == ["--write"]:
        p = os.path.join(ROOT, "RESULTS.md")
        s = open(p).read()
        a = s.index(MARK) + len(MARK)
        b = s.index(END, a)
        open(p, "w").write(s[:a] + "\n" + table() + "\n" + s[b:])
    else:
        print(table())
