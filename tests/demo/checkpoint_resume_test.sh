#!/usr/bin/env bash
# kvcache-demo --checkpoint-dir: a run killed with SIGKILL and started again
# with the same options resumes from its checkpoint, and its greedy tokens
# equal an uninterrupted run's (same digest over every output token). Two
# configurations: paged (fp16 pages) and paged+sharing with an fp32 cache (a
# checkpoint keeps the sequences, not the prefix cache's unreferenced blocks:
# a resumed run recomputes those prompts, and only in fp32 is a recomputed
# prompt's attention bit for bit that of one read from the cache).
#
#   bash checkpoint_resume_test.sh path/to/kvcache-demo
set -euo pipefail
demo=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for config in "--configs paged" "--configs paged+sharing --fp32-cache"; do
# shellcheck disable=SC2206
opts=(--requests 16 --checkpoint-every 100 $config)
echo "== $config"

"$demo" "${opts[@]}" --checkpoint-dir "$work/whole" > "$work/whole.log"
want=$(grep -o 'digest [0-9a-f]*' "$work/whole.log")
[ -n "$want" ] || { echo "no digest in the uninterrupted run"; cat "$work/whole.log"; exit 1; }

# Killed once it has written N checkpoints (early, and later in the run),
# then started again on the same directory.
for kill_after in 1 4; do
  dir="$work/killed-$kill_after"
  rm -rf "$dir"
  "$demo" "${opts[@]}" --checkpoint-dir "$dir" > "$work/run.log" 2>&1 &
  pid=$!
  while [ "$(grep -c '^checkpoint at' "$work/run.log" || true)" -lt "$kill_after" ]; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.005
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "killed after $(grep -c '^checkpoint at' "$work/run.log" || true) checkpoints"
  "$demo" "${opts[@]}" --checkpoint-dir "$dir" > "$work/resumed.log"
  if ! grep '^resumed from' "$work/resumed.log"; then
    echo "the second run did not resume"
    cat "$work/resumed.log"
    exit 1
  fi
  got=$(grep -o 'digest [0-9a-f]*' "$work/resumed.log")
  if [ "$got" != "$want" ]; then
    echo "the resumed run's tokens differ: $got, an uninterrupted run's: $want"
    exit 1
  fi
done
echo "resumed runs give the uninterrupted run's tokens ($want)"
rm -rf "$work/whole"
done
