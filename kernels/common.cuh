// Helpers shared by the CUDA kernels in this folder (not installed).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "kvcache/dtype.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache::kernels::cuda::detail {

// Threads of the codec kernels' CTAs (the plain kernels size their own).
inline constexpr int kThreads = 256;

// Kernels move rows in 16-byte vectors; the launchers check the alignment.
inline bool aligned16(const void* pointer) {
  return (reinterpret_cast<std::uintptr_t>(pointer) & 15u) == 0;
}

inline bool multiple_of_16(std::int64_t bytes) {
  return (bytes & 15) == 0;
}

inline unsigned blocks_for(std::int64_t items, std::int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

// The checks every append launcher makes of its layer, token count (or
// group count) and K/V source; `count` == 0 is a launch with nothing to do.
inline cudaError_t check_append(std::int32_t layer, std::int32_t num_layers, std::int64_t count,
                                const AppendSource& source) {
  if (count < 0 || layer < 0 || layer >= num_layers) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  if (source.k == nullptr || source.v == nullptr) return cudaErrorInvalidValue;
  if (!aligned16(source.k) || !aligned16(source.v) || !multiple_of_16(source.token_bytes) ||
      !multiple_of_16(source.head_bytes)) {
    return cudaErrorMisalignedAddress;
  }
  return cudaSuccess;
}

// The checks every gather launcher makes of its layer, page table and
// outputs (each launcher adds its own: the cache view, the codec state).
inline cudaError_t check_gather(std::int32_t layer, std::int32_t num_layers,
                                const PageTableView& table, const GatherOutput& out) {
  if (table.batch_size < 0 || table.total_pages < 0 || layer < 0 || layer >= num_layers)
    return cudaErrorInvalidValue;
  if (table.batch_size == 0) return cudaSuccess;
  if (table.indptr == nullptr || table.indices == nullptr || table.last_page_len == nullptr ||
      table.out_row_offset == nullptr || out.k == nullptr || out.v == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!aligned16(out.k) || !aligned16(out.v)) return cudaErrorMisalignedAddress;
  return cudaSuccess;
}

// Checks the launch just made (and, with debug sync on, waits for it). A
// stale error left by an earlier call is cleared first by the launchers
// (clear_stale_error), so the status returned is this launch's.
cudaError_t finish_launch(cudaStream_t stream);
void clear_stale_error();

// Streaming load: the source of an append or gather is read once.
__device__ __forceinline__ uint4 load_streaming(const void* address) {
  return __ldcs(static_cast<const uint4*>(address));
}

__device__ __forceinline__ void store(void* address, uint4 value) {
  *static_cast<uint4*>(address) = value;
}

// The N = 16 / sizeof(T) values of one lane: a 16-byte vector of T.
template <class T>
inline constexpr int kLaneValues = 16 / static_cast<int>(sizeof(T));

template <class T>
__device__ __forceinline__ void load_lane(const std::byte* lane, float (&x)[kLaneValues<T>]) {
  const uint4 bits = load_streaming(lane);
  const auto* values = reinterpret_cast<const std::byte*>(&bits);
#pragma unroll
  for (int i = 0; i < kLaneValues<T>; ++i)
    x[i] = load_element<T>(values, i);
}

template <class T>
__device__ __forceinline__ void store_lane(std::byte* lane, const float (&x)[kLaneValues<T>]) {
  uint4 bits;
  auto* values = reinterpret_cast<std::byte*>(&bits);
#pragma unroll
  for (int i = 0; i < kLaneValues<T>; ++i)
    store_element<T>(values, i, x[i]);
  store(lane, bits);
}

// Adds a CTA's non-finite counts to the counter with one atomic.
__device__ __forceinline__ void add_nonfinite(unsigned long long* counter, int count) {
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const int total = Reduce(temp).Sum(count);
  if (threadIdx.x == 0 && total != 0 && counter != nullptr)
    atomicAdd(counter, static_cast<unsigned long long>(total));
}

}  // namespace kvcache::kernels::cuda::detail
