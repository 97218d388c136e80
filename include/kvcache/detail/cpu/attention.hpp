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
// Where the time goes (the L1 cache is the constraint: four query heads'
// accumulators are 64 KB at head_dim 128): the value rows of four rounds are
// applied together, a lane's accumulator row held in registers over them
// (read and written once a block, not once a round); two query heads'
// dots share each read of the key columns; fp16 key rows are converted
// straight into the columns; a round's row addresses take one division.
// Callers validate the parameters first.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
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
#if KVCACHE_INT8_SIMD
    if constexpr (Reader::RowMath::kCoefficientBytes == 2) {  // fp16, as load_scale reads them
      if (simd::available())
        return simd::halves_to_floats(reinterpret_cast<const std::uint16_t*>(codes), reader.dim(),
                                      out);
    }
#endif
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

// Plain fp16 pages, read by the fused AVX2 path below.
template <class Reader>
inline constexpr bool kHalfPages = [] {
  if constexpr (requires { typename Reader::Element; })
    return std::is_same_v<typename Reader::Element, Half>;
  return false;
}();

// The rows of keys [first, first + count) of a plain reader (as reader.row:
// one division for the round, not one a row).
template <class Reader>
void plain_rows(const Reader& reader, std::int32_t kv, std::int64_t first, std::int32_t count,
                const std::byte** rows) {
  const PagedKVView& cache = *reader.cache;
  std::int64_t page = first / cache.page_size;
  auto token = static_cast<std::int32_t>(first - page * cache.page_size);
  for (std::int32_t l = 0; l < count; ++l) {
    rows[l] =
        cache.data + cache.row_offset(reader.pages[page], reader.layer, kv, token, reader.kv_head);
    if (++token == cache.page_size) {
      token = 0;
      ++page;
    }
  }
}

// The stored rows (codes, and scales where `scales` is given) of keys
// [first, first + count) of a codec reader's K or V (as reader.codes_of: one
// division for the round, not two a row).
template <class Reader>
void codec_rows(const Reader& reader, std::int32_t kv, std::int64_t first, std::int32_t count,
                const std::uint8_t** codes, const std::uint8_t** scales) {
  const CodecPageView& view = reader.view();
  const std::int32_t layer = reader.p->layer;
  std::int64_t slot = first / view.page_size;
  auto token = static_cast<std::int32_t>(first - slot * view.page_size);
  for (std::int32_t l = 0; l < count; ++l) {
    const std::int64_t page = reader.pages[slot];
    codes[l] = view.row_codes(page, layer, kv, token, reader.kv_head);
    if (scales != nullptr) scales[l] = view.row_scales(page, layer, kv, token, reader.kv_head);
    if (++token == view.page_size) {
      token = 0;
      ++slot;
    }
  }
}

// Asks for the rows of keys [first, first + 32) before they are read: a
// pass walks one KV head of a sequence, a row here and the next a token's
// width (every head's rows) further on, a stride the hardware prefetchers
// follow too slowly for the few hundred bytes of each row.
template <class Reader>
void prefetch_round(const Reader& reader, std::int64_t first, std::int64_t keys) {
  const auto count =
      static_cast<std::int32_t>(std::min<std::int64_t>(first + kAttentionLanes, keys) - first);
  if constexpr (requires { typename Reader::Element; }) {
    const std::byte* rows[kAttentionLanes];
    const auto bytes = static_cast<std::size_t>(reader.dim()) * sizeof(typename Reader::Element);
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      plain_rows(reader, kv, first, count, rows);
      for (std::int32_t l = 0; l < count; ++l)
        for (std::size_t offset = 0; offset < bytes; offset += 64)
          __builtin_prefetch(rows[l] + offset);
    }
  } else {
    for (std::int64_t j = first; j < first + count; ++j) {
      for (std::int32_t kv = 0; kv < 2; ++kv) {
        const void* at = nullptr;
        std::int64_t bytes = 0;
        if constexpr (Reader::kProjected) {
          at = reader.codes_of(kv, j);
          bytes = std::int64_t{reader.dim()} * Reader::RowMath::kCoefficientBytes;
        } else {
          using Rows = typename Reader::RowMath;
          if constexpr (kernels::ChannelKeyRows<Rows>) {
            if (kv == 0 || j >= reader.paged) continue;  // a page's keys; the window
          }
          at = reader.codes_of(kv, j);
          bytes = Rows::code_bytes(reader.view().head_dim);
        }
        for (std::int64_t offset = 0; offset < bytes; offset += 64)
          __builtin_prefetch(static_cast<const char*>(at) + offset);
      }
    }
  }
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
// Two queries' dots over the same key columns, each query's sums in the
// order dots_avx2 takes them: a column read once for both.
__attribute__((target("avx2"))) inline void dots_pair_avx2(const float* q0, const float* q1,
                                                           const float* k, std::int32_t dim,
                                                           float* dot0, float* dot1) {
  __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
  __m256 e0 = d0, e1 = d0, e2 = d0, e3 = d0;
  for (std::int32_t i = 0; i < dim; ++i) {
    const float* row = k + static_cast<std::size_t>(i) * kAttentionLanes;
    const __m256 k0 = _mm256_loadu_ps(row), k1 = _mm256_loadu_ps(row + 8);
    const __m256 k2 = _mm256_loadu_ps(row + 16), k3 = _mm256_loadu_ps(row + 24);
    const __m256 a = _mm256_set1_ps(q0[i]), b = _mm256_set1_ps(q1[i]);
    d0 = _mm256_add_ps(d0, _mm256_mul_ps(a, k0));
    d1 = _mm256_add_ps(d1, _mm256_mul_ps(a, k1));
    d2 = _mm256_add_ps(d2, _mm256_mul_ps(a, k2));
    d3 = _mm256_add_ps(d3, _mm256_mul_ps(a, k3));
    e0 = _mm256_add_ps(e0, _mm256_mul_ps(b, k0));
    e1 = _mm256_add_ps(e1, _mm256_mul_ps(b, k1));
    e2 = _mm256_add_ps(e2, _mm256_mul_ps(b, k2));
    e3 = _mm256_add_ps(e3, _mm256_mul_ps(b, k3));
  }
  _mm256_storeu_ps(dot0, d0);
  _mm256_storeu_ps(dot0 + 8, d1);
  _mm256_storeu_ps(dot0 + 16, d2);
  _mm256_storeu_ps(dot0 + 24, d3);
  _mm256_storeu_ps(dot1, e0);
  _mm256_storeu_ps(dot1 + 8, e1);
  _mm256_storeu_ps(dot1 + 16, e2);
  _mm256_storeu_ps(dot1 + 24, e3);
}
#endif

