// Helpers shared by the CUDA kernels in this folder (not installed).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "kvcache/dtype.hpp"
#include "kvcache/kernels/launch_checks.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache::kernels::cuda::detail {

// Threads of the codec kernels' CTAs (the plain kernels size their own).
inline constexpr int kThreads = 256;

inline unsigned blocks_for(std::int64_t items, std::int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

// A launcher's answer to a parameter problem (kvcache/kernels/launch_checks.hpp).
inline cudaError_t status_of(const LaunchProblem& problem) {
  if (!problem) return cudaSuccess;
  return problem.misaligned ? cudaErrorMisalignedAddress : cudaErrorInvalidValue;
}

// Every launcher, once its parameters pass, asks for an error left by an
// earlier call: a plain one (a refused launch configuration, say) is cleared
// and forgotten; a sticky one (a kernel's fault: an illegal address, a trap)
// cannot be cleared, the context is unusable, and it is returned without
// launching, so that the caller reports it as an earlier asynchronous
// operation's (describe_error) instead of as this launch's.
cudaError_t take_earlier_error();

// Checks the launch just made (and, with debug sync on, waits for it).
cudaError_t finish_launch(cudaStream_t stream);

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

namespace kvcache::kernels::cuda {

// Where a page of a gather's table goes: the output row of its first token
// and the tokens it holds.
struct PageOfTable {
  std::int64_t first_row = 0;
  std::int32_t tokens = 0;
};

// One thread's binary search over indptr for flat page `flat_page`.
__device__ __forceinline__ PageOfTable locate_page(const PageTableView& table,
                                                   std::int32_t flat_page, std::int32_t page_size) {
  const std::int32_t b = owning_sequence(table.indptr, table.batch_size, flat_page);
  const std::int32_t first = table.indptr[b];
  PageOfTable at;
  at.first_row = table.out_row_offset[b] + std::int64_t{flat_page - first} * page_size;
  at.tokens = tokens_in_page(flat_page - first, table.indptr[b + 1] - first, table.last_page_len[b],
                             page_size);
  return at;
}

// The CTA's page, searched for once (by thread 0) and shared, instead of by
// every thread. Every thread of the CTA must call it, once (it synchronizes).
__device__ __forceinline__ PageOfTable page_of_table(const PageTableView& table,
                                                     std::int32_t flat_page,
                                                     std::int32_t page_size) {
  __shared__ PageOfTable shared;
  if (threadIdx.x == 0) shared = locate_page(table, flat_page, page_size);
  __syncthreads();
  return shared;
}

}  // namespace kvcache::kernels::cuda
