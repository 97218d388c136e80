#!/usr/bin/env bash
# The prepared GPU run: on a machine with an NVIDIA GPU, configure for sm_90
# (or KVCACHE_CUDA_ARCHS), build, run the GPU tests and the GPU benchmarks,
# write everything into the output folder and print a short table last.
# Finishes in a few minutes on a 16-core H200 machine.
#
#   bash bench/gpu/run.sh [--out DIR] [--deps PREFIX]
#
# --out (or KVCACHE_GPU_OUT; default $OUT, else gpu-results): where results go.
# --deps (or KVCACHE_GPU_DEPS): an install prefix holding dependencies this
# machine lacks (bench/gpu/pack_deps.sh fills one from a machine that has them).
# What is still missing turns the parts that need it off, said aloud.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${KVCACHE_GPU_OUT:-${OUT:-gpu-results}}
deps=${KVCACHE_GPU_DEPS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --deps) deps=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
jobs=$(nproc)
start=$SECONDS

# The machine first: device, driver, toolkit (the runtime the build links).
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
{
  date -u +"date: %Y-%m-%dT%H:%MZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
  nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | sed 's/^/driver supports /' || true
  command -v nvcc >/dev/null && nvcc --version | tail -n 2 | sed 's/^/toolkit (runtime linked): /'
  echo "GPUs listed by nvidia-smi: $gpus"
} | tee "$out/machine.txt"
command -v nvcc >/dev/null || { echo "FAIL: nvcc not found (looked on PATH and in /usr/local/cuda/bin)"; exit 1; }

# What the build needs, checked by header; what is missing turns a part off, said aloud.
options=()
if [ -n "$deps" ]; then
  [ -d "$deps" ] || { echo "FAIL: --deps $deps is not a folder"; exit 1; }
  deps=$(cd "$deps" && pwd)
  options+=(-DCMAKE_PREFIX_PATH="$deps")
  echo "dependencies also from $deps"
fi
# A header in the system include folder or under the --deps prefix.
have() { [ -e "$1" ] || { [ -n "$deps" ] && [ -e "$deps/include/${1#/usr/include/}" ]; }; }
for need in "fmt:/usr/include/fmt/format.h" "xxHash:/usr/include/xxhash.h" "Eigen:/usr/include/eigen3/Eigen/Core"; do
  have "${need#*:}" || { echo "FAIL: ${need%%:*} is missing (${need#*:}); the library needs it"; exit 1; }
done
if ! have /usr/include/gtest/gtest.h; then
  echo "WARNING: GoogleTest missing: the GPU tests are not built, so this run cannot pass"
  options+=(-DKVCACHE_BUILD_TESTS=OFF)
fi
if ! have /usr/include/benchmark/benchmark.h; then
  echo "WARNING: Google Benchmark missing: no benchmark table"
  options+=(-DKVCACHE_BUILD_BENCHMARKS=OFF)
fi
if ! have /usr/include/nlohmann/json.hpp; then
  echo "WARNING: nlohmann-json missing: kvcache-replay and kvcache-demo are not built"
  options+=(-DKVCACHE_BUILD_TOOLS=OFF)
fi

cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVCACHE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${KVCACHE_CUDA_ARCHS:-90}" -DKVCACHE_BUILD_EXAMPLES=ON "${options[@]}" \
  >"$out/configure.log" 2>&1 || { tail -n 30 "$out/configure.log"; exit 1; }
cmake --build build/gpu -j "$jobs" >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }
echo "built in $((SECONDS - start)) s"

status=0
# The example says which backend it ran on: a GPU that nvidia-smi lists but
# the CUDA runtime cannot use (driver / runtime mismatch) must not pass as green.
./build/gpu/examples/kvcache_quickstart >"$out/quickstart.log" 2>&1 || status=$?
head -n 2 "$out/quickstart.log"
if ! grep -q '^backend cuda' "$out/quickstart.log"; then
  echo "FAIL: the CUDA runtime found no usable device ($gpus listed by nvidia-smi): every GPU test"
  echo "would skip. Check the driver against the toolkit above; nothing was measured."
  exit 1
fi
if [ -x ./build/gpu/tests/kvcache_cuda_tests ]; then
  ./build/gpu/tests/kvcache_cuda_tests --gtest_brief=1 >"$out/gpu_tests.log" 2>&1 || status=$?
  tail -n 5 "$out/gpu_tests.log"
else
  status=1
fi
if [ -x ./build/gpu/tools/demo/kvcache-demo ]; then
  # Every configuration; with a GPU that includes paged-gpu (pages in GPU
  # memory, attention by the paged-attention kernel on the GPU; the model's
  # products stay on the host). Its tests check it against the CPU backend.
  ./build/gpu/tools/demo/kvcache-demo --json "$out/demo.json" >"$out/demo.txt" 2>&1 || status=$?
  if ! grep -q '^paged-gpu ' "$out/demo.txt"; then
    echo "FAIL: kvcache-demo did not run its paged-gpu configuration"
    status=1
  fi
  ./build/gpu/tests/kvcache_demo_tests --gtest_brief=1 >"$out/demo_tests.log" 2>&1 || status=$?
fi
./build/gpu/bench/kvcache_gpu_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/gpu_bench.json" --benchmark_out_format=json >"$out/gpu_bench.txt" 2>&1 || status=$?
./build/gpu/bench/kvcache_cpu_bench --benchmark_out="$out/cpu_bench.json" --benchmark_out_format=json \
  >"$out/cpu_bench.txt" 2>&1 || status=$?

echo
echo "GPU tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')"
echo "quickstart: $(tail -n 1 "$out/quickstart.log")"
[ -f "$out/demo_tests.log" ] && echo "demo tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/demo_tests.log" | tr '\n' ' ')"
[ -f "$out/demo.txt" ] && { echo; grep -E '^(config|paged|paged-gpu) ' "$out/demo.txt"; tail -n 9 "$out/demo.txt"; }
echo
python3 bench/summarize.py "$out/gpu_bench.json" | tee "$out/table.md"
echo "total $((SECONDS - start)) s, exit status $status; full output in $out"
exit $status
