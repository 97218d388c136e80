// The low-rank codec's reference point: an Eigen GEMM of the shapes its append
// (rows x head_dim times head_dim x rank) and gather (rows x rank times rank x
// head_dim) compute, in float, one product per (K/V, head). eigen_gemm.cpp is
// compiled for AVX2 + FMA on x86-64 (and run only where the CPU has them), so
// the reference is Eigen at its best on the machine, not its SSE2 fallback.
#pragma once

#include <cstdint>

namespace kvcache::bench {

// Whether eigen_gemm_seconds can run on this CPU (checked here, in code
// built for any x86-64, never inside the AVX2 translation unit).
inline bool eigen_gemm_runs_here() {
#if defined(KVCACHE_EIGEN_GEMM_AVX2)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

// Mean seconds of one pass over `products` GEMMs [rows x inner] x [inner x
// cols] (of `repeats` passes after one to warm up).
double eigen_gemm_seconds(std::int64_t rows, std::int32_t inner, std::int32_t cols,
                          std::int32_t products, std::int32_t repeats);

}  // namespace kvcache::bench
