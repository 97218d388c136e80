// Compile-time configuration shared by host and device code.
#pragma once

#include "kvcache/version.hpp"

// Functions marked KVCACHE_HD are compiled for the device by nvcc and as plain
// C++ by the host compiler, so the CPU backend runs the same per-element math
// as the CUDA kernels.
#if defined(__CUDACC__)
#define KVCACHE_HD __host__ __device__ __forceinline__
#define KVCACHE_DEVICE_COMPILE 1
#else
#define KVCACHE_HD inline
#define KVCACHE_DEVICE_COMPILE 0
#endif
