#!/usr/bin/env bash
# kvcache-plan's command line: the table, --json (parsed), and bad input
# (exit 2, the valid choices named, nothing on stdout).
set -euo pipefail
plan=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$plan" --model llama-3-8b --memory 24GiB | tee "$work/table.txt"
grep -q "| plain | 131072 |" "$work/table.txt"
grep -q "profile 24 GiB" "$work/table.txt"
"$plan" --model 32:8:128 --memory 80GB --weights-gib 15 --context 4096 --json > "$work/plan.json"
python3 - "$work/plan.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["context"] == 4096 and p["memory_bytes"] == 80 * 10**9, p
rows = {r["codec"]: r for r in p["codecs"]}
assert set(rows) >= {"plain", "int8", "fp8", "int4", "int2", "low-rank-32"}, rows.keys()
assert rows["int8"]["tokens"] > rows["plain"]["tokens"] > 0
for r in rows.values():
    assert r["tokens"] == r["blocks"] * p["block_size"]
PY
for bad in "--model llama-9 --memory 24GiB" "--model llama-3-8b --memory 24 parsecs" \
           "--model llama-3-8b --memory 24XB" "--model llama-3-8b --context -5" "--memory 24GiB"; do
  # shellcheck disable=SC2086
  if "$plan" $bad > "$work/out.txt" 2> "$work/err.txt"; then echo "accepted: $bad"; exit 1; fi
  code=$?
  [ ! -s "$work/out.txt" ] || { echo "stdout written for: $bad"; exit 1; }
  cat "$work/err.txt"
done
"$plan" --model llama-9 --memory 24GiB 2> "$work/err.txt" || code=$?
[ "${code:-0}" -eq 2 ] || { echo "exit $code, not 2"; exit 1; }
grep -q "llama-3-8b" "$work/err.txt"
echo "kvcache-plan: ok"