// Eight key rows ([8][dim], row r at block + r x dim) into the lanes' key
// columns: k_rows[i x 32 + lane + r] = block[r x dim + i]. A copy: the bits
// are the rows'.
inline void keys_to_columns_portable(const float* block, std::int32_t dim, float* k_rows,
                                     std::int32_t lane, std::int32_t first_column = 0) {
  for (std::int32_t r = 0; r < 8; ++r) {
    for (std::int32_t i = first_column; i < dim; ++i)
      k_rows[static_cast<std::size_t>(i) * kAttentionLanes + static_cast<std::size_t>(lane + r)] =
          block[static_cast<std::size_t>(r) * static_cast<std::size_t>(dim) +
                static_cast<std::size_t>(i)];
  }
}
#if KVCACHE_INT8_SIMD
// Eight rows' elements [i, i + 8) (r[row]) into the lanes' key columns
// [lane, lane + 8) of k_rows' rows i..i+7, by an 8 x 8 transpose in registers.
__attribute__((target("avx2"))) inline void store_columns_avx2(const __m256* r, float* k_rows,
                                                               std::int32_t i, std::int32_t lane) {
  // Pairs, then quads, then halves: column c of the result is row c's.
  const __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xee);
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xee);
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xee);
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xee);
  float* at =
      k_rows + static_cast<std::size_t>(i) * kAttentionLanes + static_cast<std::size_t>(lane);
  constexpr std::size_t kRow = kAttentionLanes;
  _mm256_storeu_ps(at, _mm256_permute2f128_ps(b0, b4, 0x20));
  _mm256_storeu_ps(at + kRow, _mm256_permute2f128_ps(b1, b5, 0x20));
  _mm256_storeu_ps(at + 2 * kRow, _mm256_permute2f128_ps(b2, b6, 0x20));
  _mm256_storeu_ps(at + 3 * kRow, _mm256_permute2f128_ps(b3, b7, 0x20));
  _mm256_storeu_ps(at + 4 * kRow, _mm256_permute2f128_ps(b0, b4, 0x31));
  _mm256_storeu_ps(at + 5 * kRow, _mm256_permute2f128_ps(b1, b5, 0x31));
  _mm256_storeu_ps(at + 6 * kRow, _mm256_permute2f128_ps(b2, b6, 0x31));
  _mm256_storeu_ps(at + 7 * kRow, _mm256_permute2f128_ps(b3, b7, 0x31));
}
// The same, eight columns at a time.
__attribute__((target("avx2"))) inline void keys_to_columns_avx2(const float* block,
                                                                 std::int32_t dim, float* k_rows,
                                                                 std::int32_t lane) {
  const auto stride = static_cast<std::size_t>(dim);
  std::int32_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 r[8];
    for (std::size_t j = 0; j < 8; ++j)
      r[j] = _mm256_loadu_ps(block + j * stride + static_cast<std::size_t>(i));
    store_columns_avx2(r, k_rows, i, lane);
  }
  if (i < dim) keys_to_columns_portable(block, dim, k_rows, lane, i);
}
// Eight fp16 key rows (rows[r]: the row of lane + r) straight into the
// lanes' columns, each element converted as halves_to_floats converts it
// (exact: every half is a float); no float copy of the rows in between.
__attribute__((target("avx2,f16c"))) inline void half_keys_to_columns_avx2(
    const std::uint16_t* const* rows, std::int32_t dim, float* k_rows, std::int32_t lane) {
  std::int32_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 r[8];
    for (std::size_t j = 0; j < 8; ++j)
      r[j] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j] + i)));
    store_columns_avx2(r, k_rows, i, lane);
  }
  for (; i < dim; ++i) {
    for (std::int32_t j = 0; j < 8; ++j) {
      k_rows[static_cast<std::size_t>(i) * kAttentionLanes + static_cast<std::size_t>(lane + j)] =
          half_bits_to_float(rows[j][i]);
    }
  }
}
// Eight fp8 key rows (codes[r]) straight into the lanes' columns, each
// element decoded and scaled as fp8_decode_f32 does; head_dim a multiple of 8.
__attribute__((target("avx2,f16c"))) inline void fp8_keys_to_columns_avx2(
    const std::uint8_t* const* codes, std::int32_t dim, float scale, float* k_rows,
    std::int32_t lane) {
  const __m256 s = _mm256_set1_ps(scale);
  for (std::int32_t i = 0; i < dim; i += 8) {
    __m256 r[8];
    for (std::size_t j = 0; j < 8; ++j)
      r[j] = simd::fp8_values(codes[j] + i, s);
    store_columns_avx2(r, k_rows, i, lane);
  }
}
// Eight int8 key rows (codes[r], their group scales as floats in
// scales[r]) straight into the lanes' columns: each element code x scale,
// as int8_decode_f32 computes it; head_dim and the group a multiple of 8.
__attribute__((target("avx2,f16c"))) inline void int8_keys_to_columns_avx2(
    const std::int8_t* const* codes, const float (*scales)[kernels::kAttentionMaxHeadDim / 8],
    std::int32_t dim, std::int32_t group, float* k_rows, std::int32_t lane) {
  for (std::int32_t i = 0; i < dim; i += 8) {
    const std::int32_t g = i / group;
    __m256 r[8];
    for (std::size_t j = 0; j < 8; ++j) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes[j] + i));
      r[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)),
                           _mm256_set1_ps(scales[j][g]));
    }
    store_columns_avx2(r, k_rows, i, lane);
  }
}
#endif

