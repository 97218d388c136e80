// Paged gather: copy a batch of sequences' K/V for one layer into packed
// [tokens][heads][head_dim] buffers, reading the cache through a
// FlashInfer-style page table (indptr / indices / last_page_len).
//
// One CTA per page of the table. The CTA finds its sequence by binary search
// over indptr, then moves the page's valid rows, K then V, in 16-byte vectors,
// kUnroll loads in flight per thread.
#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

__global__ void __launch_bounds__(kThreads) gather_kernel(GatherParams p) {
  const auto flat_page = static_cast<std::int32_t>(blockIdx.x);
  const std::int32_t b = owning_sequence(p.page_indptr, p.batch_size, flat_page);
  const std::int32_t first = p.page_indptr[b];
  const std::int32_t num_pages = p.page_indptr[b + 1] - first;
  const std::int32_t page_in_sequence = flat_page - first;
  const PagedKVView& cache = p.cache;
  const std::int32_t tokens =
      tokens_in_page(page_in_sequence, num_pages, p.last_page_len[b], cache.page_size);
  const std::int64_t page = p.page_indices[flat_page];
  const std::int64_t out_row =
      p.out_row_offset[b] + static_cast<std::int64_t>(page_in_sequence) * cache.page_size;

  const auto vecs_per_row = static_cast<std::int32_t>(cache.row_bytes() / 16);
  const std::int32_t vecs_per_token = vecs_per_row * cache.num_heads;
  const std::int32_t vecs_per_kv = vecs_per_token * tokens;
  const std::int32_t total = 2 * vecs_per_kv;
  const std::int64_t out_token_bytes = static_cast<std::int64_t>(vecs_per_token) * 16;
  auto* k_out = static_cast<std::byte*>(p.k_out) + out_row * out_token_bytes;
  auto* v_out = static_cast<std::byte*>(p.v_out) + out_row * out_token_bytes;
  const std::byte* k_page = cache.data + cache.row_offset(page, p.layer, 0, 0, 0);

  for (std::int32_t base = static_cast<std::int32_t>(threadIdx.x); base < total;
       base += kThreads * kUnroll) {
    uint4 values[kUnroll];
    std::byte* targets[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const std::int32_t index = base + i * kThreads;
      targets[i] = nullptr;
      if (index < total) {
        const std::int32_t kv = index >= vecs_per_kv ? 1 : 0;
        const std::int32_t in_kv = index - kv * vecs_per_kv;
        const std::int32_t token = in_kv / vecs_per_token;
        const std::int32_t in_token = in_kv - token * vecs_per_token;
        const std::int32_t head = in_token / vecs_per_row;
        const std::int32_t vec = in_token - head * vecs_per_row;
        values[i] = *reinterpret_cast<const uint4*>(k_page + kv * cache.kv_bytes +
                                                    token * cache.token_bytes +
                                                    head * cache.head_bytes + vec * 16);
        targets[i] = (kv ? v_out : k_out) + static_cast<std::int64_t>(in_kv) * 16;
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      if (targets[i] != nullptr) __stcs(reinterpret_cast<uint4*>(targets[i]), values[i]);
    }
  }
}

}  // namespace

cudaError_t launch_gather(const GatherParams& p, cudaStream_t stream) {
  if (p.batch_size < 0 || p.total_pages < 0 || p.layer < 0 || p.layer >= p.cache.num_layers) {
    return cudaErrorInvalidValue;
  }
  if (p.total_pages == 0) return cudaSuccess;
  if (p.cache.data == nullptr || p.page_indptr == nullptr || p.page_indices == nullptr ||
      p.last_page_len == nullptr || p.out_row_offset == nullptr || p.k_out == nullptr ||
      p.v_out == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!detail::aligned16(p.cache.data) || !detail::aligned16(p.k_out) ||
      !detail::aligned16(p.v_out) || !detail::multiple_of_16(p.cache.row_bytes())) {
    return cudaErrorMisalignedAddress;
  }
  gather_kernel<<<static_cast<unsigned>(p.total_pages), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
