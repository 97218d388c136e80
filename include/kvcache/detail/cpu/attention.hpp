// The CPU backend's paged attention: the 32 lanes of kernels/attention.hpp
// (lane l takes keys l, l + 32, ...) run side by side instead of in turn.
// Keys are taken 32 at a time, one per lane; their rows are read once (as
// floats) for every query head of their KV head and for up to 16 query rows
// of their sequence (a prefill chunk reads its keys once, not once a row);
// each lane's dot product is
// still the sum over i of q[i] k[i] in index order, now 32 independent sums
// the compiler can keep in vector registers; the softmax and accumulator
// updates are each lane's own, in the same order as the GPU's. So the result
// is the GPU's, bit for bit, at a fraction of the serial loop's latency.
// Callers validate the parameters first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kvcache/detail/cpu/codec_kernels.hpp"
#include "kvcache/detail/cpu/int8_simd.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/codec_attention.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu {

namespace attention_detail {

using kernels::kAttentionLanes;

// Row j (K: kv 0, V: kv 1) as reader.dim() floats: what the reader's dot()
// and accumulate() read, element for element.
template <class Reader>
void load_row(const Reader& reader, std::int32_t kv, std::int64_t j, float* out) {
  if constexpr (requires { typename Reader::Element; }) {  // plain pages
    const std::byte* row = reader.row(kv, j);
    using T = typename Reader::Element;
    if constexpr (std::is_same_v<T, Half>) {
#if KVCACHE_INT8_SIMD
      if (simd::available())
        return simd::halves_to_floats(reinterpret_cast<const std::uint16_t*>(row), reader.dim(),
                                      out);
#endif
    }
    for (std::int32_t i = 0; i < reader.dim(); ++i)
      out[i] = load_element<T>(row, i);
  } else if constexpr (Reader::kProjected) {
    const std::uint8_t* codes = reader.codes_of(kv, j);
    for (std::int32_t c = 0; c < reader.dim(); ++c)
      out[c] = Reader::coefficient(codes, c);
  } else {
    using Rows = typename Reader::RowMath;
#if KVCACHE_INT8_SIMD
    if constexpr (std::is_same_v<Rows, Fp8Rows>) {
      if (simd::available()) {
        return simd::fp8_decode_f32(reader.codes_of(kv, j), reader.dim(), *reader.state(kv), out);
      }
    } else if constexpr (rows::VectorKiviRows<Rows>::value) {
      if (simd::available() && kv == 1 && j < reader.paged) {
        const CodecPageView& view = reader.view();
        const std::int64_t page = reader.page_of(j);
        const std::int32_t token = reader.token_of(j);
        const std::int32_t layer = reader.p->layer;
        return simd::kivi_decode_values<Rows::kBits, Rows::kGroup, Rows::kScaleBytes>(
            view.row_codes(page, layer, 1, token, reader.kv_head),
            view.row_scales(page, layer, 1, token, reader.kv_head), view.head_dim, out);
      }
    }
#endif
    if constexpr (rows::VectorInt8<Rows, Half>::value) {  // int8 groups of a multiple of 8
      if (simd::available()) {
        const CodecPageView& view = reader.view();
        const std::int64_t page = reader.page_of(j);
        const std::int32_t token = reader.token_of(j);
        const std::int32_t layer = reader.p->layer;
        return simd::int8_decode_f32(reinterpret_cast<const std::int8_t*>(
                                         view.row_codes(page, layer, kv, token, reader.kv_head)),
                                     view.row_scales(page, layer, kv, token, reader.kv_head),
                                     view.head_dim, Rows::kGroup, Rows::kScaleBytes, out);
      }
    }
    reader.row(kv, j, [&](std::int32_t i, float x) { out[i] = x; });
  }
}

// Keys [first, first + count) as k_rows ([dim][32]) in one pass when they
// are a whole KIVI page of 32 tokens: its channels decoded as columns, each
// channel's code run and scale read once. False otherwise (row by row).
template <class Reader>
bool load_key_page([[maybe_unused]] const Reader& reader, [[maybe_unused]] std::int64_t first,
                   [[maybe_unused]] std::int32_t count, [[maybe_unused]] float* k_rows) {
#if KVCACHE_INT8_SIMD
  if constexpr (!requires { typename Reader::Element; }) {
    using Rows = typename Reader::RowMath;
    if constexpr (rows::VectorKiviRows<Rows>::value) {
      if constexpr (Rows::kGroup == kAttentionLanes) {
        const CodecPageView& view = reader.view();
        if (simd::available() && count == kAttentionLanes && first % kAttentionLanes == 0 &&
            first + count <= reader.paged && view.page_size == Rows::kGroup) {
          simd::kivi_decode_key_columns<Rows::kBits, Rows::kGroup, Rows::kScaleBytes>(
              view,
              reinterpret_cast<const std::uint8_t*>(
                  view.region_base(reader.page_of(first), reader.p->layer, 0)),
              reader.kv_head, view.head_dim, k_rows);
          return true;
        }
      }
    }
  }
#endif
  return false;
}

// The two loops that carry the work, each lane's arithmetic unchanged (a
// product, then a sum: no fused multiply-add), with an AVX2 path (eight lanes
// or elements a vector) when the processor has it and a portable one.
//   dots[l] += q[i] x k[i][l] for i in order, l < 32   (k: [dim][32])
inline void dots_portable(const float* q, const float* k, std::int32_t dim, float* dot) {
  for (std::int32_t i = 0; i < dim; ++i) {
    const float qi = q[i];
    const float* row = k + static_cast<std::size_t>(i) * kAttentionLanes;
    for (std::int32_t l = 0; l < kAttentionLanes; ++l)
      dot[l] = codec::add_exact(dot[l], codec::mul_exact(qi, row[l]));
  }
}
//   acc[i] = acc[i] x keep + weight x v[i]
inline void accumulate_portable(float* acc, const float* v, std::int32_t dim, float keep,
                                float weight) {
  for (std::int32_t i = 0; i < dim; ++i)
    acc[i] = codec::add_exact(codec::mul_exact(acc[i], keep), codec::mul_exact(weight, v[i]));
}
#if KVCACHE_INT8_SIMD
__attribute__((target("avx2"))) inline void dots_avx2(const float* q, const float* k,
                                                      std::int32_t dim, float* dot) {
  __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
  for (std::int32_t i = 0; i < dim; ++i) {
    const __m256 qi = _mm256_set1_ps(q[i]);
    const float* row = k + static_cast<std::size_t>(i) * kAttentionLanes;
    d0 = _mm256_add_ps(d0, _mm256_mul_ps(qi, _mm256_loadu_ps(row)));
    d1 = _mm256_add_ps(d1, _mm256_mul_ps(qi, _mm256_loadu_ps(row + 8)));
    d2 = _mm256_add_ps(d2, _mm256_mul_ps(qi, _mm256_loadu_ps(row + 16)));
    d3 = _mm256_add_ps(d3, _mm256_mul_ps(qi, _mm256_loadu_ps(row + 24)));
  }
  _mm256_storeu_ps(dot, d0);
  _mm256_storeu_ps(dot + 8, d1);
  _mm256_storeu_ps(dot + 16, d2);
  _mm256_storeu_ps(dot + 24, d3);
}
__attribute__((target("avx2"))) inline void accumulate_avx2(float* acc, const float* v,
                                                            std::int32_t dim, float keep,
                                                            float weight) {
  const __m256 k = _mm256_set1_ps(keep), w = _mm256_set1_ps(weight);
  std::int32_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 a = _mm256_loadu_ps(acc + i);
    _mm256_storeu_ps(acc + i,
                     _mm256_add_ps(_mm256_mul_ps(a, k), _mm256_mul_ps(w, _mm256_loadu_ps(v + i))));
  }
  accumulate_portable(acc + i, v + i, dim - i, keep, weight);
}
#endif