// out[i] = (sum over used lanes l, in order, of acc[l][i] x weight[l]) /
// total: attention_merged for every i at once (acc: [32][dim]).
inline void merge_portable(const kernels::AttentionMergeWeights& m, const float* acc,
                           std::int32_t dim, float* out) {
  for (std::int32_t i = 0; i < dim; ++i)
    out[i] = 0.0f;
  for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
    if (!m.used[l]) continue;
    const float* lane = acc + static_cast<std::size_t>(l) * static_cast<std::size_t>(dim);
    for (std::int32_t i = 0; i < dim; ++i)
      out[i] = codec::add_exact(out[i], codec::mul_exact(lane[i], m.weight[l]));
  }
  for (std::int32_t i = 0; i < dim; ++i)
    out[i] = codec::div_exact(out[i], m.total);
}
#if KVCACHE_INT8_SIMD
__attribute__((target("avx2"))) inline void merge_avx2(const kernels::AttentionMergeWeights& m,
                                                       const float* acc, std::int32_t dim,
                                                       float* out) {
  const __m256 total = _mm256_set1_ps(m.total);
  std::int32_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 value = _mm256_setzero_ps();
    for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
      if (!m.used[l]) continue;
      const float* lane = acc + static_cast<std::size_t>(l) * static_cast<std::size_t>(dim);
      value = _mm256_add_ps(value,
                            _mm256_mul_ps(_mm256_loadu_ps(lane + i), _mm256_set1_ps(m.weight[l])));
    }
    _mm256_storeu_ps(out + i, _mm256_div_ps(value, total));
  }
  for (; i < dim; ++i)
    out[i] = kernels::attention_merged(m, acc, dim, 1, i);
}
#endif

