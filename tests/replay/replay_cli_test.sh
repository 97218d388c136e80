#!/usr/bin/env bash
# The kvcache-replay command line: the synthetic default, a bad trace (named
# line, no partial table, exit 1), --skip-bad, and a real trace when KVCACHE_TRACE names one.
set -euo pipefail
replay=$1
real_trace=${KVCACHE_TRACE:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$replay" --capacity 600 | tee "$work/default.txt"
grep -q "trace synthetic" "$work/default.txt"
grep -q "prefix hit rate" "$work/default.txt"

good='{"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}'
printf '%s\n%s\n{"timestamp": 5, "input_length": 1\n%s\n' "$good" "$good" "$good" > "$work/bad.jsonl"
if "$replay" "$work/bad.jsonl" > "$work/bad.out" 2> "$work/bad.err"; then
  echo "a bad trace must fail"; exit 1
fi
grep -q "line 3" "$work/bad.err"
if grep -q "prefix hit rate" "$work/bad.out"; then echo "no partial table expected"; exit 1; fi

"$replay" "$work/bad.jsonl" --skip-bad --capacity 10 > "$work/skip.out"
grep -q "1 bad lines skipped" "$work/skip.out"
grep -q "requests          3" "$work/skip.out"

if "$replay" --policy mru > /dev/null 2> "$work/policy.err"; then echo "unknown policy must fail"; exit 1; fi
grep -q 'policy "mru" is not one of none, lru' "$work/policy.err"

if [ -n "$real_trace" ] && [ -f "$real_trace" ]; then
  "$replay" "$real_trace" --capacity 8000 | tee "$work/mooncake.txt"
  grep -q "requests, " "$work/mooncake.txt"
else
  echo "note: KVCACHE_TRACE names no trace file; the real-trace check is skipped"
fi

"$replay" --model llama3-8b --budget-gib 20 --codec-table | tee "$work/codecs.txt"
grep -q "| int8 |" "$work/codecs.txt"
"$replay" --model llama3-8b --budget-gib 20 --codec int4 | grep -q "prefix hit rate"
if "$replay" --budget-gib 20 > /dev/null 2> "$work/needs_model.err"; then echo "--budget-gib needs --model"; exit 1; fi
