// Page tables exported to an engine's own attention kernels.
//
// FlashInfer form (BatchDecode/BatchPrefill with paged KV): sequence b owns
// pages indices[indptr[b] .. indptr[b+1]), its last page holds
// last_page_len[b] tokens. vLLM form (paged_attention, reshape_and_cache):
// block_table[b][i] is the i-th block of sequence b, seq_lens[b] its length,
// slot_mapping[t] = block * block_size + offset of new token t (-1: padding).
//
// Both carry the addressing of the arena: a layer's K (or V) cache is a
// tensor of `num_pages` pages at k_data(layer) (v_data(layer)) with the
// element strides below; the page stride spans all layers because one block
// id is valid in every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/layout.hpp"

namespace kvcache {

struct CacheAddressing {
  std::byte* base = nullptr;
  std::int64_t layer_stride_bytes = 0;
  std::int64_t kv_stride_bytes = 0;
  // Element strides of a layer's K or V tensor [page][token][head][dim]
  // (NHD) or [page][head][token][dim] (HND); the dim stride is 1.
  std::int64_t stride_page = 0;
  std::int64_t stride_token = 0;
  std::int64_t stride_head = 0;
  std::int32_t num_pages = 0;
  std::int32_t page_size = 0;
  std::int32_t num_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kF16;
  KVLayout layout = KVLayout::kNHD;
  // kPlain: element strides of dtype. Otherwise the pages hold codes and the
  // strides are in bytes (see the codec storage's view(): manager.codec().view()).
  CodecKind codec = CodecKind::kPlain;

  void* k_data(std::int32_t layer) const { return base + layer * layer_stride_bytes; }
  void* v_data(std::int32_t layer) const {
    return base + layer * layer_stride_bytes + kv_stride_bytes;
  }
};

struct FlashInferPageTable {
  std::vector<std::int32_t> indptr;         // [batch + 1]
  std::vector<std::int32_t> indices;        // [indptr[batch]]
  std::vector<std::int32_t> last_page_len;  // [batch], 0 only for an empty sequence
  CacheAddressing cache;
};

struct VllmPageTable {
  std::int32_t max_blocks_per_seq = 0;
  std::vector<std::int32_t> block_table;      // [batch][max_blocks_per_seq], padded with -1
  std::vector<std::int32_t> seq_lens;         // [batch], tokens including this step's
  std::vector<std::int32_t> query_start_loc;  // [batch + 1], offsets of the new tokens
  std::vector<std::int64_t> slot_mapping;     // [padded new tokens], -1 for padding
  CacheAddressing cache;
};

}  // namespace kvcache