// One round's online-softmax step of the lanes l < mine (kernels'
// attention_lane_over, lane by lane): score = dot x scale; a lane whose score
// is -Inf is inactive; otherwise a larger score rescales (keep = exp(max -
// score)), a smaller one weighs (weight = exp(score - max)), and sum = sum x
// keep + weight. keep / weight / active are what each lane's accumulator
// update takes.
inline void softmax_lanes_portable(const float* dot, float scale, std::int32_t mine, float* max,
                                   float* sum, float* keep, float* weight, std::int32_t* active) {
  using codec::add_exact;
  using codec::mul_exact;
  for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
    active[l] = 0;
    if (l >= mine) continue;
    const float score = mul_exact(dot[l], scale);
    if (score == -::kvcache::detail::bits_float(0x7f800000u)) continue;
    active[l] = 1;
    keep[l] = 1.0f;
    weight[l] = 1.0f;
    if (score > max[l]) {
      keep[l] = kernels::attention_exp(add_exact(max[l], -score));
      max[l] = score;
    } else {
      weight[l] = kernels::attention_exp(add_exact(score, -max[l]));
    }
    sum[l] = add_exact(mul_exact(sum[l], keep[l]), weight[l]);
  }
}
#if KVCACHE_INT8_SIMD
// kernels::attention_exp of eight floats, operation for operation: the same
// products and sums (no FMA), n rounded by the same add-and-subtract, 2^n
// applied in two halves (e / 2 truncated toward zero, as C++ divides).
__attribute__((target("avx2"))) inline __m256 exp_avx2(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 n = _mm256_sub_ps(
      _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
  const __m256 r = _mm256_add_ps(
      _mm256_add_ps(x, _mm256_xor_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)), sign)),
      _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_cvttps_epi32(n);
  const __m256i half = _mm256_srai_epi32(_mm256_add_epi32(e, _mm256_srli_epi32(e, 31)), 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 b =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(e, half), bias), 23));
  __m256 result = _mm256_mul_ps(_mm256_mul_ps(p, a), b);
  result = _mm256_blendv_ps(result, _mm256_setzero_ps(),
                            _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ));
  result = _mm256_blendv_ps(result, _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000)),
                            _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_GT_OQ));
  return _mm256_blendv_ps(result, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

__attribute__((target("avx2"))) inline void softmax_lanes_avx2(const float* dot, float scale,
                                                               std::int32_t mine, float* max,
                                                               float* sum, float* keep,
                                                               float* weight,
                                                               std::int32_t* active) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 minus_inf = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xff800000u)));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (std::int32_t v = 0; v < kAttentionLanes; v += 8) {
    const __m256 score = _mm256_mul_ps(_mm256_loadu_ps(dot + v), _mm256_set1_ps(scale));
    const __m256 valid =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(mine - v), lane));  // l < mine
    const __m256 on = _mm256_andnot_ps(_mm256_cmp_ps(score, minus_inf, _CMP_EQ_OQ), valid);
    const __m256 m = _mm256_loadu_ps(max + v);
    const __m256 larger = _mm256_cmp_ps(score, m, _CMP_GT_OQ);
    const __m256 e =
        exp_avx2(_mm256_blendv_ps(_mm256_add_ps(score, _mm256_xor_ps(m, sign)),
                                  _mm256_add_ps(m, _mm256_xor_ps(score, sign)), larger));
    const __m256 k = _mm256_blendv_ps(one, e, larger);
    const __m256 w = _mm256_blendv_ps(e, one, larger);
    const __m256 old_sum = _mm256_loadu_ps(sum + v);
    const __m256 new_sum = _mm256_add_ps(_mm256_mul_ps(old_sum, k), w);
    _mm256_storeu_ps(max + v, _mm256_blendv_ps(m, _mm256_blendv_ps(m, score, larger), on));
    _mm256_storeu_ps(sum + v, _mm256_blendv_ps(old_sum, new_sum, on));
    _mm256_storeu_ps(keep + v, k);
    _mm256_storeu_ps(weight + v, w);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(active + v),
                        _mm256_srli_epi32(_mm256_castps_si256(on), 31));
  }
}
#endif

// One query's online-softmax step for one round of 32 keys: what each
// lane's accumulator update takes (softmax_lanes' keep, weight, active).
struct RoundWeights {
  float keep[kAttentionLanes];
  float weight[kAttentionLanes];
  std::int32_t active[kAttentionLanes];
};

// One query head's softmax state: per lane its maximum, sum and accumulator.
struct LaneState {
  std::vector<float> acc;  // [lanes][dim]
  float max[kAttentionLanes];
  float sum[kAttentionLanes];
};

// Rounds of 32 keys whose value rows are applied together: a lane's
// accumulator is read and written once for all of them (its updates still
// one after another, in key order), and a value row once for every query.
inline constexpr std::int32_t kRoundsPerBlock = 4;

