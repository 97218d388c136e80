#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. formatting (clang-format) of every source file;
#   2. a build with the CUDA backend (sm_90 unless KVCACHE_CUDA_ARCHS says
#      otherwise) and warnings as errors, then every test (GPU tests skip,
#      saying why, without a device);
#   3. the CPU build under AddressSanitizer + UndefinedBehaviorSanitizer and
#      its tests;
#   4. the tests with threads of their own (the Redis tier's writer, the KV
#      event ring, the metrics server) under ThreadSanitizer;
#   5. a short libFuzzer run of each fuzz target (scripts/fuzz.sh; set
#      KVCACHE_FUZZ_SECONDS for longer, 0 to skip).
#
#   bash scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KVCACHE_ROOT"
kvcache_ensure_packages "${KVCACHE_TEST_PACKAGES[@]}"
kvcache_find_cuda
jobs=$(kvcache_jobs)
start=$SECONDS

kvcache_log "1/5 formatting"
mapfile -t sources < <(git ls-files '*.hpp' '*.cpp' '*.cuh' '*.cu' 2>/dev/null || find include src kernels tests bench examples tools -name '*.[ch]pp' -o -name '*.cu' -o -name '*.cuh')
clang-format --dry-run --Werror "${sources[@]}"

kvcache_log "2/5 CUDA + CPU build, warnings as errors"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVCACHE_CUDA=AUTO \
  -DCMAKE_CUDA_ARCHITECTURES="${KVCACHE_CUDA_ARCHS:-90}" -DKVCACHE_WARNINGS_AS_ERRORS=ON >/dev/null
cmake --build build/ci -j "$jobs"
ctest --test-dir build/ci -j "$jobs" --output-on-failure --timeout 900

kvcache_log "3/5 CPU build under ASan + UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKVCACHE_SANITIZE=ON \
  -DKVCACHE_WARNINGS_AS_ERRORS=ON -DKVCACHE_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan -j "$jobs" --output-on-failure --timeout 900

kvcache_log "4/5 the threaded tests under ThreadSanitizer"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVCACHE_SANITIZE_THREAD=ON \
  -DKVCACHE_WARNINGS_AS_ERRORS=ON -DKVCACHE_BUILD_BENCHMARKS=OFF >/dev/null
tsan_tests=(kvcache_tier_tests kvcache_metrics_tests)
for optional in kvcache_redis_tests kvcache_metrics_http_tests; do
  if [ -n "$(cmake --build build/tsan --target help | grep -o "$optional" | head -1)" ]; then
    tsan_tests+=("$optional")
  fi
done
cmake --build build/tsan -j "$jobs" --target "${tsan_tests[@]}"
for t in "${tsan_tests[@]}"; do
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 "build/tsan/tests/$t"
done

fuzz_seconds=${KVCACHE_FUZZ_SECONDS:-25}
if [ "$fuzz_seconds" -gt 0 ]; then
  kvcache_log "5/5 fuzzing, $fuzz_seconds s a target"
  bash scripts/fuzz.sh "$fuzz_seconds"
fi

kvcache_log "all tests passed in $((SECONDS - start)) s"
