// Compile-time configuration shared by host and device code.
#pragma once

#define KVCACHE_VERSION_MAJOR 0
#define KVCACHE_VERSION_MINOR 1
#define KVCACHE_VERSION_PATCH 0

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

namespace kvcache {
inline constexpr int kVersionMajor = KVCACHE_VERSION_MAJOR;
inline constexpr int kVersionMinor = KVCACHE_VERSION_MINOR;
inline constexpr int kVersionPatch = KVCACHE_VERSION_PATCH;
}  // namespace kvcache