// For every query h < count and lane l, in round order r < rounds: if the
// round's step is active, acc = acc x keep + weight x v (v: [rounds][32][dim];
// weights: [query][kRoundsPerBlock]).
inline void accumulate_rounds_portable(LaneState* states, const RoundWeights* weights,
                                       std::size_t count, const float* v, std::int32_t rounds,
                                       std::int32_t dim, bool fresh) {
  const auto width = static_cast<std::size_t>(dim);
  for (std::size_t h = 0; h < count; ++h) {
    if (fresh) std::fill(states[h].acc.begin(), states[h].acc.end(), 0.0f);
    for (std::int32_t r = 0; r < rounds; ++r) {
      const RoundWeights& w = weights[h * kRoundsPerBlock + static_cast<std::size_t>(r)];
      for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
        if (w.active[l] == 0) continue;
        accumulate_portable(
            states[h].acc.data() + static_cast<std::size_t>(l) * width,
            v + (static_cast<std::size_t>(r) * kAttentionLanes + static_cast<std::size_t>(l)) *
                    width,
            dim, w.keep[l], w.weight[l]);
      }
    }
  }
}
#if KVCACHE_INT8_SIMD
// Eight accumulator elements, or zeros in a pass's first block (the rows
// are not cleared before it: the first block writes every lane's row).
__attribute__((target("avx2"))) inline __m256 load_or_zero(const float* at, bool fresh) {
  return fresh ? _mm256_setzero_ps() : _mm256_loadu_ps(at);
}
// A block's value rows as the accumulator updates read them, row r x 32 + l
// being lane l's row of round r: eight elements from i as floats (load), or
// one (at).
//   FloatValueRows: rows decoded to floats beforehand ([rounds][32][dim]).
//   HalfValueRows: fp16 rows where they lie in the pages, converted in
//     registers (F16C, exactly as halves_to_floats).
// Reading fp16 pages directly spares a float copy of every value row, written
// and read back once a block. (Compressed rows are decoded once into floats:
// the updates read a row once for every query head of its KV head, and an
// int8 row decoded in place, three operations each time, measured no faster.)
struct FloatValueRows {
  const float* v;
  std::size_t width;
  __attribute__((target("avx2"))) __m256 load(std::size_t row, std::int32_t i) const {
    return _mm256_loadu_ps(v + row * width + static_cast<std::size_t>(i));
  }
  float at(std::size_t row, std::int32_t i) const {
    return v[row * width + static_cast<std::size_t>(i)];
  }
};
struct HalfValueRows {
  const std::byte* const* rows;
  __attribute__((target("avx2,f16c"))) __m256 load(std::size_t row, std::int32_t i) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint16_t*>(rows[row]) + i)));
  }
  float at(std::size_t row, std::int32_t i) const {
    return half_bits_to_float(reinterpret_cast<const std::uint16_t*>(rows[row])[i]);
  }
};
// One lane's accumulator row of one query (acc: [dim]) over the rounds
// (w: [rounds]; v: the block's value rows, the lane's of round r being row
// r x 32 + l), 64 elements at a time held in registers: the row is read and
// written once for all the rounds.
template <class Values>
__attribute__((target("avx2,f16c"))) inline void accumulate_lane_avx2(
    float* acc, const RoundWeights* w, const Values& v, std::size_t l, std::int32_t rounds,
    std::int32_t dim, bool fresh) {
  const auto row = [l](std::int32_t r) {
    return static_cast<std::size_t>(r) * kAttentionLanes + l;
  };
  std::int32_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    float* a = acc + i;
    __m256 a0 = load_or_zero(a, fresh), a1 = load_or_zero(a + 8, fresh),
           a2 = load_or_zero(a + 16, fresh), a3 = load_or_zero(a + 24, fresh),
           a4 = load_or_zero(a + 32, fresh), a5 = load_or_zero(a + 40, fresh),
           a6 = load_or_zero(a + 48, fresh), a7 = load_or_zero(a + 56, fresh);
    for (std::int32_t r = 0; r < rounds; ++r) {
      if (w[r].active[l] == 0) continue;
      const __m256 k = _mm256_set1_ps(w[r].keep[l]), g = _mm256_set1_ps(w[r].weight[l]);
      const std::size_t x = row(r);
      a0 = _mm256_add_ps(_mm256_mul_ps(a0, k), _mm256_mul_ps(g, v.load(x, i)));
      a1 = _mm256_add_ps(_mm256_mul_ps(a1, k), _mm256_mul_ps(g, v.load(x, i + 8)));
      a2 = _mm256_add_ps(_mm256_mul_ps(a2, k), _mm256_mul_ps(g, v.load(x, i + 16)));
      a3 = _mm256_add_ps(_mm256_mul_ps(a3, k), _mm256_mul_ps(g, v.load(x, i + 24)));
      a4 = _mm256_add_ps(_mm256_mul_ps(a4, k), _mm256_mul_ps(g, v.load(x, i + 32)));
      a5 = _mm256_add_ps(_mm256_mul_ps(a5, k), _mm256_mul_ps(g, v.load(x, i + 40)));
      a6 = _mm256_add_ps(_mm256_mul_ps(a6, k), _mm256_mul_ps(g, v.load(x, i + 48)));
      a7 = _mm256_add_ps(_mm256_mul_ps(a7, k), _mm256_mul_ps(g, v.load(x, i + 56)));
    }
    _mm256_storeu_ps(a, a0);
    _mm256_storeu_ps(a + 8, a1);
    _mm256_storeu_ps(a + 16, a2);
    _mm256_storeu_ps(a + 24, a3);
    _mm256_storeu_ps(a + 32, a4);
    _mm256_storeu_ps(a + 40, a5);
    _mm256_storeu_ps(a + 48, a6);
    _mm256_storeu_ps(a + 56, a7);
  }
  for (; i + 8 <= dim; i += 8) {
    __m256 a0 = load_or_zero(acc + i, fresh);
    for (std::int32_t r = 0; r < rounds; ++r) {
      if (w[r].active[l] == 0) continue;
      a0 = _mm256_add_ps(_mm256_mul_ps(a0, _mm256_set1_ps(w[r].keep[l])),
                         _mm256_mul_ps(_mm256_set1_ps(w[r].weight[l]), v.load(row(r), i)));
    }
    _mm256_storeu_ps(acc + i, a0);
  }
  for (; i < dim; ++i) {
    if (fresh) acc[i] = 0.0f;
    for (std::int32_t r = 0; r < rounds; ++r) {
      if (w[r].active[l] == 0) continue;
      acc[i] = codec::add_exact(codec::mul_exact(acc[i], w[r].keep[l]),
                                codec::mul_exact(w[r].weight[l], v.at(row(r), i)));
    }
  }
}
template <class Values>
requires(!std::is_pointer_v<Values>) void accumulate_rounds_avx2(LaneState* states,
                                                                 const RoundWeights* weights,
                                                                 std::size_t count, const Values& v,
                                                                 std::int32_t rounds,
                                                                 std::int32_t dim, bool fresh) {
  const auto width = static_cast<std::size_t>(dim);
  for (std::size_t h = 0; h < count; ++h) {
    for (std::size_t l = 0; l < kAttentionLanes; ++l) {
      accumulate_lane_avx2(states[h].acc.data() + l * width, weights + h * kRoundsPerBlock, v, l,
                           rounds, dim, fresh);
    }
  }
}
// v: [rounds][32][dim] floats.
inline void accumulate_rounds_avx2(LaneState* states, const RoundWeights* weights,
                                   std::size_t count, const float* v, std::int32_t rounds,
                                   std::int32_t dim, bool fresh) {
  accumulate_rounds_avx2(states, weights, count, FloatValueRows{v, static_cast<std::size_t>(dim)},
                         rounds, dim, fresh);
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
  void dots_pair(const float* q0, const float* q1, const float* k, std::int32_t dim, float* dot0,
                 float* dot1) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return dots_pair_avx2(q0, q1, k, dim, dot0, dot1);
#endif
    dots(q0, k, dim, dot0);
    dots(q1, k, dim, dot1);
  }
  void softmax_lanes(const float* dot, float scale, std::int32_t mine, float* max, float* sum,
                     float* keep, float* weight, std::int32_t* active) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return softmax_lanes_avx2(dot, scale, mine, max, sum, keep, weight, active);
