// Paged attention (kvcache/kernels/attention.hpp): one warp per (query row,
// query head), a lane per thread. Each lane keeps its softmax state and
// accumulator in shared memory (rows padded by one float against bank
// conflicts); after a warp barrier each thread merges the lanes for its
// dimensions. The math is the header's, so the result equals the CPU
// backend's bit for bit (this file is compiled with --fmad=false).
#include "common.cuh"
#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {
namespace {

template <class T>
__global__ void __launch_bounds__(kAttentionLanes) attention_kernel(AttentionParams p) {
  extern __shared__ float shared[];
  const std::int32_t d = p.cache.head_dim;
  const std::int32_t stride = d + 1;
  float* acc = shared;                             // [lanes][d + 1]
  float* max = shared + kAttentionLanes * stride;  // [lanes]
  float* sum = max + kAttentionLanes;              // [lanes]
  const auto row = static_cast<std::int32_t>(blockIdx.x);
  const auto head = static_cast<std::int32_t>(blockIdx.y);
  const auto lane = static_cast<std::int32_t>(threadIdx.x);
  attention_lane<T>(p, row, head, lane, acc + lane * stride, 1, max[lane], sum[lane]);
  __syncwarp();
  float* out = p.out + (static_cast<std::int64_t>(row) * p.num_q_heads + head) * d;
  attention_merge_lane(max, sum, acc, stride, d, lane, out);
}

}  // namespace

cudaError_t launch(const AttentionParams& p, cudaStream_t stream) {
  if (attention_problem(p) != nullptr) return cudaErrorInvalidValue;
  if (p.num_rows == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  const dim3 grid(static_cast<unsigned>(p.num_rows), static_cast<unsigned>(p.num_q_heads));
  const auto shared =
      static_cast<std::size_t>(kAttentionLanes * (p.cache.head_dim + 1) + 2 * kAttentionLanes) *
      sizeof(float);
  dispatch_dtype(p.cache.dtype, [&]<class T>() {
    attention_kernel<T><<<grid, kAttentionLanes, shared, stream>>>(p);
  });
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
