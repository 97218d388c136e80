// Copy whole pages (every layer, K and V) from source to destination ids:
// copy-on-write of a shared block and relocation of a grown region.
//
// Grid: x over pairs, y over chunks of a page; each thread moves 16-byte
// vectors with kUnroll loads in flight. Pairs must not overlap (the manager
// never copies a page onto a page that is also a source in the same call).
#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr std::int64_t kVecsPerChunk = kThreads * kUnroll * 8;

__global__ void __launch_bounds__(kThreads) copy_blocks_kernel(CopyBlocksParams p) {
  const std::int64_t source = p.pairs[2 * blockIdx.x];
  const std::int64_t target = p.pairs[2 * blockIdx.x + 1];
  const std::int64_t page_vecs = p.page_bytes / 16;
  const auto* from = reinterpret_cast<const uint4*>(p.data + source * p.page_bytes);
  auto* to = reinterpret_cast<uint4*>(p.data + target * p.page_bytes);
  const std::int64_t begin = blockIdx.y * kVecsPerChunk;
  const std::int64_t end = begin + kVecsPerChunk < page_vecs ? begin + kVecsPerChunk : page_vecs;
  for (std::int64_t base = begin + threadIdx.x; base < end; base += kThreads * kUnroll) {
    uint4 values[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const std::int64_t index = base + i * kThreads;
      if (index < end) values[i] = __ldcs(from + index);
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const std::int64_t index = base + i * kThreads;
      if (index < end) to[index] = values[i];
    }
  }
}

}  // namespace

cudaError_t launch(const CopyBlocksParams& p, cudaStream_t stream) {
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (p.num_pairs == 0) return cudaSuccess;
  const std::int64_t chunks = (p.page_bytes / 16 + kVecsPerChunk - 1) / kVecsPerChunk;
  if (chunks > 65535) return cudaErrorInvalidValue;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  const dim3 grid(static_cast<unsigned>(p.num_pairs), static_cast<unsigned>(chunks));
  copy_blocks_kernel<<<grid, kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