#endif
    softmax_lanes_portable(dot, scale, mine, max, sum, keep, weight, active);
  }
  void merge(const kernels::AttentionMergeWeights& m, const float* acc, std::int32_t dim,
             float* out) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return merge_avx2(m, acc, dim, out);
#endif
    merge_portable(m, acc, dim, out);
  }
  void keys_to_columns(const float* block, std::int32_t dim, float* k_rows,
                       std::int32_t lane) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return keys_to_columns_avx2(block, dim, k_rows, lane);
#endif
    keys_to_columns_portable(block, dim, k_rows, lane);
  }
  void accumulate_rounds(LaneState* states, const RoundWeights* weights, std::size_t count,
                         const float* v, std::int32_t rounds, std::int32_t dim, bool fresh) const {
#if KVCACHE_INT8_SIMD
    if (avx2) return accumulate_rounds_avx2(states, weights, count, v, rounds, dim, fresh);
#endif
    accumulate_rounds_portable(states, weights, count, v, rounds, dim, fresh);
  }
};

// One query (a row's query head) of a pass: dim() floats in the reader's
// space, the keys it attends to ([0, keys)), where its merged accumulator goes.
struct Query {
  const float* q;
  std::int64_t keys;
  float* merged;
};

#if KVCACHE_INT8_SIMD
// An int8 reader's keys [first, first + count) into k_rows, eight rows at a
// time: their group scales read once, their codes converted in registers.
template <class Reader>
void int8_keys_to_columns(const Reader& reader, std::int64_t first, std::int32_t count,
                          float* k_rows) {
  using Rows = typename Reader::RowMath;
  static constexpr std::int8_t kZeros[kernels::kAttentionMaxHeadDim] = {};
  const std::int32_t dim = reader.view().head_dim;
  const std::int32_t groups = dim / Rows::kGroup;
  const std::uint8_t* rows[kAttentionLanes];
  const std::uint8_t* row_scales[kAttentionLanes];
  codec_rows(reader, 0, first, count, rows, row_scales);
  float scales[8][kernels::kAttentionMaxHeadDim / 8];
  const std::int8_t* codes[8];
  for (std::int32_t l = 0; l < count; l += 8) {
    for (std::int32_t r = 0; r < 8; ++r) {
      if (l + r >= count) {
        codes[r] = kZeros;
        std::fill(scales[r], scales[r] + groups, 0.0f);
        continue;
      }
      codes[r] = reinterpret_cast<const std::int8_t*>(rows[l + r]);
      const std::uint8_t* stored = row_scales[l + r];
      for (std::int32_t g = 0; g < groups; ++g)
        scales[r][g] = codec::load_scale(stored + g * Rows::kScaleBytes, Rows::kScaleBytes);
    }
    int8_keys_to_columns_avx2(codes, scales, dim, Rows::kGroup, k_rows, l);
  }
}
#endif

