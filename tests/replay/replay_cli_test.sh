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

# Every bad option or trace: a non-zero exit, the option or line named on stderr, nothing on stdout.
expect_refusal() {
  local expected=$1
  shift
  if "$replay" "$@" > "$work/refused.out" 2> "$work/refused.err"; then
    echo "expected a refusal: $*"; exit 1
  fi
  if [ -s "$work/refused.out" ]; then echo "stdout before the error: $*"; cat "$work/refused.out"; exit 1; fi
  grep -qF -- "$expected" "$work/refused.err" || { echo "no \"$expected\" in:"; cat "$work/refused.err"; exit 1; }
  [ "$(wc -c < "$work/refused.err")" -lt 2000 ] || { echo "unbounded message: $*"; exit 1; }
}
expect_refusal "--block-size" --block-size 0
expect_refusal "--block-size" --block-size 4294967296
expect_refusal "--decode-ms" --decode-ms nan
expect_refusal "--model" --model 0:1:8
expect_refusal "--capacity" --capacity -5
: > "$work/empty.jsonl"
expect_refusal "empty" "$work/empty.jsonl"
printf '\n\n   \n' > "$work/blank.jsonl"
expect_refusal "no requests" "$work/blank.jsonl"
expect_refusal "directory" "$work"
printf '{"timestamp": 1e400, "input_length": 1, "output_length": 1, "hash_ids": [1]}\n' > "$work/huge.jsonl"
expect_refusal "line 1" "$work/huge.jsonl"
printf '{"timestamp": 0, "input_length": 1, "output_length": 18446744073709551615, "hash_ids": [1]}\n' > "$work/u64.jsonl"
expect_refusal "18446744073709551615" "$work/u64.jsonl"
python3 -c "print('{\"timestamp\": ' + '['*200000 + ']'*200000 + ', \"input_length\": 1}')" > "$work/deep.jsonl"
expect_refusal "line 1" "$work/deep.jsonl"
python3 -c "print('{\"timestamp\": \"' + 'x'*10000000)" > "$work/long.jsonl"
expect_refusal "line 1" "$work/long.jsonl"
expect_refusal "--limit-schedule needs --tune" --limit-schedule 0:1
expect_refusal "each entry is from:limit" --tune --limit-schedule 0
expect_refusal "must rise" --tune --limit-schedule 0:1,0:0.5
echo "replay_cli: refusals passed"
"$replay" --tune > "$work/tune.txt"
grep -q "^| tuned | " "$work/tune.txt"
grep -q "^| static | " "$work/tune.txt"
grep -q "the tuner's decisions:" "$work/tune.txt"
"$replay" --sweep --decode-ms 0 > "$work/sweep.txt"
grep -q "| reuse-lru | adaptive | belady | best online |" "$work/sweep.txt"
grep -q "share of the LRU-to-belady gap closed" "$work/sweep.txt"
"$replay" --policy belady --capacity 300 | grep -q "policy belady"
# The keep-time ceilings: a table in a one-at-a-time sweep, a line in a one-at-a-time run,
# neither with concurrent requests (the bound does not model them).
grep -q "| capacity (blocks) | lru | recency bound | best online | use-count bound | share of the LRU-to-bound gap closed | belady |" "$work/sweep.txt"
grep -Eq "^\| [0-9]+ \(1/8\) \| [0-9.]+% \| [0-9.]+% \| [0-9.]+% \([a-z0-9-]+\) \| [0-9.]+% \| (-?[0-9]+%|-) \| [0-9.]+% \|$" "$work/sweep.txt"
"$replay" --policy lru --capacity 300 --decode-ms 0 | grep -Eq "ceilings +[0-9.]+% blind to the block, [0-9.]+% counting"
if "$replay" --policy lru --capacity 300 | grep -q ceilings; then
  echo "replay_cli: a concurrent run printed the one-at-a-time ceilings" >&2
  exit 1
fi
if "$replay" --sweep | grep -q "Ceilings"; then
  echo "replay_cli: a concurrent sweep printed the one-at-a-time ceilings" >&2
  exit 1
fi
echo "replay_cli: sweep with the offline optimum and the ceilings passed"