struct VectorPath {
  bool avx2 = false;
  VectorPath() {
#if KVCACHE_INT8_SIMD
    avx2 = simd::available();
#endif
  }
  void dots(const float* q, const float* k, std::int32_t dim, float* dot) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return dots_avx2(q, k, dim, dot);
#endif
    for (std::int32_t l = 0; l < kAttentionLanes; ++l)
      dot[l] = 0.0f;
    dots_portable(q, k, dim, dot);
  }
  void accumulate(float* acc, const float* v, std::int32_t dim, float keep, float weight) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return accumulate_avx2(acc, v, dim, keep, weight);
#endif
    accumulate_portable(acc, v, dim, keep, weight);
  }
};

// One query head's softmax state: per lane its maximum, sum and accumulator.
struct LaneState {
  std::vector<float> acc;  // [lanes][dim]
  float max[kAttentionLanes];
  float sum[kAttentionLanes];
};

// One query (a row's query head) of a pass: dim() floats in the reader's
// space, the keys it attends to ([0, keys)), where its merged accumulator goes.
struct Query {
  const float* q;
  std::int64_t keys;
  float* merged;
};

// The queries of one pass over one sequence's KV head (its query heads, for
// several of its rows): each round of 32 keys is read once for all of them.
template <class Reader>
void attend(const Reader& reader, const std::vector<Query>& queries, float scale,
            const VectorPath& path, std::vector<LaneState>& states, std::vector<float>& k_rows,
            std::vector<float>& v_rows) {
  using codec::add_exact;
  using codec::mul_exact;
  const std::int32_t dim = reader.dim();
  const auto lanes = static_cast<std::size_t>(kAttentionLanes);
  const auto width = static_cast<std::size_t>(dim);
  k_rows.assign(width * lanes, 0.0f);  // [dim][lanes]
  v_rows.resize(width * lanes);        // [lanes][dim]
  if (states.size() < queries.size()) states.resize(queries.size());
  std::int64_t keys = 0;
  for (std::size_t h = 0; h < queries.size(); ++h) {
    LaneState& s = states[h];
    s.acc.assign(lanes * width, 0.0f);
    for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
      s.max[l] = -::kvcache::detail::bits_float(0x7f800000u);
      s.sum[l] = 0.0f;
    }
    keys = std::max(keys, queries[h].keys);
  }
  float row[kernels::kAttentionMaxHeadDim];
  for (std::int64_t first = 0; first < keys; first += kAttentionLanes) {
    const auto count =
        static_cast<std::int32_t>(std::min<std::int64_t>(kAttentionLanes, keys - first));
    const bool keys_loaded = load_key_page(reader, first, count, k_rows.data());
    for (std::int32_t l = 0; l < count; ++l) {
      if (!keys_loaded) {
        load_row(reader, 0, first + l, row);
        for (std::int32_t i = 0; i < dim; ++i)
          k_rows[static_cast<std::size_t>(i) * lanes + static_cast<std::size_t>(l)] = row[i];
      }
      load_row(reader, 1, first + l, v_rows.data() + static_cast<std::size_t>(l) * width);
    }
    for (std::size_t h = 0; h < queries.size(); ++h) {
      if (queries[h].keys <= first) continue;
      const auto mine = static_cast<std::int32_t>(
          std::min<std::int64_t>(kAttentionLanes, queries[h].keys - first));
      LaneState& s = states[h];
      // 32 dot products side by side, each summed in index order.
      float dot[kAttentionLanes];
      path.dots(queries[h].q, k_rows.data(), dim, dot);
      for (std::int32_t l = 0; l < mine; ++l) {
        const float score = mul_exact(dot[l], scale);
        if (score == -::kvcache::detail::bits_float(0x7f800000u)) continue;
        float keep = 1.0f, weight = 1.0f;
        if (score > s.max[l]) {
          keep = kernels::attention_exp(add_exact(s.max[l], -score));
          s.max[l] = score;
        } else {
          weight = kernels::attention_exp(add_exact(score, -s.max[l]));
        }
        s.sum[l] = add_exact(mul_exact(s.sum[l], keep), weight);
        path.accumulate(s.acc.data() + static_cast<std::size_t>(l) * width,
                        v_rows.data() + static_cast<std::size_t>(l) * width, dim, keep, weight);
      }
    }
  }
  for (std::size_t h = 0; h < queries.size(); ++h) {
    const LaneState& s = states[h];
    const kernels::AttentionMergeWeights m = kernels::attention_merge_weights(s.max, s.sum);
    for (std::int32_t i = 0; i < dim; ++i)
      queries[h].merged[i] = kernels::attention_merged(m, s.acc.data(), dim, 1, i);
  }
}

