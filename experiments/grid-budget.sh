# Sourced by the grid scripts: one wall-clock budget (`--max-minutes N` as the script's first
# arguments) shared by several `imix-bench` calls, each told the minutes left (0 once spent, so it
# stops cleanly before its next cell, or its next method inside a cell, and writes its reports).
budget=""
if [ "${1:-}" = "--max-minutes" ]; then budget=$2; fi
start=$(date +%s)
left() { [ -z "$budget" ] && return 0; awk -v b="$budget" -v s="$start" -v n="$(date +%s)" 'BEGIN { printf "%.1f", b - (n - s) / 60 }'; }
# `imix-bench ARGS` on the grid's datasets, within what is left of the budget.
bench_grid() {
  local m; m=$(left)
  if [ -n "$budget" ] && awk -v m="$m" 'BEGIN { exit !(m <= 0) }'; then m=0; fi
  target/release/imix-bench --data "${IMIX_BENCH_DATA:-../shared/data/benchmarks}" --datasets sst2,trec,subj,mr \
    ${budget:+--max-minutes $m} "$@"
}
