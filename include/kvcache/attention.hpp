// Paged attention over a manager's plain cache, on its backend (the CPU
// backend or the GPU): the reference consumer of the exported page table.
//
//   AppendBatch batch = cache.prepare_append(seqs, new_tokens);
//   PagedAttention attention(cache, batch, num_q_heads, 1 / sqrt(head_dim));
//   for each layer: cache.append(layer, batch, k, v);
//                   attention.run(layer, q, out);   // q, out: backend memory
//   cache.commit(batch);
//
// The query rows are the batch's new tokens ([rows][num_q_heads][head_dim]
// fp32, sequences in batch order); each attends causally to its sequence's
// cached keys up to its own position. The tables are uploaded once at
// construction and serve every layer of the step. The math, and so the
// result bit for bit on either backend, is kvcache/kernels/attention.hpp's.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <vector>

#include "kvcache/append_batch.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/error.hpp"
#include "kvcache/export.hpp"
#include "kvcache/kernels/attention.hpp"

namespace kvcache {

template <class Manager>
class PagedAttention {
  static_assert(Manager::Codec::kKind == CodecKind::kPlain,
                "PagedAttention reads plain pages; compressed caches are read with gather()");

 public:
  // The step of `batch` (before commit): its new tokens are the queries.
  PagedAttention(Manager& manager, const AppendBatch& batch, std::int32_t num_q_heads, float scale)
      : PagedAttention(manager, export_flashinfer(manager, batch), batch.new_tokens(), num_q_heads,
                       scale) {}

  // Committed sequences: the last rows[b] tokens of seqs[b] are the queries.
  PagedAttention(Manager& manager, std::span<const SeqId> seqs, std::span<const std::int32_t> rows,
                 std::int32_t num_q_heads, float scale)
      : PagedAttention(manager, checked_table(manager, seqs, rows), rows, num_q_heads, scale) {}

  std::int32_t num_rows() const { return params_.num_rows; }
  std::int32_t num_q_heads() const { return params_.num_q_heads; }

  // Writes out = attention(q) for `layer`; throws InvalidArgument (layer out
  // of range), CudaError on a failed launch. The tables are those of
  // construction: run it within the step it was made for (before release,
  // eviction or fork change the sequences' pages).
  //
  // The object owns the uploaded tables; destroying it right after run() is
  // safe because freeing device memory waits for the device (cudaFree).
  void run(std::int32_t layer, const float* q, float* out) {
    if (layer < 0 || layer >= manager_.shape().num_layers) {
      detail::raise<InvalidArgument>("PagedAttention::run: layer {} outside [0, {})", layer,
                                     manager_.shape().num_layers);
    }
    kernels::AttentionParams p = params_;
    p.cache = manager_.codec().view();
    p.layer = layer;
    p.q = q;
    p.out = out;
    launch(manager_.backend(), p);
  }

 private:
  static FlashInferPageTable checked_table(Manager& manager, std::span<const SeqId> seqs,
                                           std::span<const std::int32_t> rows) {
    if (rows.size() != seqs.size()) {
      detail::raise<InvalidArgument>("PagedAttention: {} row counts for {} sequences", rows.size(),
                                     seqs.size());
    }
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const std::int64_t tokens = manager.sequence(seqs[b]).num_tokens;
      if (rows[b] < 0 || rows[b] > tokens) {
        detail::raise<InvalidArgument>(
            "PagedAttention: {} query rows for sequence {} of {} tokens (allowed 0 to {})", rows[b],
            seqs[b], tokens, tokens);
      }
    }
    return export_flashinfer(manager, seqs);
  }

  PagedAttention(Manager& manager, const FlashInferPageTable& table,
                 std::span<const std::int32_t> rows, std::int32_t num_q_heads, float scale)
      : manager_(manager) {
    const std::int32_t kv_heads = manager.shape().num_kv_heads;
    if (num_q_heads < kv_heads || num_q_heads % kv_heads != 0) {
      detail::raise<InvalidArgument>(
          "PagedAttention: {} query heads (allowed: a positive multiple of the {} KV heads)",
          num_q_heads, kv_heads);
    }
    if (manager.shape().head_dim > kernels::kAttentionMaxHeadDim) {
      detail::raise<Unsupported>("PagedAttention: head_dim {} (allowed up to {})",
                                 manager.shape().head_dim, kernels::kAttentionMaxHeadDim);
    }
    std::vector<std::int32_t> q_indptr(rows.size() + 1, 0);
    std::int64_t total = 0;
    for (std::size_t b = 0; b < rows.size(); ++b) {
      total += rows[b];
      if (total > std::numeric_limits<std::int32_t>::max()) {
        detail::raise<InvalidArgument>("PagedAttention: {} query rows or more (allowed up to {})",
                                       total, std::numeric_limits<std::int32_t>::max());
      }
      q_indptr[b + 1] = static_cast<std::int32_t>(total);
    }
    // One upload: q_indptr, indptr, last_page_len, indices.
    std::vector<std::int32_t> packed;
    packed.reserve(q_indptr.size() + table.indptr.size() + table.last_page_len.size() +
                   table.indices.size());
    const std::initializer_list<const std::vector<std::int32_t>*> parts = {
        &q_indptr, &table.indptr, &table.last_page_len, &table.indices};
    for (const auto* part : parts)
      packed.insert(packed.end(), part->begin(), part->end());
    tables_ = manager.backend().allocate(packed.size() * sizeof(std::int32_t));
    manager.backend().copy_to_backend(tables_.data(), packed.data(),
                                      packed.size() * sizeof(std::int32_t));
    const auto* base = static_cast<const std::int32_t*>(tables_.data());
    params_.q_indptr = base;
    params_.table.indptr = base + q_indptr.size();
    params_.table.last_page_len = params_.table.indptr + table.indptr.size();
    params_.table.indices = params_.table.last_page_len + table.last_page_len.size();
    params_.table.batch_size = static_cast<std::int32_t>(rows.size());
    params_.table.total_pages = static_cast<std::int32_t>(table.indices.size());
    params_.num_rows = q_indptr.back();
    params_.num_q_heads = num_q_heads;
    params_.scale = scale;
  }

  Manager& manager_;
  Buffer tables_;
  kernels::AttentionParams params_;
};

}  // namespace kvcache