// Where a block's value rows lie, for readers whose rows the accumulator
// updates read in place (kHalfPages, with AVX2): row r x 32 + l is lane l's
// of round r.
struct ValueRefs {
  std::array<const std::byte*, kRoundsPerBlock * kAttentionLanes> rows{};
};

// One round's keys [first, first + count) into k_rows ([dim][32]) and its
// value rows into v_round ([32][dim]), or, where the updates read them in
// place, their addresses into refs from row `row0`; lanes past count are
// never used.
template <class Reader>
void load_round(const Reader& reader, const VectorPath& path, std::int64_t first,
                std::int32_t count, float* k_rows, float* v_round, float* block, ValueRefs& refs,
                std::size_t row0) {
  const std::int32_t dim = reader.dim();
  const auto width = static_cast<std::size_t>(dim);
#if KVCACHE_INT8_SIMD
  if constexpr (kHalfPages<Reader>) {
    if (path.avx2) {
      static constexpr std::uint16_t kZeros[kernels::kAttentionMaxHeadDim] = {};
      const std::byte* rows[kAttentionLanes];
      plain_rows(reader, 0, first, count, rows);
      for (std::int32_t l = 0; l < count; l += 8) {
        const std::uint16_t* eight[8];
        for (std::int32_t r = 0; r < 8; ++r)
          eight[r] = l + r < count ? reinterpret_cast<const std::uint16_t*>(rows[l + r]) : kZeros;
        half_keys_to_columns_avx2(eight, dim, k_rows, l);
      }
      plain_rows(reader, 1, first, count, refs.rows.data() + row0);
      return;
    }
  }
#endif
#if KVCACHE_INT8_SIMD
  if constexpr (!requires { typename Reader::Element; }) {
    if constexpr (!Reader::kProjected) {
      using Rows = typename Reader::RowMath;
      if constexpr (rows::VectorInt8<Rows, Half>::value) {
        if (path.avx2) {
          int8_keys_to_columns(reader, first, count, k_rows);
          const std::uint8_t* codes[kAttentionLanes];
          const std::uint8_t* scales[kAttentionLanes];
          codec_rows(reader, 1, first, count, codes, scales);
          for (std::int32_t l = 0; l < count; ++l) {  // as load_row
            simd::int8_decode_f32(reinterpret_cast<const std::int8_t*>(codes[l]), scales[l], dim,
                                  Rows::kGroup, Rows::kScaleBytes,
                                  v_round + static_cast<std::size_t>(l) * width);
          }
          return;
        }
      }
      if constexpr (std::is_same_v<Rows, Fp8Rows>) {
        if (path.avx2 && dim % 8 == 0) {
          static constexpr std::uint8_t kZeros[kernels::kAttentionMaxHeadDim] = {};
          const std::uint8_t* rows[kAttentionLanes];
          codec_rows(reader, 0, first, count, rows, nullptr);
          for (std::int32_t l = 0; l < count; l += 8) {
            const std::uint8_t* codes[8];
            for (std::int32_t r = 0; r < 8; ++r)
              codes[r] = l + r < count ? rows[l + r] : kZeros;
            fp8_keys_to_columns_avx2(codes, dim, *reader.state(0), k_rows, l);
          }
          codec_rows(reader, 1, first, count, rows, nullptr);
          for (std::int32_t l = 0; l < count; ++l) {  // as load_row
            simd::fp8_decode_f32(rows[l], dim, *reader.state(1),
                                 v_round + static_cast<std::size_t>(l) * width);
          }
          return;
        }
      }
    }
  }
#endif
  if (!load_key_page(reader, first, count, k_rows)) {
    // Eight rows at a time, then into the lanes' columns.
    for (std::int32_t l = 0; l < count; l += 8) {
      for (std::int32_t r = 0; r < 8; ++r) {
        float* at = block + static_cast<std::size_t>(r) * width;
        if (l + r < count) {
          load_row(reader, 0, first + l + r, at);
        } else {
          std::fill(at, at + width, 0.0f);
        }
      }
      path.keys_to_columns(block, dim, k_rows, l);
    }
  }
  for (std::int32_t l = 0; l < count; ++l)
    load_row(reader, 1, first + l, v_round + static_cast<std::size_t>(l) * width);
}

// Scratch of one pass, kept between passes.
struct AttendScratch {
  std::vector<LaneState> states;
  std::vector<float> k_rows;          // one round's keys, [dim][32]
  std::vector<float> v_rows;          // a block's values, [rounds][32][dim]
  std::vector<RoundWeights> weights;  // [query][kRoundsPerBlock]
  ValueRefs values;                   // where the block's value rows lie
};

