"""Copies a grid's generated report into RESULTS.md, between the BEGIN/END markers that name it,
unchanged.

The tables, paired tests, claims ("What the rows say"), generator diagnostics and provenance
(commit, CPU, command and wall time of every run) are written by `imix-bench` from the grid's
rows; RESULTS.md quotes them instead of restating them, so its numbers cannot drift from the
data. Headings move two levels down to sit under RESULTS.md's section; the report's title goes.

    python3 experiments/results_splice.py [experiments/grid-2f88c450/summary-final-from-warmup.md]
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN generated: {src} (experiments/results_splice.py; edit the rows, not this) -->"
END = "<!-- END generated -->"


def demoted(md: str) -> str:
    out = []
    for line in md.splitlines():
        if line.startswith("# "):
            continue  # the report's title: RESULTS.md's section names it
        if re.match(r"#{2,4} ", line):
            line = "##" + line
        out.append(line)
    return "\n".join(out).strip("\n")


def main() -> None:
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/grid-2f88c450/summary-final-from-warmup.md")
    results = ROOT / "RESULTS.md"
    text = results.read_text()
    body = demoted((ROOT / src).read_text())
    # RESULTS.md may quote several reports: the block whose BEGIN marker names `src` is filled.
    pattern = re.compile(r"<!-- BEGIN generated: " + re.escape(str(src)) + r" .*?-->.*?" + re.escape(END), re.S)
    m = pattern.search(text)
    if m is None:
        sys.exit(f"{results}: no '<!-- BEGIN generated: {src} ... -->' ... '{END}' block to fill")
    block = BEGIN.format(src=src) + "\n\n" + body + "\n\n" + END
    new = text[: m.start()] + block + text[m.end():]
    tmp = results.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(results)
    print(f"RESULTS.md: {src} spliced ({len(body.splitlines())} lines)")


if __name__ == "__main__":
    main()
