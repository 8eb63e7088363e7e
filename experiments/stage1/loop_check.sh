#!/usr/bin/env bash
# Issue 14's repetition check on lambda-grid mixes: `imix interpolate` between the 25 pairs of
# consecutive held-out Wikipedia lines (1-2, 3-4, ...), 6 points each (lambda 0, 0.2, ..., 1), greedy;
# prints how many of the 150 sentences repeat a word/punctuation 3-gram three or more times (the
# same test as `imix invert`'s "loops", which covers the held-out inversions).
# Usage: bash experiments/stage1/loop_check.sh [ADAPTOR]   (default: the shipped one)
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/stage1/data.sh
adaptor=${1:-assets/adaptor-minilm-smollm2.safetensors}
held=$out/wiki-heldout.txt
outs=$(mktemp)
for i in $(seq 1 2 49); do
  a=$(sed -n "${i}p" "$held")
  b=$(sed -n "$((i + 1))p" "$held")
  target/release/imix interpolate "$a" "$b" --steps 6 --decode greedy --adaptor "$adaptor" 2>/dev/null |
    grep '^lambda=' | sed 's/^lambda=[^A]*A  //' >> "$outs"
done
python3 - "$outs" <<'EOF'
import re, sys
from collections import Counter
def words(s):
    # As eval::text::words: lower-cased alphanumeric/apostrophe runs, each other non-space a token.
    return re.findall(r"[\w']+|[^\w\s']", s.lower().replace("_", " _ "))
lines = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
looping = [l for l in lines if (lambda w: max(Counter(zip(w, w[1:], w[2:])).values(), default=0) >= 3)(words(l))]
print(f"{len(lines)} interpolated sentences, {len(looping)} repeat a 3-gram three or more times")
for l in looping:
    print("  ", l)
EOF
rm -f "$outs"
