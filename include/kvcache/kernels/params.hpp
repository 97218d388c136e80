// Parameter blocks of the cache kernels: plain data passed by value, the same
// for the CUDA launchers and the CPU backend, composed of a few shared parts
// (an append source, a slot mapping, a page table, a gather output). Every
// pointer is in the memory of the backend that runs the kernel (device memory
// for CUDA). The codec kernels' blocks are templates on the codec's row math
// (`Rows`), so a launch is dispatched on the codec at compile time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/layout.hpp"

namespace kvcache::kernels {

// ---- shared parts ---------------------------------------------------------------

// New K and V rows: [num_tokens][num_heads][head_dim] of the cache's dtype; a
// row is contiguous and 16-byte aligned, tokens and heads `token_bytes` and
// `head_bytes` apart (for K/V sliced out of a fused QKV tensor, pass that
// tensor's strides).
struct AppendSource {
  const void* k = nullptr;
  const void* v = nullptr;
  std::int64_t token_bytes = 0;
  std::int64_t head_bytes = 0;

  KVCACHE_HD const std::byte* row(std::int32_t kv, std::int64_t token, std::int32_t head) const {
    return static_cast<const std::byte*>(kv == 0 ? k : v) + token * token_bytes + head * head_bytes;
  }
};

// Where each new token goes: slots[t] = page * page_size + token-in-page, -1
// for a padding token that is skipped (vLLM's slot_mapping).
struct SlotMapping {
  const std::int64_t* slots = nullptr;  // [num_tokens]
  std::int32_t num_tokens = 0;
};

// A batch of sequences' pages (FlashInfer's paged_kv_t): sequence b owns
// pages indices[indptr[b] .. indptr[b + 1]), its last page holds
// last_page_len[b] tokens, and its rows go to output rows from
// out_row_offset[b] on.
struct PageTableView {
  const std::int32_t* indptr = nullptr;          // [batch_size + 1]
  const std::int32_t* indices = nullptr;         // [total_pages]
  const std::int32_t* last_page_len = nullptr;   // [batch_size], 1..page_size (0: empty)
  const std::int64_t* out_row_offset = nullptr;  // [batch_size + 1], prefix sums of lengths
  std::int32_t batch_size = 0;
  std::int32_t total_pages = 0;  // indptr[batch_size]
};

// Rows kept beside the pages (KIVI's full-precision window): sequence b's
// first paged_tokens[b] tokens are in its pages, the rest up to
// total_tokens[b] in side slot side_slot[b].
struct SideTable {
  const std::int64_t* paged_tokens = nullptr;  // [batch_size]
  const std::int64_t* total_tokens = nullptr;  // [batch_size]
  const std::int64_t* side_slot = nullptr;     // [batch_size]
  std::int64_t total_rows = 0;                 // sum of total_tokens
};

// Packed [rows][num_heads][head_dim] outputs of the cache's dtype, 16-byte aligned.
struct GatherOutput {
  void* k = nullptr;
  void* v = nullptr;
};

// ---- plain pages ----------------------------------------------------------------

// Scatter new K/V rows into their slots (vLLM's reshape_and_cache).
struct AppendParams {
  static constexpr const char* kName = "append";
  PagedKVView cache;
  std::int32_t layer = 0;
  AppendSource source;
  SlotMapping slots;
};

// Copy the cached K/V of a batch of sequences into packed outputs.
struct GatherParams {
  static constexpr const char* kName = "gather";
  PagedKVView cache;
  std::int32_t layer = 0;
  PageTableView table;
  GatherOutput out;
};

// Copy whole pages (all layers, K and V, whatever their codec): copy-on-write,
// relocation, fork of a KIVI ring.
struct CopyBlocksParams {
  static constexpr const char* kName = "copy_blocks";
  std::byte* data = nullptr;  // the pages: page_bytes apart, 16-byte aligned
  std::int64_t page_bytes = 0;
  std::int32_t num_pages = 0;
  const std::int32_t* pairs = nullptr;  // [num_pairs][2]: (source page, destination page)
  std::int32_t num_pairs = 0;
};

// ---- compressed pages (Rows: the codec's row math, see codec/) -----------------

// Per-token codecs (int8, fp8, low-rank): quantize new rows straight into
// their slots, in one pass.
template <class Rows>
struct CodecAppendParams {
  static constexpr const char* kName = "codec_append";
  CodecPageView cache;
  std::int32_t layer = 0;
  AppendSource source;
  SlotMapping slots;
  // Calibrated state, Rows::kStateFloats per (layer, K/V, head): fp8 scales,
  // low-rank bases [head_dim][rank]; null when the codec has none.
  const float* state = nullptr;
  unsigned long long* nonfinite = nullptr;  // counter of NaN / Inf inputs
};

// Dequantize a batch of sequences into packed outputs.
template <class Rows>
struct CodecGatherParams {
  static constexpr const char* kName = "codec_gather";
  CodecPageView cache;
  std::int32_t layer = 0;
  PageTableView table;
  GatherOutput out;
  const float* state = nullptr;
};

// KIVI: quantize whole groups of tokens into fresh pages. Each group's
// tokens come from the residual rings (a plain paged view whose pages are the
// sequences' rings) or from this step's new tokens.
template <class Rows>
struct KiviFlushParams {
  static constexpr const char* kName = "kivi_flush";
  CodecPageView cache;
  PagedKVView residual;
  std::int32_t layer = 0;
  AppendSource source;  // this step's new tokens
  // [num_groups][page_size]: >= 0: a residual slot (ring x ring size +
  // position); < 0: -(index of the new token) - 1.
  const std::int64_t* sources = nullptr;
  const std::int32_t* pages = nullptr;  // [num_groups] destination page
  std::int32_t num_groups = 0;
  unsigned long long* nonfinite = nullptr;