// The queries of one pass over one sequence's KV head (its query heads, for
// several of its rows): each round of 32 keys is read once for all of them,
// and the value rows of kRoundsPerBlock rounds are applied together.
template <class Reader>
void attend(const Reader& reader, const std::vector<Query>& queries, float scale,
            const VectorPath& path, AttendScratch& scratch) {
  const std::int32_t dim = reader.dim();
  const auto lanes = static_cast<std::size_t>(kAttentionLanes);
  const auto width = static_cast<std::size_t>(dim);
  std::vector<LaneState>& states = scratch.states;
  std::vector<float>& k_rows = scratch.k_rows;
  k_rows.resize(width * lanes);
  scratch.v_rows.resize(width * lanes * kRoundsPerBlock);
  scratch.weights.resize(queries.size() * kRoundsPerBlock);
  if (states.size() < queries.size()) states.resize(queries.size());
  std::int64_t keys = 0;
  for (std::size_t h = 0; h < queries.size(); ++h) {
    LaneState& s = states[h];
    s.acc.resize(lanes * width);  // cleared by the first block's updates
    for (std::int32_t l = 0; l < kAttentionLanes; ++l) {
      s.max[l] = -::kvcache::detail::bits_float(0x7f800000u);
      s.sum[l] = 0.0f;
    }
    keys = std::max(keys, queries[h].keys);
  }
  float block[8 * kernels::kAttentionMaxHeadDim];
  constexpr std::int64_t kBlockKeys = std::int64_t{kRoundsPerBlock} * kAttentionLanes;
  for (std::int64_t start = 0; start < keys; start += kBlockKeys) {
    const auto rounds = static_cast<std::int32_t>(std::min<std::int64_t>(
        kRoundsPerBlock, (keys - start + kAttentionLanes - 1) / kAttentionLanes));
    for (std::int32_t r = 0; r < rounds; ++r) {
      const std::int64_t first = start + std::int64_t{r} * kAttentionLanes;
      const auto count =
          static_cast<std::int32_t>(std::min<std::int64_t>(kAttentionLanes, keys - first));
      if (first + kAttentionLanes < keys) prefetch_round(reader, first + kAttentionLanes, keys);
      float* v_round = scratch.v_rows.data() + static_cast<std::size_t>(r) * lanes * width;
      load_round(reader, path, first, count, k_rows.data(), v_round, block, scratch.values,
                 static_cast<std::size_t>(r) * lanes);
      // Each query's 32 dot products side by side, each summed in index
      // order; two queries at a time share the reads of the key columns.
      const auto live = [&](std::size_t h) {
        return h < queries.size() && queries[h].keys > first;
      };
      for (std::size_t h = 0; h < queries.size();) {
        if (!live(h)) {
          RoundWeights& w = scratch.weights[h * kRoundsPerBlock + static_cast<std::size_t>(r)];
          std::fill(w.active, w.active + kAttentionLanes, 0);
          ++h;
          continue;
        }
        const std::size_t n = live(h + 1) ? 2 : 1;
        float dot[2][kAttentionLanes];
        if (n == 2) {
          path.dots_pair(queries[h].q, queries[h + 1].q, k_rows.data(), dim, dot[0], dot[1]);
        } else {
          path.dots(queries[h].q, k_rows.data(), dim, dot[0]);
        }
        for (std::size_t i = 0; i < n; ++i) {
          RoundWeights& w =
              scratch.weights[(h + i) * kRoundsPerBlock + static_cast<std::size_t>(r)];
          LaneState& s = states[h + i];
          const auto mine = static_cast<std::int32_t>(
              std::min<std::int64_t>(kAttentionLanes, queries[h + i].keys - first));
          path.softmax_lanes(dot[i], scale, mine, s.max, s.sum, w.keep, w.weight, w.active);
        }
        h += n;
      }
    }
#if KVCACHE_INT8_SIMD
    if constexpr (kHalfPages<Reader>) {
      if (path.avx2) {  // the value rows read where they lie
        accumulate_rounds_avx2(states.data(), scratch.weights.data(), queries.size(),
                               HalfValueRows{scratch.values.rows.data()}, rounds, dim, start == 0);
        continue;
      }
    }
#endif
    path.accumulate_rounds(states.data(), scratch.weights.data(), queries.size(),
                           scratch.v_rows.data(), rounds, dim, start == 0);
  }
  for (std::size_t h = 0; h < queries.size(); ++h) {
    const LaneState& s = states[h];
    path.merge(kernels::attention_merge_weights(s.max, s.sum), s.acc.data(), dim,
               queries[h].merged);
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
  attention_detail::AttendScratch scratch;
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
          attention_detail::attend(reader, queries, p.scale, path, scratch);
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
  attention_detail::AttendScratch scratch;
  std::vector<float> query, merged;
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
          attention_detail::attend(head.reader, queries, p.scale, path, scratch);
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