// The rows of one pass: up to this many query rows of a sequence share each
// read of its keys (their states: rows x query heads x 32 lanes x dim floats).
inline constexpr std::int32_t kRowsPerPass = 16;

// Calls pass(sequence, first_row, rows) for the query rows of each sequence,
// kRowsPerPass at a time.
template <class Table, class Pass>
void for_each_pass(const std::int32_t* q_indptr, const Table& table, Pass pass) {
  for (std::int32_t b = 0; b < table.batch_size; ++b) {
    for (std::int32_t row = q_indptr[b]; row < q_indptr[b + 1]; row += kRowsPerPass)
      pass(b, row, std::min(kRowsPerPass, q_indptr[b + 1] - row));
  }
}

}  // namespace attention_detail

// Every (sequence, KV head): its query heads, for up to kRowsPerPass of its
// rows, attend together.
template <class T>
void paged_attention(const kernels::AttentionParams& p) {
  const std::int32_t d = p.cache.head_dim;
  const std::int32_t group = p.num_q_heads / p.cache.num_heads;
  const attention_detail::VectorPath path;
  std::vector<attention_detail::LaneState> states;
  std::vector<float> k_rows, v_rows;
  std::vector<attention_detail::Query> queries;
  attention_detail::for_each_pass(
      p.q_indptr, p.table, [&](std::int32_t b, std::int32_t first, std::int32_t rows) {
        for (std::int32_t kv = 0; kv < p.cache.num_heads; ++kv) {
          const kernels::PlainAttentionReader<T> reader{
              &p.cache, p.table.indices + p.table.indptr[b], p.layer, kv};
          queries.clear();
          for (std::int32_t row = first; row < first + rows; ++row) {
            const std::int64_t keys = kernels::attention_row(p, row).keys;
            for (std::int32_t g = 0; g < group; ++g) {
              const std::int64_t at = (std::int64_t{row} * p.num_q_heads + kv * group + g) * d;
              queries.push_back({p.q + at, keys, p.out + at});
            }
          }
          attention_detail::attend(reader, queries, p.scale, path, states, k_rows, v_rows);
          for (const attention_detail::Query& q : queries)
            for (std::int32_t i = 0; i < d; ++i)
              q.merged[i] = canonical_float(q.merged[i]);
        }
      });
}

