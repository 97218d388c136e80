#!/usr/bin/env bash
# The prepared GPU run: on a machine with an NVIDIA GPU, configure for sm_90
# (or KVCACHE_CUDA_ARCHS), build, run the GPU tests and the GPU benchmarks,
# write everything into the output folder and print a short table last.
# Finishes in a few minutes on a 16-core H200 machine.
#
#   bash bench/gpu/run.sh [--out DIR]      (or KVCACHE_GPU_OUT=DIR; default: $OUT, else gpu-results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${KVCACHE_GPU_OUT:-${OUT:-gpu-results}}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
jobs=$(nproc)
start=$SECONDS

{
  date -u +"date: %Y-%m-%dT%H:%MZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
  nvcc --version | tail -n 2
} | tee "$out/machine.txt"

cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVCACHE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${KVCACHE_CUDA_ARCHS:-90}" -DKVCACHE_BUILD_EXAMPLES=ON >"$out/configure.log" 2>&1 \
  || { tail -n 30 "$out/configure.log"; exit 1; }
cmake --build build/gpu -j "$jobs" >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }
echo "built in $((SECONDS - start)) s"

status=0
./build/gpu/tests/kvcache_cuda_tests --gtest_brief=1 >"$out/gpu_tests.log" 2>&1 || status=$?
tail -n 5 "$out/gpu_tests.log"
./build/gpu/examples/kvcache_quickstart >"$out/quickstart.log" 2>&1 || status=$?
./build/gpu/bench/kvcache_gpu_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/gpu_bench.json" --benchmark_out_format=json >"$out/gpu_bench.txt" 2>&1 || status=$?
./build/gpu/bench/kvcache_cpu_bench --benchmark_out="$out/cpu_bench.json" --benchmark_out_format=json \
  >"$out/cpu_bench.txt" 2>&1 || status=$?

echo
echo "GPU tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')"
echo "quickstart: $(tail -n 1 "$out/quickstart.log")"
echo
python3 bench/summarize.py "$out/gpu_bench.json" | tee "$out/table.md"
echo "total $((SECONDS - start)) s, exit status $status; full output in $out"
exit $status
