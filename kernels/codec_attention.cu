// Paged attention over compressed pages (kvcache/kernels/codec_attention.hpp):
// one warp per (query row, query head), a lane per thread, as for plain pages
// (kernels/attention.cu). The warp first writes the query as the codec reads
// it into shared memory (low-rank: projected into the key basis), each lane
// then runs its keys, and the lanes' states are merged per accumulator
// element and mapped to the output (low-rank: through the value basis). The
// math is the header's, so the result equals the CPU backend's bit for bit
// (this file is compiled with --fmad=false).
#include "common.cuh"
#include "kvcache/kernels/codec_attention.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {
namespace {

template <class Rows, class T>
__global__ void __launch_bounds__(kAttentionLanes)
    codec_attention_kernel(CodecAttentionParams<Rows> p) {
  extern __shared__ float shared[];
  const auto row = static_cast<std::int32_t>(blockIdx.x);
  const auto head = static_cast<std::int32_t>(blockIdx.y);
  const auto lane = static_cast<std::int32_t>(threadIdx.x);
  const auto r = codec_attention_row<Rows, T>(p, row, head);
  const std::int32_t dim = r.reader.dim();
  const std::int32_t stride = dim | 1;          // odd: no bank conflicts between the lanes' rows
  float* acc = shared;                          // [lanes][dim | 1]
  float* max = acc + kAttentionLanes * stride;  // [lanes]
  float* sum = max + kAttentionLanes;           // [lanes]
  float* query = sum + kAttentionLanes;         // [dim]
  float* merged = query + dim;                  // [dim]
  for (std::int32_t i = lane; i < dim; i += kAttentionLanes)
    query[i] = r.reader.query(r.q, i);
  __syncwarp();
  attention_lane_over(r.reader, r.keys, query, p.scale, lane, acc + lane * stride, 1, max[lane],
                      sum[lane]);
  __syncwarp();
  const AttentionMergeWeights weights = attention_merge_weights(max, sum);
  for (std::int32_t i = lane; i < dim; i += kAttentionLanes)
    merged[i] = attention_merged(weights, acc, stride, 1, i);
  __syncwarp();
  float* out = p.out + (static_cast<std::int64_t>(row) * p.num_q_heads + head) * p.cache.head_dim;
  for (std::int32_t i = lane; i < p.cache.head_dim; i += kAttentionLanes)
    out[i] = canonical_float(r.reader.output(merged, i));
}

template <class Rows, class T>
void start(const CodecAttentionParams<Rows>& p, cudaStream_t stream) {
  const std::int32_t dim = CodecAttentionReader<Rows, T>{&p, nullptr, 0, 0, 0}.dim();
  const dim3 grid(static_cast<unsigned>(p.num_rows), static_cast<unsigned>(p.num_q_heads));
  const auto shared =
      static_cast<std::size_t>(kAttentionLanes * (dim | 1) + 2 * kAttentionLanes + 2 * dim) *
      sizeof(float);
  codec_attention_kernel<Rows, T><<<grid, kAttentionLanes, shared, stream>>>(p);
}

}  // namespace

template <class Rows>
cudaError_t launch(const CodecAttentionParams<Rows>& p, cudaStream_t stream) {
  if (codec_attention_problem(p) != nullptr) return cudaErrorInvalidValue;
  if (p.num_rows == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  if constexpr (ChannelKeyRows<Rows>) {
    // KIVI reads its window's plain rows of the model's dtype.
    dispatch_dtype(p.cache.dtype, [&]<class T>() { start<Rows, T>(p, stream); });
  } else {
    start<Rows, float>(p, stream);  // the other codecs decode to float whatever the dtype
  }
  return detail::finish_launch(stream);
}

#define KVCACHE_CUDA_INSTANTIATE_ATTENTION(...) \
  template cudaError_t launch<__VA_ARGS__>(const CodecAttentionParams<__VA_ARGS__>&, cudaStream_t);
KVCACHE_CUDA_INT8_CODECS(KVCACHE_CUDA_INSTANTIATE_ATTENTION)
KVCACHE_CUDA_FP8_CODECS(KVCACHE_CUDA_INSTANTIATE_ATTENTION)
KVCACHE_CUDA_KIVI_CODECS(KVCACHE_CUDA_INSTANTIATE_ATTENTION)
KVCACHE_CUDA_LOW_RANK_CODECS(KVCACHE_CUDA_INSTANTIATE_ATTENTION)
#undef KVCACHE_CUDA_INSTANTIATE_ATTENTION

}  // namespace kvcache::kernels::cuda
