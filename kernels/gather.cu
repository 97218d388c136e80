// Paged gather: copy a batch of sequences' K/V for one layer into packed
// [tokens][heads][head_dim] buffers, reading the cache through a
// FlashInfer-style page table (indptr / indices / last_page_len).
//
// One CTA per page of the table. Thread 0 finds the page's sequence (one
// binary search over indptr, shared). Each thread keeps one 16-byte vector
// of a row (tid % vectors per row) and walks the page's rows (K then V,
// tokens, heads fastest) 256 / (vectors per row) rows at a time with a cursor: no division
// per vector, kUnroll loads in flight.
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
  const PagedKVView& cache = p.cache;
  const PageOfTable at = page_of_table(table, flat_page, cache.page_size);
  const auto vecs_per_row = static_cast<std::int32_t>(cache.row_bytes() / 16);
  const std::int32_t rows_per_pass = kThreads / vecs_per_row;
  const auto thread = static_cast<std::int32_t>(threadIdx.x);
  const std::int32_t first_row = thread / vecs_per_row;
  const std::int32_t vec = thread - first_row * vecs_per_row;
  const std::int32_t rows = 2 * at.tokens * cache.num_heads;
  if (first_row >= rows_per_pass || first_row >= rows) return;
  const std::int32_t step_tokens = rows_per_pass / cache.num_heads;
  const std::int32_t step_heads = rows_per_pass - step_tokens * cache.num_heads;
  const std::int64_t out_token_bytes = std::int64_t{vecs_per_row} * cache.num_heads * 16;
  std::byte* const outs[2] = {static_cast<std::byte*>(p.out.k) + at.first_row * out_token_bytes,
                              static_cast<std::byte*>(p.out.v) + at.first_row * out_token_bytes};
  const std::byte* k_page =
      cache.data + cache.row_offset(table.indices[flat_page], p.layer, 0, 0, 0) + vec * 16;
  mapping::RowCursor row = mapping::RowCursor::at(first_row, at.tokens, cache.num_heads);
  while (!row.done()) {
    uint4 values[kUnroll];
    std::byte* targets[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      targets[i] = nullptr;
      if (!row.done()) {
        values[i] = *reinterpret_cast<const uint4*>(k_page + row.kv * cache.kv_bytes +
                                                    row.token * cache.token_bytes +
                                                    row.head * cache.head_bytes);
        targets[i] = outs[row.kv] +
                     (std::int64_t{row.token} * cache.num_heads + row.head) * vecs_per_row * 16 +
                     vec * 16;
        row.advance(step_tokens, step_heads, at.tokens, cache.num_heads);
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
