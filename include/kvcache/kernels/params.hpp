// Parameter blocks of the cache kernels: plain data passed by value, the same
// for the CUDA launchers and the CPU backend. Every pointer is in the memory of
// the backend that runs the kernel (device memory for CUDA).
#pragma once

#include <cstdint>

#include "kvcache/layout.hpp"

namespace kvcache::kernels {

// Scatter new K/V rows into their slots (vLLM's reshape_and_cache).
struct AppendParams {
  PagedKVView cache;
  std::int32_t layer = 0;
  // k, v: [num_tokens][num_heads][head_dim] rows of cache.dtype; a row is
  // contiguous and 16-byte aligned, tokens and heads are `src_*_bytes` apart
  // (for K/V sliced out of a fused QKV tensor, pass that tensor's strides).
  const void* k = nullptr;
  const void* v = nullptr;
  std::int64_t src_token_bytes = 0;
  std::int64_t src_head_bytes = 0;
  // slot_mapping: [num_tokens], slot = page * page_size + token-in-page;
  // -1 marks a padding token that is skipped.
  const std::int64_t* slot_mapping = nullptr;
  std::int32_t num_tokens = 0;
};

// Copy the cached K/V of a batch of sequences into packed buffers, reading the
// cache through a FlashInfer-style page table.
struct GatherParams {
  PagedKVView cache;
  std::int32_t layer = 0;
  const std::int32_t* page_indptr = nullptr;   // [batch_size + 1], pages of sequence b are
  const std::int32_t* page_indices = nullptr;  // page_indices[page_indptr[b] .. [b+1])
  const std::int32_t* last_page_len =
      nullptr;  // [batch_size], tokens in the last page, 1..page_size
  const std::int64_t* out_row_offset = nullptr;  // [batch_size], first output token of sequence b
  // k_out, v_out: [total_tokens][num_heads][head_dim] packed, 16-byte aligned.
  void* k_out = nullptr;
  void* v_out = nullptr;
  std::int32_t batch_size = 0;
  std::int32_t total_pages = 0;  // page_indptr[batch_size]
};

// Copy whole pages (all layers, K and V, whatever their codec): copy-on-write,
// relocation, fork of a KIVI ring.
struct CopyBlocksParams {
  std::byte* data = nullptr;  // the arena: pages of page_bytes, 16-byte aligned
  std::int64_t page_bytes = 0;
  std::int32_t num_pages = 0;
  const std::int32_t* pairs = nullptr;  // [num_pairs][2]: (source page, destination page)
  std::int32_t num_pairs = 0;
};

}  // namespace kvcache::kernels
