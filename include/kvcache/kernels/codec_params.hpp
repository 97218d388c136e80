// Parameter blocks of the compressed-cache kernels (plain data, the same for
// the CUDA launchers and the CPU backend; pointers in the backend's memory).
#pragma once

#include <cstdint>

#include "kvcache/codec/layout.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/layout.hpp"

namespace kvcache::kernels {

// Per-token codecs (int8, fp8, low-rank): quantize new K/V rows straight into
// their slots, in one pass.
struct CodecAppendParams {
  CodecPageView cache;
  std::int32_t layer = 0;
  const void* k = nullptr;  // [num_tokens][heads][head_dim] of cache.dtype, strides below
  const void* v = nullptr;
  std::int64_t src_token_bytes = 0;
  std::int64_t src_head_bytes = 0;
  const std::int64_t* slot_mapping = nullptr;  // [num_tokens], -1 skipped
  std::int32_t num_tokens = 0;
  // fp8: scales [layers][2][heads]; low-rank: bases [layers][2][heads][head_dim][rank].
  const float* state = nullptr;
  unsigned long long* nonfinite = nullptr;  // counter of NaN / Inf inputs
};

// Dequantize a batch of sequences (FlashInfer-style page table) into packed
// [tokens][heads][head_dim] buffers of cache.dtype.
struct CodecGatherParams {
  CodecPageView cache;
  std::int32_t layer = 0;
  const std::int32_t* page_indptr = nullptr;
  const std::int32_t* page_indices = nullptr;
  const std::int32_t* last_page_len = nullptr;
  const std::int64_t* out_row_offset = nullptr;
  void* k_out = nullptr;
  void* v_out = nullptr;
  std::int32_t batch_size = 0;
  std::int32_t total_pages = 0;
  const float* state = nullptr;
};

// KIVI: quantize whole groups of tokens into fresh pages. Each group's
// tokens come from the residual ring (a plain paged view whose pages are the
// sequences' rings) or from this step's new tokens.
struct KiviFlushParams {
  CodecPageView cache;
  PagedKVView residual;
  std::int32_t layer = 0;
  const void* k = nullptr;  // this step's new tokens, strides below
  const void* v = nullptr;
  std::int64_t src_token_bytes = 0;
  std::int64_t src_head_bytes = 0;
  // [num_groups][group_size]: >= 0: a residual slot (ring page x W + position);
  // < 0: -(index of the new token) - 1.
  const std::int64_t* sources = nullptr;
  const std::int32_t* pages = nullptr;  // [num_groups] destination page
  std::int32_t num_groups = 0;
  unsigned long long* nonfinite = nullptr;
};

// The row a KIVI flush source names: a ring slot, or one of the new tokens.
KVCACHE_HD const std::byte* flush_source_row(const KiviFlushParams& p, std::int64_t source,
                                             std::int32_t kv, std::int32_t head) {
  if (source >= 0) return p.residual.data + p.residual.slot_offset(source, p.layer, kv, head);
  return static_cast<const std::byte*>(kv == 0 ? p.k : p.v) + (-source - 1) * p.src_token_bytes +
         head * p.src_head_bytes;
}

// KIVI: sequence b's tokens [0, quantized) are in its pages, [quantized,
// total) in its ring (slot ring x W + position % W).
struct KiviGatherParams {
  CodecPageView cache;
  PagedKVView residual;
  std::int32_t layer = 0;
  const std::int32_t* page_indptr = nullptr;
  const std::int32_t* page_indices = nullptr;
  const std::int64_t* quantized_tokens = nullptr;  // [batch]
  const std::int64_t* total_tokens = nullptr;      // [batch]
  const std::int64_t* ring = nullptr;              // [batch] ring page in `residual`
  const std::int64_t* out_row_offset = nullptr;    // [batch + 1]: prefix sums of total_tokens
  void* k_out = nullptr;
  void* v_out = nullptr;
  std::int32_t batch_size = 0;
  std::int64_t total_rows = 0;
};

// A [tokens][heads][head_dim] sample of cache.dtype for calibration.
struct SampleView {
  const void* data = nullptr;
  DType dtype = DType::kF16;
  std::int32_t num_tokens = 0;
  std::int32_t num_heads = 0;
  std::int32_t head_dim = 0;
  std::int64_t token_bytes = 0;
  std::int64_t head_bytes = 0;
};

// Largest finite |x| per head of a sample (fp8 scales).
struct AbsMaxParams {
  SampleView sample;
  float* out = nullptr;  // [heads], backend memory
};

// Top-`rank` principal directions of each head's rows: basis [heads][head_dim]
// [rank] (orthonormal columns) and the fraction of energy they keep.
struct LowRankFitParams {
  SampleView sample;
  std::int32_t rank = 0;
  float* basis = nullptr;        // backend memory
  float* energy_kept = nullptr;  // [heads], host memory
};

}  // namespace kvcache::kernels
