// Attention over the paged cache: the cache's consumer, as an engine's
// decode (or chunked-prefill) kernel reads it. Query rows of a batch of
// sequences attend, causally, to their sequences' cached K/V (plain pages,
// any dtype, NHD or HND, grouped-query heads) through a FlashInfer-style page
// table, after this step's K/V have been appended.
//
// The math is written once, host-device: 32 lanes per (query row, head), lane
// l taking keys l, l + 32, ... with an online softmax, then the lanes merged
// in a fixed order. The CUDA kernel runs a lane per thread of a warp; the CPU
// backend runs the lanes in turn. Every product and sum is unfused and the
// exponential is the polynomial below on both, so the CPU and the GPU give
// the same bits (a NaN result is stored as the canonical NaN, whichever
// processor's arithmetic made it).
#pragma once

#include <cstdint>

#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::kernels {

struct AttentionParams {
  static constexpr const char* kName = "paged_attention";
  PagedKVView cache;
  std::int32_t layer = 0;
  // The sequences' pages, holding every token up to this step's last
  // (export_flashinfer of the step's batch); out_row_offset is not read.
  PageTableView table;
  // Query rows of sequence b: q_indptr[b] .. q_indptr[b + 1] ([batch_size + 1]);
  // they are the sequence's last tokens, in order (row r attends to keys
  // 0 .. its own position).
  const std::int32_t* q_indptr = nullptr;
  const float* q = nullptr;  // [num_rows][num_q_heads][head_dim]
  float* out = nullptr;      // [num_rows][num_q_heads][head_dim]
  std::int32_t num_rows = 0;
  std::int32_t num_q_heads = 0;  // a multiple of the cache's heads
  float scale = 1.0f;            // usually 1 / sqrt(head_dim)
};

inline constexpr std::int32_t kAttentionLanes = 32;
inline constexpr std::int32_t kAttentionMaxHeadDim = 256;
inline constexpr std::int32_t kAttentionMaxQueryHeads = 65535;  // the CUDA grid's y

// e^x from adds, multiplies and bit operations only (no library call), so the
// host and the device agree; relative error below 4e-7 for x in
// [-87, 88], 0 below, +Inf above (and for +Inf), NaN for NaN.
KVCACHE_HD float attention_exp(float x) {
  using codec::add_exact;
  using codec::mul_exact;
  if (x != x) return x;
  if (x < -87.0f) return 0.0f;
  if (x > 88.0f) return ::kvcache::detail::bits_float(0x7f800000u);
  const float n = codec::round_even(mul_exact(x, 1.44269504088896341f));
  // x - n ln 2 in two steps (ln 2 = hi + lo, hi exact in a few bits).
  const float r =
      add_exact(add_exact(x, -mul_exact(n, 0.693359375f)), mul_exact(n, 2.12194440e-4f));
  // Taylor to degree 7 on |r| <= 0.347.
  float p = 1.0f / 5040.0f;
  p = add_exact(mul_exact(p, r), 1.0f / 720.0f);
  p = add_exact(mul_exact(p, r), 1.0f / 120.0f);
  p = add_exact(mul_exact(p, r), 1.0f / 24.0f);
  p = add_exact(mul_exact(p, r), 1.0f / 6.0f);
  p = add_exact(mul_exact(p, r), 0.5f);
  p = add_exact(mul_exact(p, r), 1.0f);
  p = add_exact(mul_exact(p, r), 1.0f);
  // Scale by 2^n (n in [-126, 127] after the clamps) in two halves, each a
  // normal power of two.
  const auto e = static_cast<std::int32_t>(n);
  const std::int32_t half = e / 2;
  const float a = ::kvcache::detail::bits_float(static_cast<std::uint32_t>(half + 127) << 23);
  const float b = ::kvcache::detail::bits_float(static_cast<std::uint32_t>(e - half + 127) << 23);
  return mul_exact(mul_exact(p, a), b);
}

// Where query row `row` stands: its sequence, the KV head it reads and the
// number of keys it attends to (its position + 1).
struct AttentionRow {
  std::int32_t sequence = 0;
  std::int64_t keys = 0;
};

KVCACHE_HD AttentionRow attention_row(const AttentionParams& p, std::int32_t row) {
  AttentionRow r;
  r.sequence = owning_sequence(p.q_indptr, p.table.batch_size, row);
  const std::int32_t b = r.sequence;
  const std::int32_t pages = p.table.indptr[b + 1] - p.table.indptr[b];
  const std::int64_t kv_len =
      pages == 0 ? 0 : std::int64_t{pages - 1} * p.cache.page_size + p.table.last_page_len[b];
  r.keys = kv_len - (p.q_indptr[b + 1] - row) + 1;
  return r;
}

