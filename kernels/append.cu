// Paged append: scatter each new token's K and V rows into its slot.
//
// One CTA per token. A token's K and V are 2 x num_heads rows of row_bytes;
// the CTA's threads split them into 16-byte vectors, load kUnroll vectors
// each before storing any, and write them to the page the slot points at.
// Padding tokens (slot -1) return at once.
#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kUnroll = 4;

__global__ void append_kernel(AppendParams p) {
  const std::int32_t token = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t slot = p.slot_mapping[token];
  if (slot < 0) return;
  const PagedKVView& cache = p.cache;
  const std::int64_t page = slot / cache.page_size;
  const auto token_in_page = static_cast<std::int32_t>(slot - page * cache.page_size);
  const auto vecs_per_row = static_cast<std::int32_t>(cache.row_bytes() / 16);
  const std::int32_t vecs_per_kv = vecs_per_row * cache.num_heads;
  const std::int32_t total = 2 * vecs_per_kv;
  const auto* k = static_cast<const std::byte*>(p.k) + token * p.src_token_bytes;
  const auto* v = static_cast<const std::byte*>(p.v) + token * p.src_token_bytes;
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
        const std::int32_t kv = index >= vecs_per_kv ? 1 : 0;
        const std::int32_t in_kv = index - kv * vecs_per_kv;
        const std::int32_t head = in_kv / vecs_per_row;
        const std::int32_t vec = in_kv - head * vecs_per_row;
        const std::byte* source = (kv ? v : k) + head * p.src_head_bytes + vec * 16;
        values[i] = detail::load_streaming(source);
        targets[i] = k_base + kv * cache.kv_bytes + head * cache.head_bytes + vec * 16;
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      if (targets[i] >= 0) detail::store(cache.data + targets[i], values[i]);
    }
  }
}

}  // namespace

cudaError_t launch_append(const AppendParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.layer < 0 || p.layer >= p.cache.num_layers)
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  if (p.cache.data == nullptr || p.k == nullptr || p.v == nullptr || p.slot_mapping == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!detail::aligned16(p.cache.data) || !detail::aligned16(p.k) || !detail::aligned16(p.v) ||
      !detail::multiple_of_16(p.cache.row_bytes()) || !detail::multiple_of_16(p.src_token_bytes) ||
      !detail::multiple_of_16(p.src_head_bytes)) {
    return cudaErrorMisalignedAddress;
  }
  const auto total = static_cast<std::int32_t>(2 * p.cache.row_bytes() / 16 * p.cache.num_heads);
  // Enough threads that each moves about kUnroll vectors, a whole number of warps.
  int threads = (total + kUnroll - 1) / kUnroll;
  threads = threads < 32 ? 32 : (threads > 256 ? 256 : (threads + 31) / 32 * 32);
  append_kernel<<<static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(threads), 0, stream>>>(
      p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
