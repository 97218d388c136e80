#!/usr/bin/env bash
# The main job: build and run the engine-side example, then kvcache-demo (a
# small transformer served from the cache under every configuration, with
# the article's strategy table measured). The example uses the GPU when there
# is one (the CUDA backend is built for it); kvcache-demo runs on the CPU
# backend. Options after --cpu go to kvcache-demo (--help lists them).
#
#   bash scripts/demo.sh [--cpu] [kvcache-demo options]
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
cmake --build build/demo -j "$(kvcache_jobs)" --target kvcache_quickstart kvcache-demo kvcache-replay
quickstart_args=()
if [ "${1:-}" = "--cpu" ]; then
  quickstart_args=(--cpu)
  shift
fi
kvcache_log "running build/demo/examples/kvcache_quickstart ${quickstart_args[*]}"
./build/demo/examples/kvcache_quickstart "${quickstart_args[@]}"
kvcache_log "running build/demo/tools/demo/kvcache-demo $*"
./build/demo/tools/demo/kvcache-demo "$@"
