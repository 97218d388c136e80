// Compressed-cache kernels for the per-token codecs (int8, fp8, low-rank):
// fused quantize-append and dequantize-gather, plus the calibration helpers
// (abs-max with CUB block reductions, covariance for the low-rank fit).
//
// The per-element math is codec/row_codec.hpp and codec/quant_math.hpp,
// shared with the CPU backend; fp8 goes through cuda_fp8.h. Work units:
//   int8     one scale group (group_size values) of a row
//   fp8      8 values of a row (the scale is static)
//   low-rank one row (rank dot products of length head_dim)
#include <cub/block/block_reduce.cuh>

#include "common.cuh"
#include "kvcache/codec/row_codec.hpp"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int32_t kFp8Chunk = 8;

__host__ __device__ std::int32_t units_per_row(const CodecPageView& view) {
  switch (view.kind) {
    case CodecKind::kInt8:
      return view.head_dim / view.group_size;
    case CodecKind::kFp8:
      return (view.head_dim + kFp8Chunk - 1) / kFp8Chunk;
    default:
      return 1;
  }
}

// Encodes unit `unit` of a row; returns the non-finite inputs met.
template <class Load>
__device__ std::int32_t encode_unit(const CodecPageView& view, std::int32_t unit, Load load,
                                    std::uint8_t* codes, std::uint8_t* scales, const float* state) {
  if (view.kind == CodecKind::kInt8) {
    const std::int32_t group = view.group_size;
    return codec::int8_encode([&](std::int32_t i) { return load(unit * group + i); }, group,
                              reinterpret_cast<std::int8_t*>(codes) + unit * group,
                              scales + unit * view.scale_bytes, view.scale_bytes);
  }
  if (view.kind == CodecKind::kFp8) {
    const float inverse = codec::div_exact(1.0f, *state);
    std::int32_t nonfinite = 0;
    const std::int32_t end = min(view.head_dim, (unit + 1) * kFp8Chunk);
    for (std::int32_t i = unit * kFp8Chunk; i < end; ++i) {
      const float value = load(i);
      nonfinite += codec::is_finite(value) ? 0 : 1;
      codes[i] = codec::is_nan(value) ? std::uint8_t{0}
                                      : codec::fp8_encode(codec::mul_exact(value, inverse));
    }
    return nonfinite;
  }
  return codec::encode_row(view, load, codes, scales, state);  // low-rank: the whole row
}

__global__ void __launch_bounds__(kThreads) codec_append_kernel(CodecAppendParams p) {
  const CodecPageView& view = p.cache;
  const std::int32_t units = units_per_row(view);
  const std::int64_t per_token = std::int64_t{2} * view.num_heads * units;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int32_t nonfinite = 0;
  if (index < per_token * p.num_tokens) {
    const std::int64_t token = index / per_token;
    std::int64_t rest = index - token * per_token;
    const auto kv = static_cast<std::int32_t>(rest / (std::int64_t{view.num_heads} * units));
    rest -= std::int64_t{kv} * view.num_heads * units;
    const auto head = static_cast<std::int32_t>(rest / units);
    const auto unit = static_cast<std::int32_t>(rest - std::int64_t{head} * units);
    const std::int64_t slot = p.slot_mapping[token];
    if (slot >= 0) {
      const std::int64_t page = slot / view.page_size;
      const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
      const auto* row = static_cast<const std::byte*>(kv == 0 ? p.k : p.v) +
                        token * p.src_token_bytes + head * p.src_head_bytes;
      nonfinite = encode_unit(
          view, unit, [&](std::int32_t i) { return load_as_float(row, view.dtype, i); },
          view.row_codes(page, p.layer, kv, in_page, head),
          view.row_scales(page, p.layer, kv, in_page, head),
          codec::row_state(view, p.state, p.layer, kv, head));
    }
  }
  if (nonfinite != 0 && p.nonfinite != nullptr)
    atomicAdd(p.nonfinite, static_cast<unsigned long long>(nonfinite));
}

// One thread per (page, token in page, K/V, head) row of the table.
__global__ void __launch_bounds__(kThreads) codec_gather_kernel(CodecGatherParams p) {
  const CodecPageView& view = p.cache;
  const std::int64_t per_page = std::int64_t{view.page_size} * 2 * view.num_heads;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= per_page * p.total_pages) return;
  const auto flat_page = static_cast<std::int32_t>(index / per_page);
  std::int64_t rest = index - std::int64_t{flat_page} * per_page;
  const auto token = static_cast<std::int32_t>(rest / (2 * view.num_heads));
  rest -= std::int64_t{token} * 2 * view.num_heads;
  const auto kv = static_cast<std::int32_t>(rest / view.num_heads);
  const auto head = static_cast<std::int32_t>(rest - std::int64_t{kv} * view.num_heads);
  const std::int32_t b = owning_sequence(p.page_indptr, p.batch_size, flat_page);
  const std::int32_t first = p.page_indptr[b];
  const std::int32_t pages = p.page_indptr[b + 1] - first;
  const std::int32_t page_in_sequence = flat_page - first;
  if (token >= tokens_in_page(page_in_sequence, pages, p.last_page_len[b], view.page_size)) return;
  const std::int64_t page = p.page_indices[flat_page];
  const std::int64_t row =
      p.out_row_offset[b] + std::int64_t{page_in_sequence} * view.page_size + token;
  void* out = kv == 0 ? p.k_out : p.v_out;
  const std::int64_t base = (row * view.num_heads + head) * view.head_dim;
  codec::decode_row(
      view, view.row_codes(page, p.layer, kv, token, head),
      view.row_scales(page, p.layer, kv, token, head),
      codec::row_state(view, p.state, p.layer, kv, head),
      [&](std::int32_t d, float value) { store_from_float(out, view.dtype, base + d, value); });
}

