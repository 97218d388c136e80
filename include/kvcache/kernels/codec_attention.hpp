// Attention over compressed pages, read where they lie: the loop of
// kernels/attention.hpp with a reader per codec family that decodes each key
// and value as it is read (nothing is materialized).
//
//   int8, fp8 (per-token rows): a row's codes and scales decoded in index
//     order by the codec's own Rows::decode, straight into the dot product
//     or the accumulator.
//   KIVI: tokens below the sequence's paged count are in its pages (keys per
//     channel: code, scale and zero of channel i at token t; values per
//     token); the rest, its full-precision window, in its ring, read as
//     plain rows of the model's dtype.
//   low-rank: the query is projected once into the key basis (q U_k, rank
//     floats), a score is (q U_k) . c over the stored coefficients, the
//     softmax-weighted sum is kept in coefficient space (rank floats) and
//     the value basis is applied once to the merged sum: the cost per key
//     falls with the rank.
//
// The math is host-device and unfused, as for plain pages, so the CPU
// backend and the CUDA kernel give the same bits.
#pragma once

#include <cstdint>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::kernels {

template <class Rows>
struct CodecAttentionParams {
  static constexpr const char* kName = "codec_attention";
  CodecPageView cache;
  PagedKVView residual;  // KIVI's rings; unused by the other codecs
  std::int32_t layer = 0;
  // Sequence b's pages: those of its first side.paged_tokens[b] tokens; its
  // keys are its first side.total_tokens[b] tokens (the rest, KIVI's window,
  // in ring side.side_slot[b]). last_page_len and out_row_offset are not read.
  PageTableView table;
  SideTable side;
  const float* state = nullptr;            // fp8 scales, low-rank bases (row_state)
  const std::int32_t* q_indptr = nullptr;  // [batch_size + 1]
  const float* q = nullptr;                // [num_rows][num_q_heads][head_dim]
  float* out = nullptr;                    // [num_rows][num_q_heads][head_dim]
  std::int32_t num_rows = 0;
  std::int32_t num_q_heads = 0;
  float scale = 1.0f;
};

// Codec families, by what their row math offers.
template <class Rows>
concept ChannelKeyRows = requires {
  Rows::kChannelCodeBytes;
};  // KIVI
template <class Rows>
concept LowRankKeyRows = requires {
  Rows::kRank;
};  // low-rank

// The widest accumulator a codec's reader asks for (head_dim or the rank).
inline constexpr std::int32_t kCodecAttentionMaxDim = kAttentionMaxHeadDim;

// The coefficient space a codec attends in (low-rank: its rank; 0: none).
template <class Rows>
constexpr std::int32_t codec_attention_rank() {
  if constexpr (LowRankKeyRows<Rows>) {
    return Rows::kRank;
  } else {
    return 0;
  }
}

// Key and value j of one sequence's KV head, T the model's dtype (KIVI's
// window rows; the other codecs decode to float whatever T is).
template <class Rows, class T>
struct CodecAttentionReader {
  static_assert(codec_attention_rank<Rows>() <= kCodecAttentionMaxDim,
                "a low-rank codec attends in a space of at most 256 coefficients");
  using RowMath = Rows;
  static constexpr bool kProjected = LowRankKeyRows<Rows>;  // attends in coefficient space
  const CodecAttentionParams<Rows>* p;
  const std::int32_t* pages;  // the sequence's
  std::int64_t paged;         // its tokens in pages
  std::int64_t ring;          // KIVI: its ring's first slot
  std::int32_t kv_head;

  KVCACHE_HD const CodecPageView& view() const { return p->cache; }
  KVCACHE_HD const float* state(std::int32_t kv) const {
    return row_state<Rows>(p->state, view(), p->layer, kv, kv_head);
  }
  KVCACHE_HD std::int64_t page_of(std::int64_t j) const { return pages[j / view().page_size]; }
  KVCACHE_HD std::int32_t token_of(std::int64_t j) const {
    return static_cast<std::int32_t>(j % view().page_size);
  }

  KVCACHE_HD std::int32_t dim() const {
    if constexpr (LowRankKeyRows<Rows>) {
      return Rows::kRank;
    } else {
      return view().head_dim;
    }
  }

  // Element i of the query as dot() reads it: the query itself, or for
  // low-rank (q U_k)_i = sum over e of q_e U_k[e][i], in index order.
  KVCACHE_HD float query(const float* q, std::int32_t i) const {
    if constexpr (LowRankKeyRows<Rows>) {
      const float* basis = state(0);
      float sum = 0.0f;
      for (std::int32_t e = 0; e < view().head_dim; ++e)
        sum = codec::add_exact(sum, codec::mul_exact(q[e], basis[e * Rows::kRank + i]));
      return sum;
    } else {
      return q[i];
    }
  }

  // A plain row of KIVI's window (position j, K or V).
  KVCACHE_HD const std::byte* ring_row(std::int32_t kv, std::int64_t j) const {
    const std::int64_t slot = ring + j % p->residual.page_size;
    return p->residual.data + p->residual.slot_offset(slot, p->layer, kv, kv_head);
  }

