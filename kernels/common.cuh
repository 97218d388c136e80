// Helpers shared by the CUDA kernels in this folder (not installed).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvcache::kernels::cuda::detail {

// Kernels move rows in 16-byte vectors; the launchers check the alignment.
inline bool aligned16(const void* pointer) {
  return (reinterpret_cast<std::uintptr_t>(pointer) & 15u) == 0;
}

inline bool multiple_of_16(std::int64_t bytes) {
  return (bytes & 15) == 0;
}

// Checks the launch just made (and, with debug sync on, waits for it).
cudaError_t finish_launch(cudaStream_t stream);

// Streaming load: the source of an append or gather is read once.
__device__ __forceinline__ uint4 load_streaming(const void* address) {
  return __ldcs(static_cast<const uint4*>(address));
}

__device__ __forceinline__ void store(void* address, uint4 value) {
  *static_cast<uint4*>(address) = value;
}

}  // namespace kvcache::kernels::cuda::detail
