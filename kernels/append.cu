// Paged append: scatter each new token's K and V rows into its slot.
//
// One CTA per token (mapping::append_vector): a token's K and V are
// 2 x num_heads rows of row_bytes; the CTA's threads split them into 16-byte
// vectors, load kUnroll vectors each before storing any, and write them to
// the page the slot points at. Padding tokens (slot -1) return at once.
#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/mapping.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kUnroll = 4;

__global__ void append_kernel(AppendParams p) {
  const auto token = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t slot = p.slots.slots[token];
  if (slot < 0) return;
  const PagedKVView& cache = p.cache;
  const std::int64_t page = slot / cache.page_size;
  const auto token_in_page = static_cast<std::int32_t>(slot - page * cache.page_size);
  const auto vecs_per_row = static_cast<std::int32_t>(cache.row_bytes() / 16);
  const std::int32_t total = 2 * vecs_per_row * cache.num_heads;
  const std::int64_t k_base = cache.row_offset(page, p.layer, 0, token_in_page, 0);
  const std::int32_t stride = static_cast<std::int32_t>(blockDim.x) * kUnroll;
  for (std::int32_t base = static_cast<std::int32_t>(threadIdx.x); base < total; base += stride) {
    uint4 values[kUnroll];
    std::int64_t targets[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const std::int32_t index = base + i * static_cast<std::int32_t>(blockDim.x);
      targets[i] = -1;
      if (index < total) {
        const mapping::AppendVector v =
            mapping::append_vector(index, cache.num_heads, vecs_per_row);
        values[i] = detail::load_streaming(p.source.row(v.kv, token, v.head) + v.vec * 16);
        targets[i] = k_base + v.kv * cache.kv_bytes + v.head * cache.head_bytes + v.vec * 16;
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      if (targets[i] >= 0) detail::store(cache.data + targets[i], values[i]);
    }
  }
}

}  // namespace

cudaError_t launch(const AppendParams& p, cudaStream_t stream) {
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (p.slots.num_tokens == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  const auto vectors = static_cast<std::int32_t>(2 * p.cache.row_bytes() / 16 * p.cache.num_heads);
  const std::int32_t threads = mapping::append_threads(vectors, kUnroll);
  append_kernel<<<static_cast<unsigned>(p.slots.num_tokens), static_cast<unsigned>(threads), 0,
                  stream>>>(p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
