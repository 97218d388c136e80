#!/usr/bin/env bash
# The README's charts, measured on this machine: kernel bandwidth against the
# copy ceiling (the CPU and codec benchmarks), hit rate against capacity for
# every eviction policy (a replay sweep), memory against output error for
# every configuration and the article's table as bars (kvcache-demo).
#
#   bash scripts/charts.sh [OUT_DIR]        (default docs/charts)
#
# A real Mooncake trace joins through KVCACHE_TRACE=FILE (the sweep and the
# demo use it); otherwise both use the built-in synthetic workload.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KVCACHE_ROOT"
kvcache_ensure_packages gnuplot-nox
out=${1:-docs/charts}
mkdir -p "$out"
data=build/charts/data
mkdir -p "$data"

kvcache_log "building the benchmarks and tools (build/charts)"
cmake -S . -B build/charts -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVCACHE_CUDA=OFF \
  -DKVCACHE_BUILD_TESTS=OFF -DKVCACHE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/charts -j "$(kvcache_jobs)" --target kvcache_cpu_bench kvcache_codec_bench \
  kvcache-replay kvcache-demo

kvcache_log "kernel benchmarks (JSON)"
./build/charts/bench/kvcache_cpu_bench --benchmark_filter='Cpu(Append|Gather)' \
  --benchmark_out="$data/cpu.json" --benchmark_out_format=json >/dev/null
./build/charts/bench/kvcache_codec_bench \
  --benchmark_filter='/(plain|int8-g32|fp8-e4m3-head|int4-kivi-g32-r128|low-rank-r32)/' \
  --benchmark_out="$data/codec.json" --benchmark_out_format=json >/dev/null

trace_args=()
replay_args=()
if [ -n "${KVCACHE_TRACE:-}" ]; then
  trace_args=(--trace "$KVCACHE_TRACE")
  replay_args=("$KVCACHE_TRACE")
fi
kvcache_log "replay sweep ${replay_args[*]}"
./build/charts/tools/replay/kvcache-replay "${replay_args[@]}" --sweep --decode-ms 0 >"$data/sweep.md"
kvcache_log "kvcache-demo ${trace_args[*]}"
./build/charts/tools/demo/kvcache-demo "${trace_args[@]}" --json "$data/demo.json" >"$data/demo.txt"

kvcache_log "plotting into $out"
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%d)"
python3 scripts/charts.py "$data" "$out" "$machine"
ls -l "$out"
