# Sourced by the dev-gate scripts (from the repository root, with $out and $keep set): builds
# imix-bench, restores the kept rows into $out when it is empty, and copies the rows and reports
# back to $keep on exit, so that a gate resumes from either folder.
cargo build --release -p imix-bench
mkdir -p "$out" "$keep"
if [ ! -s "$out/results.jsonl" ] && [ -s "$keep/results.jsonl" ]; then cp "$keep"/{results,runs}.jsonl "$out"/; fi
save() { cp "$out"/results.jsonl "$out"/runs.jsonl "$out"/*.md "$keep"/ 2>/dev/null || true; }
trap save EXIT
