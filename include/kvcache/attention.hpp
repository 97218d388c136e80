// Paged attention over a manager's plain cache, on its backend (the CPU
// backend or the GPU): the reference consumer of the exported page table.
//
//   PagedAttention attention(cache, num_q_heads, 1 / sqrt(head_dim));   // once
//   each step:
//     AppendBatch batch = cache.prepare_append(seqs, new_tokens);
//     attention.prepare(batch);                       // the step's tables, one upload
//     for each layer: cache.append(layer, batch, k, v);
//                     attention.run(layer, q, out);   // q, out: backend memory
//     cache.commit(batch);
//
// The query rows are the batch's new tokens ([rows][num_q_heads][head_dim]
// fp32, sequences in batch order); each attends causally to its sequence's
// cached keys up to its own position. The tables are uploaded once per step
// and serve every layer; their buffer is reused from step to step. The math,
// and so the result bit for bit on either backend, is
// kvcache/kernels/attention.hpp's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <utility>
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
  // For a manager's cache, `num_q_heads` query heads (a multiple of its KV
  // heads), scores scaled by `scale`. Nothing is uploaded until prepare().
  PagedAttention(Manager& manager, std::int32_t num_q_heads, float scale) : manager_(manager) {
    const std::int32_t kv_heads = manager.shape().num_kv_heads;
    if (num_q_heads < kv_heads || num_q_heads % kv_heads != 0) {
      detail::raise<InvalidArgument>(
          "PagedAttention: {} query heads (allowed: a positive multiple of the {} KV heads)",
          num_q_heads, kv_heads);
    }
    if (num_q_heads > kernels::kAttentionMaxQueryHeads) {
      detail::raise<InvalidArgument>("PagedAttention: {} query heads (allowed up to {})",
                                     num_q_heads, kernels::kAttentionMaxQueryHeads);
    }
    if (manager.shape().head_dim > kernels::kAttentionMaxHeadDim) {
      detail::raise<Unsupported>("PagedAttention: head_dim {} (allowed up to {})",
                                 manager.shape().head_dim, kernels::kAttentionMaxHeadDim);
    }
    params_.num_q_heads = num_q_heads;
    params_.scale = scale;
  }

  // Constructed and prepared for one step or one set of sequences.
  PagedAttention(Manager& manager, const AppendBatch& batch, std::int32_t num_q_heads, float scale)
      : PagedAttention(manager, num_q_heads, scale) {
    prepare(batch);
  }
  PagedAttention(Manager& manager, std::span<const SeqId> seqs, std::span<const std::int32_t> rows,
                 std::int32_t num_q_heads, float scale)
      : PagedAttention(manager, num_q_heads, scale) {
    prepare(seqs, rows);
  }

  // The step of `batch` (before commit): its new tokens are the queries.
  void prepare(const AppendBatch& batch) {
    upload(export_flashinfer(manager_, batch), batch.new_tokens());
  }

  // Committed sequences: the last rows[b] tokens of seqs[b] are the queries.
  void prepare(std::span<const SeqId> seqs, std::span<const std::int32_t> rows) {
    if (rows.size() != seqs.size()) {
      detail::raise<InvalidArgument>("PagedAttention: {} row counts for {} sequences", rows.size(),
                                     seqs.size());
    }
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const std::int64_t tokens = manager_.sequence(seqs[b]).num_tokens;
      if (rows[b] < 0 || rows[b] > tokens) {
        detail::raise<InvalidArgument>(
            "PagedAttention: {} query rows for sequence {} of {} tokens (allowed 0 to {})", rows[b],
            seqs[b], tokens, tokens);
      }
    }
    upload(export_flashinfer(manager_, seqs), rows);
  }

  std::int32_t num_rows() const { return params_.num_rows; }
  std::int32_t num_q_heads() const { return params_.num_q_heads; }

  // Writes out = attention(q) for `layer`; throws InvalidArgument (layer out
  // of range, or nothing prepared), CudaError on a failed launch. The tables
  // are those of the last prepare(): run it within that step (before release,
  // eviction or fork change the sequences' pages).
  //
  // The object owns the uploaded tables and reuses their buffer from step to
  // step (it grows when a step needs more); destroying the object right after
  // run() is safe because freeing device memory waits for the device.
  void run(std::int32_t layer, const float* q, float* out) {
    if (layer < 0 || layer >= manager_.shape().num_layers) {
      detail::raise<InvalidArgument>("PagedAttention::run: layer {} outside [0, {})", layer,
                                     manager_.shape().num_layers);
    }
    if (params_.q_indptr == nullptr)
      detail::raise<InvalidArgument>("PagedAttention::run: nothing prepared");
    kernels::AttentionParams p = params_;
    p.cache = manager_.codec().view();
    p.layer = layer;
    p.q = q;
    p.out = out;
    launch(manager_.backend(), p);
  }

 private:
  // Uploads q_indptr, indptr, last_page_len and indices in one copy. Checks
  // everything before changing anything.
  void upload(const FlashInferPageTable& table, std::span<const std::int32_t> rows) {
    std::vector<std::int32_t>& packed = packed_;  // kept: no host allocation once warm
    packed.assign(rows.size() + 1, 0);
    std::int64_t total = 0;
    for (std::size_t b = 0; b < rows.size(); ++b) {
      total += rows[b];
      if (total > std::numeric_limits<std::int32_t>::max()) {
        detail::raise<InvalidArgument>("PagedAttention: {} query rows or more (allowed up to {})",
                                       total, std::numeric_limits<std::int32_t>::max());
      }
      packed[b + 1] = static_cast<std::int32_t>(total);
    }
    const std::size_t q_size = packed.size();
    const std::initializer_list<const std::vector<std::int32_t>*> parts = {
        &table.indptr, &table.last_page_len, &table.indices};
    for (const auto* part : parts)
      packed.insert(packed.end(), part->begin(), part->end());
    const std::size_t bytes = packed.size() * sizeof(std::int32_t);
    // A larger buffer replaces the old one only once it holds the new tables.
    Buffer grown;
    if (bytes > tables_.size())
      grown = manager_.backend().allocate(std::max(bytes, 2 * tables_.size()));
    Buffer& target = bytes > tables_.size() ? grown : tables_;
    manager_.backend().copy_to_backend(target.data(), packed.data(), bytes);
    if (&target == &grown) tables_ = std::move(grown);
    const auto* base = static_cast<const std::int32_t*>(tables_.data());
    params_.q_indptr = base;
    params_.table.indptr = base + q_size;
    params_.table.last_page_len = params_.table.indptr + table.indptr.size();
    params_.table.indices = params_.table.last_page_len + table.last_page_len.size();
    params_.table.batch_size = static_cast<std::int32_t>(rows.size());
    params_.table.total_pages = static_cast<std::int32_t>(table.indices.size());
    params_.num_rows = static_cast<std::int32_t>(total);
  }

  Manager& manager_;
  Buffer tables_;
  std::vector<std::int32_t> packed_;  // the host side of the last upload
  kernels::AttentionParams params_;
};

}  // namespace kvcache
