// Calibration kernels: abs-max of a sample per head (fp8 scales, CUB block
// reductions) and, for the low-rank fit, the covariance of a sample per head
// and the extraction of the top eigenvectors cuSOLVER computed.
#include <cub/block/block_reduce.cuh>

#include "common.cuh"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/mapping.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Largest finite |x| of one head: grid (heads, chunks of the sample); each
// CTA reduces its chunk with CUB and folds it in with an integer atomicMax
// (non-negative floats order like their bit patterns). A thread's flat index
// i = token x head_dim + d advances by a fixed stride: (token, d) follow it
// by adds (mapping::SampleCursor), not a 64-bit division per element.
template <class T>
__global__ void __launch_bounds__(kThreads) abs_max_kernel(AbsMaxParams p) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const SampleView& s = p.sample;
  const auto head = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.y) * kThreads;
  mapping::SampleCursor at = mapping::SampleCursor::at(
      static_cast<std::int64_t>(blockIdx.y) * kThreads + threadIdx.x, s.head_dim);
  const mapping::SampleCursor step = mapping::SampleCursor::at(stride, s.head_dim);
  float local = 0.0f;
  while (at.token < s.num_tokens) {
    const auto* row =
        static_cast<const std::byte*>(s.data) + at.token * s.token_bytes + head * s.head_bytes;
    local = fmaxf(local, codec::finite_magnitude(load_element<T>(row, at.dim)));
    at.advance(step, s.head_dim);
  }
  const float block_max = Reduce(temp).Reduce(local, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(p.out + head), __float_as_int(block_max));
}

// covariance[h][i][j] = sum over tokens of x[t][h][i] * x[t][h][j]; grid
// (heads, row blocks), one thread per (i, j). (The fit is not bit-exact with
// the CPU's SVD anyway: fused multiply-adds are welcome here.)
template <class T>
__global__ void __launch_bounds__(kThreads) covariance_kernel(SampleView s, float* covariance) {
  const auto head = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t cells = std::int64_t{s.head_dim} * s.head_dim;
  for (std::int64_t cell = static_cast<std::int64_t>(blockIdx.y) * kThreads + threadIdx.x;
       cell < cells; cell += static_cast<std::int64_t>(gridDim.y) * kThreads) {
    const auto i = static_cast<std::int32_t>(cell / s.head_dim);
    const auto j = static_cast<std::int32_t>(cell - std::int64_t{i} * s.head_dim);
    float sum = 0.0f;
    for (std::int32_t t = 0; t < s.num_tokens; ++t) {
      const auto* row =
          static_cast<const std::byte*>(s.data) + t * s.token_bytes + head * s.head_bytes;
      float a = load_element<T>(row, i);
      float b = load_element<T>(row, j);
      a = codec::is_finite(a) ? a : 0.0f;
      b = codec::is_finite(b) ? b : 0.0f;
      sum += a * b;
    }
    // cuSOLVER reads column-major; the matrix is symmetric either way.
    covariance[std::int64_t{head} * cells + cell] = sum;
  }
}

__global__ void take_top_kernel(const float* eigenvectors, std::int32_t heads,
                                std::int32_t head_dim, std::int32_t rank,
                                std::int32_t valid_columns, float* basis) {
  const std::int64_t total = std::int64_t{heads} * head_dim * rank;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const auto head = static_cast<std::int32_t>(index / (std::int64_t{head_dim} * rank));
  const std::int64_t rest = index - std::int64_t{head} * head_dim * rank;
  const auto d = static_cast<std::int32_t>(rest / rank);
  const auto j = static_cast<std::int32_t>(rest - std::int64_t{d} * rank);
  const float* vectors = eigenvectors + std::int64_t{head} * head_dim * head_dim;
  basis[index] = j < valid_columns ? vectors[std::int64_t{head_dim - 1 - j} * head_dim + d] : 0.0f;
}

}  // namespace

cudaError_t launch(const AbsMaxParams& p, cudaStream_t stream) {
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  const SampleView& s = p.sample;
  if (s.num_heads <= 0 || s.head_dim <= 0 || s.num_tokens < 0 || p.out == nullptr)
    return cudaErrorInvalidValue;
  cudaError_t status =
      cudaMemsetAsync(p.out, 0, sizeof(float) * static_cast<std::size_t>(s.num_heads), stream);
  if (status != cudaSuccess || s.num_tokens == 0) return status;
  if (s.data == nullptr) return cudaErrorInvalidValue;
  const std::int64_t values = std::int64_t{s.num_tokens} * s.head_dim;
  const auto chunks = static_cast<unsigned>(
      std::min<std::int64_t>(1024, (values + kThreads * 8 - 1) / (kThreads * 8)));
  return dispatch_dtype(s.dtype, [&]<class T>() {
    abs_max_kernel<T><<<dim3(static_cast<unsigned>(s.num_heads), chunks), kThreads, 0, stream>>>(p);
    return detail::finish_launch(stream);
  });
}

cudaError_t launch_covariance(const SampleView& s, float* covariance, cudaStream_t stream) {
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  if (s.data == nullptr || covariance == nullptr || s.num_heads <= 0 || s.head_dim <= 0 ||
      s.num_tokens < 0) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t cells = std::int64_t{s.head_dim} * s.head_dim;
  const auto chunks =
      static_cast<unsigned>(std::min<std::int64_t>(256, (cells + kThreads - 1) / kThreads));
  return dispatch_dtype(s.dtype, [&]<class T>() {
    covariance_kernel<T>
        <<<dim3(static_cast<unsigned>(s.num_heads), chunks), kThreads, 0, stream>>>(s, covariance);
    return detail::finish_launch(stream);
  });
}

cudaError_t launch_take_top_eigenvectors(const float* eigenvectors, std::int32_t heads,
                                         std::int32_t head_dim, std::int32_t rank,
                                         std::int32_t valid_columns, float* basis,
                                         cudaStream_t stream) {
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  if (eigenvectors == nullptr || basis == nullptr || heads <= 0 || rank <= 0 || rank > head_dim) {
    return cudaErrorInvalidValue;
  }
  take_top_kernel<<<detail::blocks_for(std::int64_t{heads} * head_dim * rank, kThreads), kThreads,
                    0, stream>>>(eigenvectors, heads, head_dim, rank, valid_columns, basis);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