  // Visits value i of key (kv 0) or value (kv 1) row j in index order.
  template <class Visit>
  KVCACHE_HD void row(std::int32_t kv, std::int64_t j, Visit visit) const {
    if constexpr (ChannelKeyRows<Rows>) {
      if (j >= paged) {
        const std::byte* r = ring_row(kv, j);
        for (std::int32_t i = 0; i < view().head_dim; ++i)
          visit(i, load_element<T>(r, i));
        return;
      }
      if (kv == 0) {
        const auto* region =
            reinterpret_cast<const std::uint8_t*>(view().region_base(page_of(j), p->layer, 0));
        for (std::int32_t i = 0; i < view().head_dim; ++i)
          visit(i, Rows::decode_key(view(), region, kv_head, i, token_of(j)));
        return;
      }
    }
    const std::int64_t page = page_of(j);
    const std::int32_t token = token_of(j);
    Rows::decode(view().head_dim, view().row_codes(page, p->layer, kv, token, kv_head),
                 view().row_scales(page, p->layer, kv, token, kv_head), state(kv), visit);
  }

  // The stored codes of row j (K or V) and coefficient c of a low-rank row.
  KVCACHE_HD const std::uint8_t* codes_of(std::int32_t kv, std::int64_t j) const {
    return view().row_codes(page_of(j), p->layer, kv, token_of(j), kv_head);
  }
  KVCACHE_HD static float coefficient(const std::uint8_t* codes, std::int32_t c) {
    return codec::load_scale(codes + c * Rows::kCoefficientBytes, Rows::kCoefficientBytes);
  }

  KVCACHE_HD float dot(const float* q, std::int64_t j) const {
    if constexpr (LowRankKeyRows<Rows>) {
      const std::uint8_t* codes = codes_of(0, j);
      return attention_dot(q, Rows::kRank, [&](std::int32_t c) { return coefficient(codes, c); });
    } else {
      float dot = 0.0f;
      row(0, j,
          [&](std::int32_t i, float k) { dot = codec::add_exact(dot, codec::mul_exact(q[i], k)); });
      return dot;
    }
  }

  KVCACHE_HD void accumulate(float* acc, std::int32_t acc_stride, float keep, float weight,
                             std::int64_t j) const {
    if constexpr (LowRankKeyRows<Rows>) {
      const std::uint8_t* codes = codes_of(1, j);
      attention_accumulate(acc, acc_stride, Rows::kRank, keep, weight,
                           [&](std::int32_t c) { return coefficient(codes, c); });
    } else {
      row(1, j, [&](std::int32_t i, float v) {
        float& a = acc[i * acc_stride];
        a = codec::add_exact(codec::mul_exact(a, keep), codec::mul_exact(weight, v));
      });
    }
  }

  // Output element i from the merged accumulator: itself, or for low-rank
  // sum over c of merged_c U_v[i][c], in index order.
  KVCACHE_HD float output(const float* merged, std::int32_t i) const {
    if constexpr (LowRankKeyRows<Rows>) {
      const float* basis = state(1);
      float sum = 0.0f;
      for (std::int32_t c = 0; c < Rows::kRank; ++c)
        sum = codec::add_exact(sum, codec::mul_exact(merged[c], basis[i * Rows::kRank + c]));
      return sum;
    } else {
      return merged[i];
    }
  }
};

// A query row's reader and key count.
template <class Rows, class T>
struct CodecAttentionRow {
  CodecAttentionReader<Rows, T> reader;
  std::int64_t keys = 0;
  const float* q = nullptr;  // the row's query for this head
};

template <class Rows, class T>
KVCACHE_HD CodecAttentionRow<Rows, T> codec_attention_row(const CodecAttentionParams<Rows>& p,
                                                          std::int32_t row, std::int32_t q_head) {
  const std::int32_t b = owning_sequence(p.q_indptr, p.table.batch_size, row);
  CodecAttentionRow<Rows, T> r;
  r.reader.p = &p;
  r.reader.pages = p.table.indices + p.table.indptr[b];
  r.reader.paged = p.side.paged_tokens[b];
  r.reader.ring = p.side.side_slot[b] < 0 ? 0 : p.side.side_slot[b] * p.residual.page_size;
  r.reader.kv_head = q_head / (p.num_q_heads / p.cache.num_heads);
  r.keys = p.side.total_tokens[b] - (p.q_indptr[b + 1] - row) + 1;
  r.q = p.q + (std::int64_t{row} * p.num_q_heads + q_head) * p.cache.head_dim;
  return r;
}

// Why `p` cannot run (a static message), or null.
template <class Rows>
const char* codec_attention_problem(const CodecAttentionParams<Rows>& p) {
  const CodecPageView& c = p.cache;
  if (p.num_rows < 0 || p.table.batch_size < 0) return "a negative row or sequence count";
  if (p.num_rows == 0) return nullptr;
  if (c.data == nullptr || p.q == nullptr || p.out == nullptr || p.q_indptr == nullptr ||
      p.table.indptr == nullptr || p.table.indices == nullptr || p.side.paged_tokens == nullptr ||
      p.side.total_tokens == nullptr || p.side.side_slot == nullptr)
    return "a null pointer";
  if (Rows::state_floats(c.head_dim) > 0 && p.state == nullptr) return "a null codec state";
  if constexpr (ChannelKeyRows<Rows>) {
    const PagedKVView& r = p.residual;
    if (r.data == nullptr || r.page_size < 1) return "no residual rings";
    if (r.dtype != c.dtype || r.num_heads != c.num_heads || r.head_dim != c.head_dim ||
        r.num_layers != c.num_layers)
      return "residual rings of another shape than the pages";
  }
  return attention_geometry_problem(p);
}

}  // namespace kvcache::kernels
KVCACHE_EXACT_FP_END
