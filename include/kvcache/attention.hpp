// Paged attention over a manager's cache, on its backend (the CPU backend or
// the GPU), whatever its codec: the reference consumer of the exported page
// table, and how a compressed cache is read where it lies.
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
// and serve every layer; their buffer is reused from step to step. Plain
// pages are read by kernels/attention.hpp; int8, fp8, KIVI and low-rank pages
// by kernels/codec_attention.hpp, decoding each key and value as it is read
// (no scratch copy of the cache); the result is the same bit for bit on
// either backend.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvcache/append_batch.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/detail/manager_access.hpp"
#include "kvcache/error.hpp"
#include "kvcache/export.hpp"
#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/codec_attention.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache {

namespace detail {
template <class Codec, bool Plain = Codec::kKind == CodecKind::kPlain>
struct AttentionParamsOf {
  using type = kernels::AttentionParams;
};
template <class Codec>
struct AttentionParamsOf<Codec, false> {
  using type = kernels::CodecAttentionParams<typename Codec::Rows>;
};
}  // namespace detail

template <class Manager>
class PagedAttention {
  static constexpr bool kPlain = Manager::Codec::kKind == CodecKind::kPlain;
  using Params = typename detail::AttentionParamsOf<typename Manager::Codec>::type;

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
    if constexpr (kPlain) {
      upload(export_flashinfer(manager_, batch), batch.new_tokens());
    } else {
      detail::ManagerAccess::check_batch(manager_, batch, "PagedAttention");
      upload(codec_tables(batch.sequences(), batch.new_tokens()), batch.new_tokens());
    }
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
    if constexpr (kPlain) {
      upload(export_flashinfer(manager_, seqs), rows);
    } else {
      upload(codec_tables(seqs, {}), rows);
    }
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
    launch(manager_.backend(), params(layer, q, out));
  }

  // The kernel's parameters run() launches (an engine may call the backend's
  // launcher itself); the same checks.
  Params params(std::int32_t layer, const float* q, float* out) const {
    if (layer < 0 || layer >= manager_.shape().num_layers) {
      detail::raise<InvalidArgument>("PagedAttention::run: layer {} outside [0, {})", layer,
                                     manager_.shape().num_layers);
    }
    if (params_.q_indptr == nullptr)
      detail::raise<InvalidArgument>("PagedAttention::run: nothing prepared");
    Params p = params_;
    p.cache = manager_.codec().view();
    if constexpr (!kPlain) {
      if constexpr (requires { manager_.codec().residual_view(); })
        p.residual = manager_.codec().residual_view();
      if constexpr (requires { manager_.codec().state_data(); })
        p.state = manager_.codec().state_data();
    }
    p.layer = layer;
    p.q = q;
    p.out = out;
    return p;
  }

 private:
  // A codec's tables: each sequence's pages of the tokens it holds in pages,
  // and per sequence (int64) those tokens, all its tokens, its side slot.
  // `extra`: this step's new tokens (empty: none).
  struct Tables {
    std::vector<std::int32_t> indptr{0}, last_page_len, indices;
    std::vector<std::int64_t> paged, total, side;
  };
  Tables codec_tables(std::span<const SeqId> seqs, std::span<const std::int32_t> extra) const {
    const auto& sequences = detail::ManagerAccess::sequences(manager_);
    const auto& storage = manager_.codec();
    Tables t;
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const auto& s = sequences.find(seqs[b], "PagedAttention");
      const std::int64_t tokens = s.num_tokens + (extra.empty() ? 0 : extra[b]);
      const std::int64_t paged = storage.paged_tokens(s.codec, tokens);
      const auto pages =
          static_cast<std::int32_t>(kernels::pages_for_tokens(paged, manager_.block_size()));
      t.indices.insert(t.indices.end(), s.blocks.begin(), s.blocks.begin() + pages);
      t.indptr.push_back(t.indptr.back() + pages);
      t.last_page_len.push_back(kernels::last_page_length(paged, manager_.block_size()));
      t.paged.push_back(paged);
      t.total.push_back(tokens);
      t.side.push_back(storage.side_slot(s.codec));
    }
    return t;
  }

  // Uploads every table in one copy: the int64 side tables (codecs) first,
  // then q_indptr, indptr, last_page_len and indices. Checks everything
  // before changing anything.
  template <class Table>
  void upload(const Table& table, std::span<const std::int32_t> rows) {
    std::vector<std::int32_t>& q_indptr = q_indptr_;  // kept: no host allocation once warm
    q_indptr.assign(rows.size() + 1, 0);
    std::int64_t total = 0;
    for (std::size_t b = 0; b < rows.size(); ++b) {
      total += rows[b];
      if (total > std::numeric_limits<std::int32_t>::max()) {
        detail::raise<InvalidArgument>("PagedAttention: {} query rows or more (allowed up to {})",
                                       total, std::numeric_limits<std::int32_t>::max());
      }
      q_indptr[b + 1] = static_cast<std::int32_t>(total);
    }
    std::vector<std::byte>& packed = packed_;
    packed.clear();
    auto put = [&](const auto& part) {
      const std::size_t at = packed.size();
      const std::size_t bytes = part.size() * sizeof(part[0]);
      packed.resize(at + bytes);
      if (bytes != 0) std::memcpy(packed.data() + at, part.data(), bytes);
      return at;
    };
    std::size_t side_at[3] = {0, 0, 0};
    if constexpr (requires { table.paged; }) {
      side_at[0] = put(table.paged);
      side_at[1] = put(table.total);
      side_at[2] = put(table.side);
    }
    const std::size_t q_at = put(q_indptr);
    const std::size_t indptr_at = put(table.indptr);
    const std::size_t last_at = put(table.last_page_len);
    const std::size_t indices_at = put(table.indices);
    const std::size_t bytes = packed.size();
    // A larger buffer replaces the old one only once it holds the new tables.
    Buffer grown;
    if (bytes > tables_.size())
      grown = manager_.backend().allocate(std::max(bytes, 2 * tables_.size()));
    Buffer& target = bytes > tables_.size() ? grown : tables_;
    manager_.backend().copy_to_backend(target.data(), packed.data(), bytes);
    if (&target == &grown) tables_ = std::move(grown);
    if constexpr (requires { table.paged; }) {
      params_.side.paged_tokens = table_at<std::int64_t>(side_at[0]);
      params_.side.total_tokens = table_at<std::int64_t>(side_at[1]);
      params_.side.side_slot = table_at<std::int64_t>(side_at[2]);
    }
    params_.q_indptr = table_at<std::int32_t>(q_at);
    params_.table.indptr = table_at<std::int32_t>(indptr_at);
    params_.table.last_page_len = table_at<std::int32_t>(last_at);
    params_.table.indices = table_at<std::int32_t>(indices_at);
    params_.table.batch_size = static_cast<std::int32_t>(rows.size());
    params_.table.total_pages = static_cast<std::int32_t>(table.indices.size());
    params_.num_rows = static_cast<std::int32_t>(total);
  }

  template <class T>
  const T* table_at(std::size_t offset) const {
    return reinterpret_cast<const T*>(static_cast<const std::byte*>(tables_.data()) + offset);
  }

  Manager& manager_;
  Buffer tables_;
  std::vector<std::int32_t> q_indptr_;
  std::vector<std::byte> packed_;  // the host side of the last upload
  Params params_;
};

}  // namespace kvcache