// Over compressed pages (kernels/codec_attention.hpp): the query projected
// first when the codec attends in a space of its own, the merged accumulator
// mapped back to the output after.
template <class Rows, class T>
void codec_attention(const kernels::CodecAttentionParams<Rows>& p) {
  const std::int32_t d = p.cache.head_dim;
  const std::int32_t group = p.num_q_heads / p.cache.num_heads;
  const attention_detail::VectorPath path;
  std::vector<attention_detail::LaneState> states;
  std::vector<float> k_rows, v_rows, query, merged;
  std::vector<attention_detail::Query> queries;
  attention_detail::for_each_pass(
      p.q_indptr, p.table, [&](std::int32_t, std::int32_t first, std::int32_t rows) {
        for (std::int32_t kv = 0; kv < p.cache.num_heads; ++kv) {
          const auto head = kernels::codec_attention_row<Rows, T>(p, first, kv * group);
          const auto dim = static_cast<std::size_t>(head.reader.dim());
          const auto count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(group);
          query.resize(count * dim);
          merged.resize(count * dim);
          queries.clear();
          for (std::int32_t row = first; row < first + rows; ++row) {
            for (std::int32_t g = 0; g < group; ++g) {
              const auto r = kernels::codec_attention_row<Rows, T>(p, row, kv * group + g);
              const std::size_t at = queries.size() * dim;
              for (std::size_t i = 0; i < dim; ++i)
                query[at + i] = r.reader.query(r.q, static_cast<std::int32_t>(i));
              queries.push_back({query.data() + at, r.keys, merged.data() + at});
            }
          }
          attention_detail::attend(head.reader, queries, p.scale, path, states, k_rows, v_rows);
          for (std::size_t h = 0; h < queries.size(); ++h) {
            const std::int32_t row = first + static_cast<std::int32_t>(h) / group;
            const std::int32_t q_head = kv * group + static_cast<std::int32_t>(h) % group;
            float* out = p.out + (std::int64_t{row} * p.num_q_heads + q_head) * d;
            for (std::int32_t i = 0; i < d; ++i)
              out[i] = canonical_float(head.reader.output(queries[h].merged, i));
          }
        }
      });
}

}  // namespace kvcache::detail::cpu
KVCACHE_EXACT_FP_END