// One lane's share of the keys of one (row, query head): keys lane, lane +
// kAttentionLanes, ... with an online softmax over what `reader` gives:
//   reader.dim()                      accumulator width (head_dim; a codec
//                                     may attend in a space of its own)
//   reader.dot(q, j)                  q . key j, summed in a fixed order
//   reader.accumulate(acc, stride, keep, weight, j)
//                                     acc[i] = acc[i] x keep + weight x value_j[i]
// `acc` (dim() floats, `acc_stride` apart) receives the lane's unnormalized
// weighted sum, `max` and `sum` its softmax state. Every codec shares this
// loop: only the reading of a key and a value differs.
template <class Reader>
KVCACHE_HD void attention_lane_over(const Reader& reader, std::int64_t keys, const float* q,
                                    float scale, std::int32_t lane, float* acc,
                                    std::int32_t acc_stride, float& max, float& sum) {
  using codec::add_exact;
  using codec::mul_exact;
  for (std::int32_t i = 0; i < reader.dim(); ++i)
    acc[i * acc_stride] = 0.0f;
  max = -::kvcache::detail::bits_float(0x7f800000u);
  sum = 0.0f;
  for (std::int64_t j = lane; j < keys; j += kAttentionLanes) {
    const float score = mul_exact(reader.dot(q, j), scale);
    // A key scored -Inf has weight 0 wherever it comes (exp(-Inf - -Inf)
    // would otherwise make the lane NaN when it comes first).
    if (score == -::kvcache::detail::bits_float(0x7f800000u)) continue;
    // Online softmax: rescale what came before when the maximum moves.
    float keep = 1.0f, weight = 1.0f;
    if (score > max) {
      keep = attention_exp(add_exact(max, -score));
      max = score;
    } else {
      weight = attention_exp(add_exact(score, -max));
    }
    sum = add_exact(mul_exact(sum, keep), weight);
    reader.accumulate(acc, acc_stride, keep, weight, j);
  }
}

// acc[i] = acc[i] x keep + weight x value(i), i in [0, dim): the value
// accumulation every reader shares.
template <class Value>
KVCACHE_HD void attention_accumulate(float* acc, std::int32_t acc_stride, std::int32_t dim,
                                     float keep, float weight, Value value) {
  using codec::add_exact;
  using codec::mul_exact;
  for (std::int32_t i = 0; i < dim; ++i) {
    float& a = acc[i * acc_stride];
    a = add_exact(mul_exact(a, keep), mul_exact(weight, value(i)));
  }
}

// q . row, in index order: the key dot product every reader shares.
template <class Value>
KVCACHE_HD float attention_dot(const float* q, std::int32_t dim, Value value) {
  float dot = 0.0f;
  for (std::int32_t i = 0; i < dim; ++i)
    dot = codec::add_exact(dot, codec::mul_exact(q[i], value(i)));
  return dot;
}

// Plain pages of element type T: key and value j of one sequence's KV head.
template <class T>
struct PlainAttentionReader {
  using Element = T;
  const PagedKVView* cache;
  const std::int32_t* pages;  // the sequence's
  std::int32_t layer;
  std::int32_t kv_head;

  KVCACHE_HD std::int32_t dim() const { return cache->head_dim; }
  KVCACHE_HD const std::byte* row(std::int32_t kv, std::int64_t j) const {
    const std::int64_t page = pages[j / cache->page_size];
    const auto token = static_cast<std::int32_t>(j % cache->page_size);
    return cache->data + cache->row_offset(page, layer, kv, token, kv_head);
  }
  KVCACHE_HD float dot(const float* q, std::int64_t j) const {
    const std::byte* k = row(0, j);
    return attention_dot(q, dim(), [&](std::int32_t i) { return load_element<T>(k, i); });
  }
  KVCACHE_HD void accumulate(float* acc, std::int32_t acc_stride, float keep, float weight,
                             std::int64_t j) const {
    const std::byte* v = row(1, j);
    attention_accumulate(acc, acc_stride, dim(), keep, weight,
                         [&](std::int32_t i) { return load_element<T>(v, i); });
  }
};

