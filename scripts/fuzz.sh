#!/usr/bin/env bash
# Fuzzes kvcache with libFuzzer (clang): the API-operations target against
# its reference model, the trace / command-line target of kvcache-replay, and
# the checkpoint reader (full checkpoints and logs, then restored).
# Each runs SECONDS seconds (default 25), starting from the corpus kept in
# tests/fuzz/corpus; new inputs go to build/fuzz/corpus-new, crashes to
# build/fuzz/crashes (add them to the kept corpus: they become regression
# tests of the ordinary build).
#
#   bash scripts/fuzz.sh [SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KVCACHE_ROOT"
seconds=${1:-25}
kvcache_ensure_packages "${KVCACHE_TEST_PACKAGES[@]}"
CXX=clang++ cmake -S tests/fuzz -B build/fuzz -G Ninja >/dev/null
cmake --build build/fuzz -j "$(kvcache_jobs)"
mkdir -p build/fuzz/crashes
for target in manager trace checkpoint; do
  mkdir -p "build/fuzz/corpus-new/$target"
  kvcache_log "fuzz_$target for $seconds s"
  log="build/fuzz/$target.log"
  status=0
  build/fuzz/fuzz_$target -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="build/fuzz/crashes/$target-" \
    "build/fuzz/corpus-new/$target" "tests/fuzz/corpus/$target" > "$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|==[0-9]+==|SUMMARY|fuzz_)|^Done" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz_$target found a crash (exit $status): see build/fuzz/crashes/"
    exit 1
  fi
done