// Largest finite |x| of one head: grid (heads, chunks of the sample); each
// CTA reduces its chunk with CUB and folds it in with an integer atomicMax
// (non-negative floats order like their bit patterns).
__global__ void __launch_bounds__(kThreads) abs_max_kernel(AbsMaxParams p) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const SampleView& s = p.sample;
  const auto head = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t values = std::int64_t{s.num_tokens} * s.head_dim;
  float local = 0.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.y) * kThreads + threadIdx.x; i < values;
       i += static_cast<std::int64_t>(gridDim.y) * kThreads) {
    const std::int64_t token = i / s.head_dim;
    const auto d = static_cast<std::int32_t>(i - token * s.head_dim);
    const auto* row =
        static_cast<const std::byte*>(s.data) + token * s.token_bytes + head * s.head_bytes;
    const float value = load_as_float(row, s.dtype, d);
    if (codec::is_finite(value)) local = fmaxf(local, fabsf(value));
  }
  const float block_max = Reduce(temp).Reduce(local, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(p.out + head), __float_as_int(block_max));
}

// covariance[h][i][j] = sum over tokens of x[t][h][i] * x[t][h][j]; grid
// (heads, row blocks), one thread per (i, j).
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
      float a = load_as_float(row, s.dtype, i);
      float b = load_as_float(row, s.dtype, j);
      a = codec::is_finite(a) ? a : 0.0f;
      b = codec::is_finite(b) ? b : 0.0f;
      sum += a * b;
    }
    // cuSOLVER reads column-major; the matrix is symmetric either way.
    covariance[std::int64_t{head} * cells + cell] = sum;
  }
}

__global__ void take_top_kernel(const float* eigenvectors, std::int32_t heads,
                                std::int32_t head_dim, std::int32_t rank, float* basis) {
  const std::int64_t total = std::int64_t{heads} * head_dim * rank;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const auto head = static_cast<std::int32_t>(index / (std::int64_t{head_dim} * rank));
  std::int64_t rest = index - std::int64_t{head} * head_dim * rank;
  const auto d = static_cast<std::int32_t>(rest / rank);
  const auto j = static_cast<std::int32_t>(rest - std::int64_t{d} * rank);
  const float* vectors = eigenvectors + std::int64_t{head} * head_dim * head_dim;
  basis[index] = vectors[std::int64_t{head_dim - 1 - j} * head_dim + d];
}

unsigned blocks_for(std::int64_t threads) {
  return static_cast<unsigned>((threads + kThreads - 1) / kThreads);
}

bool valid_codec_view(const CodecPageView& view) {
  return view.data != nullptr && view.num_heads > 0 && view.head_dim > 0 && view.page_size > 0 &&
         view.kind != CodecKind::kPlain && (view.kind != CodecKind::kInt8 || view.group_size > 0);
}

}  // namespace

cudaError_t launch_codec_append(const CodecAppendParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.layer < 0 || p.layer >= p.cache.num_layers)
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  if (!valid_codec_view(p.cache) || p.k == nullptr || p.v == nullptr || p.slot_mapping == nullptr) {
    return cudaErrorInvalidValue;
  }
  if ((p.cache.kind == CodecKind::kFp8 || p.cache.kind == CodecKind::kLowRank) &&
      p.state == nullptr) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t units =
      std::int64_t{p.num_tokens} * 2 * p.cache.num_heads * units_per_row(p.cache);
  codec_append_kernel<<<blocks_for(units), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

cudaError_t launch_codec_gather(const CodecGatherParams& p, cudaStream_t stream) {
  if (p.batch_size < 0 || p.total_pages < 0 || p.layer < 0 || p.layer >= p.cache.num_layers) {
    return cudaErrorInvalidValue;
  }
  if (p.total_pages == 0) return cudaSuccess;
  if (!valid_codec_view(p.cache) || p.page_indptr == nullptr || p.page_indices == nullptr ||
      p.last_page_len == nullptr || p.out_row_offset == nullptr || p.k_out == nullptr ||
      p.v_out == nullptr) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t rows = std::int64_t{p.total_pages} * p.cache.page_size * 2 * p.cache.num_heads;
  codec_gather_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

cudaError_t launch_abs_max(const AbsMaxParams& p, cudaStream_t stream) {
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
  abs_max_kernel<<<dim3(static_cast<unsigned>(s.num_heads), chunks), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

cudaError_t launch_covariance(const SampleView& s, float* covariance, cudaStream_t stream) {
  if (s.data == nullptr || covariance == nullptr || s.num_heads <= 0 || s.head_dim <= 0 ||
      s.num_tokens < 0) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t cells = std::int64_t{s.head_dim} * s.head_dim;
  const auto chunks =
      static_cast<unsigned>(std::min<std::int64_t>(256, (cells + kThreads - 1) / kThreads));
  covariance_kernel<<<dim3(static_cast<unsigned>(s.num_heads), chunks), kThreads, 0, stream>>>(
      s, covariance);
  return detail::finish_launch(stream);
}

cudaError_t launch_take_top_eigenvectors(const float* eigenvectors, std::int32_t heads,
                                         std::int32_t head_dim, std::int32_t rank, float* basis,
                                         cudaStream_t stream) {
  if (eigenvectors == nullptr || basis == nullptr || heads <= 0 || rank <= 0 || rank > head_dim) {
    return cudaErrorInvalidValue;
  }
  take_top_kernel<<<blocks_for(std::int64_t{heads} * head_dim * rank), kThreads, 0, stream>>>(
      eigenvectors, heads, head_dim, rank, basis);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