// One lane's share of (row, q_head) over plain pages.
template <class T>
KVCACHE_HD void attention_lane(const AttentionParams& p, std::int32_t row, std::int32_t q_head,
                               std::int32_t lane, float* acc, std::int32_t acc_stride, float& max,
                               float& sum) {
  const AttentionRow r = attention_row(p, row);
  const PlainAttentionReader<T> reader{&p.cache, p.table.indices + p.table.indptr[r.sequence],
                                       p.layer, q_head / (p.num_q_heads / p.cache.num_heads)};
  const float* q = p.q + (std::int64_t{row} * p.num_q_heads + q_head) * p.cache.head_dim;
  attention_lane_over(reader, r.keys, q, p.scale, lane, acc, acc_stride, max, sum);
}

// The lanes' weights in the merge: each lane's state rescaled to the largest
// maximum (exp(max[l] - top)), the total of the rescaled sums, and which
// lanes had keys at all. Computed once for every output dimension.
struct AttentionMergeWeights {
  float weight[kAttentionLanes];
  bool used[kAttentionLanes];
  float total;
};

KVCACHE_HD AttentionMergeWeights attention_merge_weights(const float* max, const float* sum) {
  using codec::add_exact;
  using codec::mul_exact;
  AttentionMergeWeights m;
  float top = max[0];
  for (std::int32_t l = 1; l < kAttentionLanes; ++l)
    top = max[l] > top ? max[l] : top;
  m.total = 0.0f;
  for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
    m.used[l] = sum[l] != 0.0f;  // a lane without keys takes no part
    m.weight[l] = m.used[l] ? attention_exp(add_exact(max[l], -top)) : 0.0f;
    if (m.used[l]) m.total = add_exact(m.total, mul_exact(sum[l], m.weight[l]));
  }
  return m;
}

// The merged output of dimension `i` (lane l's accumulator at
// acc[l * lane_stride + i * acc_stride]), lanes in order.
KVCACHE_HD float attention_merged(const AttentionMergeWeights& m, const float* acc,
                                  std::int32_t lane_stride, std::int32_t acc_stride,
                                  std::int32_t i) {
  float value = 0.0f;
  for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
    if (!m.used[l]) continue;
    value = codec::add_exact(value,
                             codec::mul_exact(acc[l * lane_stride + i * acc_stride], m.weight[l]));
  }
  return codec::div_exact(value, m.total);
}

KVCACHE_HD float attention_merge(const float* max, const float* sum, const float* acc,
                                 std::int32_t lane_stride, std::int32_t acc_stride,
                                 std::int32_t i) {
  return attention_merged(attention_merge_weights(max, sum), acc, lane_stride, acc_stride, i);
}

// Lane `lane`'s share of the merge (the CUDA kernel's thread `lane`):
// dimensions lane, lane + kAttentionLanes, ... of one (row, head) output.
KVCACHE_HD void attention_merge_lane(const float* max, const float* sum, const float* acc,
                                     std::int32_t lane_stride, std::int32_t head_dim,
                                     std::int32_t lane, float* out) {
  const AttentionMergeWeights m = attention_merge_weights(max, sum);
  for (std::int32_t i = lane; i < head_dim; i += kAttentionLanes)
    out[i] = canonical_float(attention_merged(m, acc, lane_stride, 1, i));
}

// Why `p` cannot run (a static message), or null. Pointers are not
// dereferenced: the tables are checked by the launchers' callers.
// The geometry checks every attention's parameters share (plain or codec
// pages: `p.cache` is the view, with its layers, heads, head_dim and pages).
template <class Params>
const char* attention_geometry_problem(const Params& p) {
  const auto& c = p.cache;
  if (p.layer < 0 || p.layer >= c.num_layers) return "a layer outside the cache";
  if (c.head_dim < 1 || c.head_dim > kAttentionMaxHeadDim) return "head_dim outside [1, 256]";
  if (c.page_size < 1) return "a page size below 1";
  if (c.num_heads < 1 || p.num_q_heads < c.num_heads || p.num_q_heads % c.num_heads != 0)
    return "query heads not a positive multiple of the cache's heads";
  if (p.num_q_heads > kAttentionMaxQueryHeads) return "more than 65535 query heads";
  if (p.table.batch_size < 1) return "query rows without sequences";
  return nullptr;
}

inline const char* attention_problem(const AttentionParams& p) {
  const PagedKVView& c = p.cache;
  if (p.num_rows < 0 || p.table.batch_size < 0) return "a negative row or sequence count";
  if (p.num_rows == 0) return nullptr;
  if (c.data == nullptr || p.q == nullptr || p.out == nullptr || p.q_indptr == nullptr ||
      p.table.indptr == nullptr || p.table.indices == nullptr || p.table.last_page_len == nullptr)
    return "a null pointer";
  return attention_geometry_problem(p);
}

}  // namespace kvcache::kernels
KVCACHE_EXACT_FP_END
