// Page tables for an engine's own attention kernels, read off a manager:
//
//   FlashInferPageTable t = export_flashinfer(cache, batch);   // indptr / indices / last_page_len
//   VllmPageTable v = export_vllm(cache, batch, padded);       // block_table / slot_mapping
//   CacheAddressing a = cache_addressing(cache);               // where layer l's K and V live
//
// With a batch the tables cover the committed tokens plus the batch's new
// ones (the table the attention of this step reads after append()); with a
// list of sequences, their committed tokens. Codecs that keep tokens outside
// the pages (KIVI's residual window) export no page table (PagedAttention
// reads them, pages and window).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/append_batch.hpp"
#include "kvcache/detail/manager_access.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/manager.hpp"
#include "kvcache/page_table.hpp"

namespace kvcache {

namespace detail {

template <class Manager>
void require_page_tables(const Manager&, const char* what) {
  using Storage = typename Manager::Storage;
  if constexpr (!Storage::kExportsPageTable) {
    raise<Unsupported>(
        "{}: the {} codec keeps each sequence's last tokens in a full-precision ring outside the "
        "pages; read it with gather() or attend it with PagedAttention",
        what, Manager::Codec::name());
  }
}

template <class Manager, class ExtraTokens>
FlashInferPageTable flashinfer_table(const Manager& m, std::span<const SeqId> seqs,
                                     ExtraTokens extra, const char* what) {
  FlashInferPageTable table;
  table.cache = m.codec().addressing(m.config().layout);
  table.indptr.reserve(seqs.size() + 1);
  table.indptr.push_back(0);
  const auto& sequences = ManagerAccess::sequences(m);
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const auto& s = sequences.find(seqs[b], what);
    const std::int64_t tokens = s.num_tokens + extra(b);
    const auto pages = static_cast<std::int32_t>(kernels::pages_for_tokens(tokens, m.block_size()));
    table.indices.insert(table.indices.end(), s.blocks.begin(), s.blocks.begin() + pages);
    table.indptr.push_back(table.indptr.back() + pages);
    table.last_page_len.push_back(kernels::last_page_length(tokens, m.block_size()));
  }
  return table;
}

}  // namespace detail

// How a layer's cache is addressed. For a compressed codec, base and strides
// describe the codes (strides in bytes); the codec's view() has the scales.
template <class Manager>
CacheAddressing cache_addressing(const Manager& m) {
  return m.codec().addressing(m.config().layout);
}

// Committed tokens of `seqs`.
template <class Manager>
FlashInferPageTable export_flashinfer(const Manager& m, std::span<const SeqId> seqs) {
  detail::require_page_tables(m, "export_flashinfer");
  for (SeqId seq : seqs)
    detail::ManagerAccess::sequences(m).find(seq, "export_flashinfer");
  return detail::flashinfer_table(
      m, seqs, [](std::size_t) { return std::int64_t{0}; }, "export_flashinfer");
}

// Committed tokens plus the batch's new ones.
template <class Manager>
FlashInferPageTable export_flashinfer(const Manager& m, const AppendBatch& batch) {
  detail::require_page_tables(m, "export_flashinfer");
  detail::ManagerAccess::check_batch(m, batch, "export_flashinfer");
  return detail::flashinfer_table(
      m, batch.sequences(), [&](std::size_t i) { return std::int64_t{batch.new_tokens()[i]}; },
      "export_flashinfer");
}

// vLLM's form for this step; slot_mapping padded with -1 to `pad_tokens_to`
// entries (0: no padding; else from the batch's token count up to
// CacheConfig::max_batch_tokens, the most a step may take, padded or not).
template <class Manager>
VllmPageTable export_vllm(const Manager& m, const AppendBatch& batch,
                          std::int64_t pad_tokens_to = 0) {
  detail::require_page_tables(m, "export_vllm");
  detail::ManagerAccess::check_batch(m, batch, "export_vllm");
  const std::int64_t most = m.config().max_batch_tokens;
  if (pad_tokens_to != 0 && (pad_tokens_to < batch.num_tokens() || pad_tokens_to > most)) {
    detail::raise<InvalidArgument>(
        "export_vllm: pad_tokens_to {} is outside [the batch's {} tokens, "
        "CacheConfig::max_batch_tokens {}] (or 0: no padding)",
        pad_tokens_to, batch.num_tokens(), most);
  }
  const auto& sequences = detail::ManagerAccess::sequences(m);
  VllmPageTable table;
  table.cache = cache_addressing(m);
  const auto seqs = batch.sequences();
  std::int32_t widest = 0;
  for (SeqId seq : seqs) {
    widest = std::max(widest,
                      static_cast<std::int32_t>(sequences.find(seq, "export_vllm").blocks.size()));
  }
  table.max_blocks_per_seq = widest;
  table.block_table.assign(seqs.size() * static_cast<std::size_t>(widest), -1);
  table.query_start_loc.push_back(0);
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const auto& s = sequences.find(seqs[b], "export_vllm");
    std::copy(s.blocks.begin(), s.blocks.end(),
              table.block_table.begin() + static_cast<std::ptrdiff_t>(b * widest));
    table.seq_lens.push_back(static_cast<std::int32_t>(s.num_tokens + batch.new_tokens()[b]));
    table.query_start_loc.push_back(table.query_start_loc.back() + batch.new_tokens()[b]);
  }
  table.slot_mapping.assign(batch.slot_mapping().begin(), batch.slot_mapping().end());
  table.slot_mapping.resize(
      static_cast<std::size_t>(std::max<std::int64_t>(pad_tokens_to, batch.num_tokens())), -1);
  return table;
}

}  // namespace kvcache
