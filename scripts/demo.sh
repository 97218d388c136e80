#!/usr/bin/env bash
# The main job: build and run the engine-side example, then replay the
# built-in synthetic chat workload through the cache. On a machine with an
# NVIDIA GPU it builds the CUDA backend for that GPU and runs there; without
# one it builds the CPU backend only and runs on it.
#
#   bash scripts/demo.sh [--cpu]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$KVCACHE_ROOT"
kvcache_ensure_packages
kvcache_find_cuda

cuda=OFF
arch_args=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '.[:space:]')
  cuda=ON
  [ -n "$cap" ] && arch_args=(-DCMAKE_CUDA_ARCHITECTURES="$cap")
fi
kvcache_log "configuring (CUDA backend: $cuda)"
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVCACHE_CUDA=$cuda "${arch_args[@]}" \
  -DKVCACHE_BUILD_TESTS=OFF -DKVCACHE_BUILD_BENCHMARKS=OFF >/dev/null
kvcache_log "building"
cmake --build build/demo -j "$(kvcache_jobs)" --target kvcache_quickstart kvcache-replay
kvcache_log "running build/demo/examples/kvcache_quickstart $*"
./build/demo/examples/kvcache_quickstart "$@"
kvcache_log "replaying the built-in synthetic chat workload (build/demo/tools/replay/kvcache-replay)"
./build/demo/tools/replay/kvcache-replay --sweep
