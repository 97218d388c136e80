// Paged gather: copy a batch of sequences' K/V for one layer into packed
// [tokens][heads][head_dim] buffers, reading the cache through a
// FlashInfer-style page table (indptr / indices / last_page_len).
//
// One CTA per page of the table (mapping::gather_vector). The CTA finds its
// sequence by binary search over indptr, then moves the page's valid rows, K
// then V, in 16-byte vectors, kUnroll loads in flight per thread.
#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/mapping.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

__global__ void __launch_bounds__(kThreads) gather_kernel(GatherParams p) {
  const PageTableView& table = p.table;
  const auto flat_page = static_cast<std::int32_t>(blockIdx.x);
  const std::int32_t b = owning_sequence(table.indptr, table.batch_size, flat_page);
  const std::int32_t first = table.indptr[b];
  const std::int32_t num_pages = table.indptr[b + 1] - first;
  const std::int32_t page_in_sequence = flat_page - first;
  const PagedKVView& cache = p.cache;
  const std::int32_t tokens =
      tokens_in_page(page_in_sequence, num_pages, table.last_page_len[b], cache.page_size);
  const std::int64_t page = table.indices[flat_page];
  const std::int64_t out_row =
      table.out_row_offset[b] + static_cast<std::int64_t>(page_in_sequence) * cache.page_size;

  const auto vecs_per_row = static_cast<std::int32_t>(cache.row_bytes() / 16);
  const std::int32_t total = 2 * vecs_per_row * cache.num_heads * tokens;
  const std::int64_t out_token_bytes = std::int64_t{vecs_per_row} * cache.num_heads * 16;
  auto* k_out = static_cast<std::byte*>(p.out.k) + out_row * out_token_bytes;
  auto* v_out = static_cast<std::byte*>(p.out.v) + out_row * out_token_bytes;
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
        const mapping::GatherVector v =
            mapping::gather_vector(index, tokens, cache.num_heads, vecs_per_row);
        values[i] = *reinterpret_cast<const uint4*>(k_page + v.kv * cache.kv_bytes +
                                                    v.token * cache.token_bytes +
                                                    v.head * cache.head_bytes + v.vec * 16);
        targets[i] = (v.kv ? v_out : k_out) + static_cast<std::int64_t>(v.in_kv) * 16;
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      if (targets[i] != nullptr) __stcs(reinterpret_cast<uint4*>(targets[i]), values[i]);
    }
  }
}

}  // namespace

cudaError_t launch(const GatherParams& p, cudaStream_t stream) {
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (p.table.batch_size == 0 || p.table.total_pages == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  gather_kernel<<<static_cast<unsigned>(p.table.total_pages), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