  // The row a flush source names: a ring slot, or one of the new tokens.
  KVCACHE_HD const std::byte* source_row(std::int64_t from, std::int32_t kv,
                                         std::int32_t head) const {
    if (from >= 0) return residual.data + residual.slot_offset(from, layer, kv, head);
    return source.row(kv, -from - 1, head);
  }
};

// KIVI: sequence b's tokens [0, paged) are in its pages, [paged, total) in its
// ring (side slot x ring size + position % ring size).
template <class Rows>
struct KiviGatherParams {
  static constexpr const char* kName = "kivi_gather";
  CodecPageView cache;
  PagedKVView residual;
  std::int32_t layer = 0;
  PageTableView table;
  SideTable side;
  GatherOutput out;
};

// The calibrated state of row (layer, kv, head): Rows::state_floats floats,
// or null for a codec without state.
template <class Rows>
KVCACHE_HD const float* row_state(const float* state, const CodecPageView& view, std::int32_t layer,
                                  std::int32_t kv, std::int32_t head) {
  if (Rows::state_floats(view.head_dim) == 0 || state == nullptr) return nullptr;
  const std::int64_t index = (static_cast<std::int64_t>(layer) * 2 + kv) * view.num_heads + head;
  return state + index * Rows::state_floats(view.head_dim);
}

// ---- calibration ----------------------------------------------------------------

// A [tokens][heads][head_dim] sample of the cache's dtype.
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
  static constexpr const char* kName = "abs_max";
  SampleView sample;
  float* out = nullptr;  // [heads], backend memory
};

// Top-`rank` principal directions of each head's rows: basis [heads][head_dim]
// [rank] (orthonormal columns; columns past the sample's rank are zero) and
// the fraction of energy they keep. `workspace` (workspace_bytes, backend
// memory) is the scratch the backend asked for (low_rank_fit_workspace).
struct LowRankFitParams {
  static constexpr const char* kName = "low_rank_fit";
  SampleView sample;
  std::int32_t rank = 0;
  float* basis = nullptr;        // backend memory
  float* energy_kept = nullptr;  // [heads], host memory
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

}  // namespace kvcache::kernels
