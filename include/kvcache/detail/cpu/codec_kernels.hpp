// The CPU backend's compressed-cache kernels: each codec's row math
// (Rows::encode / decode, KIVI's key channels) applied over slot mappings and
// page tables, the loops the CUDA kernels parallelize. Templates on the
// codec's Rows and the element type T (Half, BFloat16, float): the codec is
// chosen at compile time, the dtype once per launch. Callers validate the
// parameters.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kvcache/codec/fp8/rows.hpp"
#include "kvcache/codec/int8/rows.hpp"
#include "kvcache/codec/kivi/rows.hpp"
#include "kvcache/codec/low_rank/rows.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/detail/cpu/codec_simd.hpp"
#include "kvcache/detail/cpu/int8_simd.hpp"
#include "kvcache/detail/cpu/low_rank_simd.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/kernels/params.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu {

namespace rows {

// Every fp16 value as float: one lookup instead of a branchy conversion.
inline const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> values(65536);
    for (std::uint32_t bits = 0; bits < 65536; ++bits)
      values[bits] = half_bits_to_float(static_cast<std::uint16_t>(bits));
    return values;
  }();
  return table.data();
}

// A row of `count` values of T as floats (exactly what load_element gives).
template <class T>
void to_floats(const std::byte* row, std::int32_t count, float* out) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(out, row, static_cast<std::size_t>(count) * sizeof(float));
  } else {
    std::uint16_t bits[1024];
    std::memcpy(bits, row, static_cast<std::size_t>(count) * 2);
    if constexpr (std::is_same_v<T, Half>) {
#if KVCACHE_INT8_SIMD
      if (simd::available()) return simd::halves_to_floats(bits, count, out);
#endif
      const float* table = half_table();
      for (std::int32_t i = 0; i < count; ++i)
        out[i] = table[bits[i]];
    } else {
      for (std::int32_t i = 0; i < count; ++i)
        out[i] = bfloat16_bits_to_float(bits[i]);
    }
  }
}

// Floats stored as T (exactly what store_element writes: NaN canonical).
template <class T>
void from_floats(const float* values, std::int32_t count, std::byte* row) {
  if constexpr (std::is_same_v<T, float>) {
    float out[1024];
    for (std::int32_t i = 0; i < count; ++i)
      out[i] = canonical_float(values[i]);
    std::memcpy(row, out, static_cast<std::size_t>(count) * sizeof(float));
  } else {
    std::uint16_t bits[1024];
    if constexpr (std::is_same_v<T, Half>) {
#if KVCACHE_INT8_SIMD
      if (simd::available()) {
        simd::floats_to_halves(values, count, bits);
        std::memcpy(row, bits, static_cast<std::size_t>(count) * 2);
        return;
      }
#endif
      for (std::int32_t i = 0; i < count; ++i)
        bits[i] = float_to_half_bits(values[i]);
    } else {
      for (std::int32_t i = 0; i < count; ++i)
        bits[i] = float_to_bfloat16_bits(values[i]);
    }
    std::memcpy(row, bits, static_cast<std::size_t>(count) * 2);
  }
}

// Per-thread scratch for the KIVI kernels' group of rows: it grows to the
// largest group seen and is reused, so appends allocate nothing once warm.
inline float* scratch(std::size_t count) {
  thread_local std::vector<float> rows;
  if (rows.size() < count) rows.resize(count);
  return rows.data();
}

// The AVX2 + F16C int8 path (bit-identical to Int8Rows) applies to fp16 rows
// in groups of a multiple of 8.
template <class Rows, class T>
struct VectorInt8 : std::false_type {};
template <std::int32_t G, std::int32_t S>
struct VectorInt8<Int8Rows<G, S>, Half> : std::bool_constant<KVCACHE_INT8_SIMD && G % 8 == 0> {};

// The AVX2 + F16C fp8 and KIVI paths (codec_simd.hpp, bit-identical to
// Fp8Rows and KiviRows) apply to fp16 rows; KIVI's when its codes pack whole
// words (simd::kKiviVector).
template <class Rows, class T>
struct VectorFp8 : std::false_type {};
template <>
struct VectorFp8<Fp8Rows, Half> : std::bool_constant<KVCACHE_INT8_SIMD> {};
template <class Rows>
struct VectorKiviRows : std::false_type {};
template <std::int32_t B, std::int32_t G, std::int32_t S>
struct VectorKiviRows<KiviRows<B, G, S>>
    : std::bool_constant<KVCACHE_INT8_SIMD && simd::kKiviVector<B, G>> {};
template <class Rows, class T>
struct VectorKivi : std::bool_constant<VectorKiviRows<Rows>::value && std::is_same_v<T, Half>> {};

// The AVX2 low-rank path (low_rank_simd.hpp) applies to fp16 rows and a
// rank that is a multiple of 8.
template <class Rows, class T>
struct VectorLowRank : std::false_type {};
template <std::int32_t R, std::int32_t C>
struct VectorLowRank<LowRankRows<R, C>, Half>
    : std::bool_constant<KVCACHE_INT8_SIMD && simd::kLowRankVector<R>> {};

}  // namespace rows

#if KVCACHE_INT8_SIMD
// Low-rank append, vector path (fp16 rows): tokens two at a time, so a head's
// two rows share the basis loads. A row the vector code leaves (a non-finite
// value, or a NaN sum) is encoded by the scalar codec, which also counts it.
template <class Rows>
unsigned long long low_rank_append_f16(const kernels::CodecAppendParams<Rows>& p) {
  const CodecPageView& view = p.cache;
  const std::int32_t d = view.head_dim;
  unsigned long long nonfinite = 0;
  float rows_f[2][1024];
  for (std::int32_t t0 = 0; t0 < p.slots.num_tokens; t0 += 2) {
    std::int32_t tokens[2], in_pages[2], count = 0;
    std::int64_t pages[2];
    for (std::int32_t t = t0; t < std::min(t0 + 2, p.slots.num_tokens); ++t) {
      const std::int64_t slot = p.slots.slots[t];
      if (slot < 0) continue;
      tokens[count] = t;
      pages[count] = slot / view.page_size;
      in_pages[count] = static_cast<std::int32_t>(slot - pages[count] * view.page_size);
      ++count;
    }
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
        const float* basis = kernels::row_state<Rows>(p.state, view, p.layer, kv, h);
        const float* finite[2];
        std::uint8_t* codes[2];
        std::int32_t taken[2], vector = 0;  // taken[v]: the row of vector slot v
        for (std::int32_t n = 0; n < count; ++n) {
          const auto* source =
              reinterpret_cast<const std::uint16_t*>(p.source.row(kv, tokens[n], h));
          if (simd::finite_halves_to_floats(source, d, rows_f[vector])) {
            finite[vector] = rows_f[vector];
            codes[vector] = view.row_codes(pages[n], p.layer, kv, in_pages[n], h);
            taken[vector++] = n;
          }
        }
        bool written[2] = {false, false};
        constexpr std::int32_t kR = Rows::kRank, kC = Rows::kCoefficientBytes;
        if (vector == 2) simd::low_rank_encode_rows<kR, kC, 2>(finite, d, basis, codes, written);
        if (vector == 1) simd::low_rank_encode_rows<kR, kC, 1>(finite, d, basis, codes, written);
        for (std::int32_t n = 0; n < count; ++n) {
          if ((vector > 0 && taken[0] == n && written[0]) ||
              (vector > 1 && taken[1] == n && written[1])) {
            continue;
          }
          float row[1024];
          rows::to_floats<Half>(p.source.row(kv, tokens[n], h), d, row);
          nonfinite += static_cast<unsigned long long>(Rows::encode(
              d, [&](std::int32_t i) { return row[i]; },
              view.row_codes(pages[n], p.layer, kv, in_pages[n], h), nullptr, basis));
        }
      }
    }
  }
  return nonfinite;
}
#endif

template <class Rows, class T>
void codec_append(const kernels::CodecAppendParams<Rows>& p) {
  const CodecPageView& view = p.cache;
  const std::int32_t d = view.head_dim;
  unsigned long long nonfinite = 0;
  float row[1024];
  [[maybe_unused]] const bool vector =
      (rows::VectorInt8<Rows, T>::value || rows::VectorFp8<Rows, T>::value) && simd::available();
#if KVCACHE_INT8_SIMD
  if constexpr (rows::VectorLowRank<Rows, T>::value) {
    if (simd::available() && simd::low_rank_vector_dim(d)) {
      nonfinite = low_rank_append_f16(p);
      if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
      return;
    }
  }
#endif
  for (std::int32_t t = 0; t < p.slots.num_tokens; ++t) {
    const std::int64_t slot = p.slots.slots[t];
    if (slot < 0) continue;
    const std::int64_t page = slot / view.page_size;
    const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
    for (std::int32_t kv = 0; kv < 2; ++kv) {
#if KVCACHE_INT8_SIMD
      if constexpr (rows::VectorInt8<Rows, T>::value) {
        // The token's heads in batches (int8_encode_f16_rows shares the
        // divisions of their scales).
        constexpr std::int32_t kBatch = 16;
        for (std::int32_t h0 = 0; vector && h0 < view.num_heads; h0 += kBatch) {
          const std::int32_t n = std::min(kBatch, view.num_heads - h0);
          const std::uint16_t* sources[kBatch];
          std::int8_t* codes[kBatch];
          std::uint8_t* scales[kBatch];
          for (std::int32_t i = 0; i < n; ++i) {
            sources[i] = reinterpret_cast<const std::uint16_t*>(p.source.row(kv, t, h0 + i));
            codes[i] =
                reinterpret_cast<std::int8_t*>(view.row_codes(page, p.layer, kv, in_page, h0 + i));
            scales[i] = view.row_scales(page, p.layer, kv, in_page, h0 + i);
          }
          nonfinite += static_cast<unsigned long long>(simd::int8_encode_f16_rows(
              n, sources, d, Rows::kGroup, codes, scales, Rows::kScaleBytes));
        }
        if (vector) continue;
      }
#endif
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
        const std::byte* source = p.source.row(kv, t, h);
        std::uint8_t* codes = view.row_codes(page, p.layer, kv, in_page, h);
        std::uint8_t* scales = view.row_scales(page, p.layer, kv, in_page, h);
#if KVCACHE_INT8_SIMD
        if constexpr (rows::VectorFp8<Rows, T>::value) {
          if (vector) {
            const float* state = kernels::row_state<Rows>(p.state, view, p.layer, kv, h);
            nonfinite += static_cast<unsigned long long>(
                simd::fp8_encode_f16(reinterpret_cast<const std::uint16_t*>(source), d,
                                     codec::div_exact(1.0f, *state), codes));
            continue;
          }
        }
#endif
        rows::to_floats<T>(source, d, row);
        nonfinite += static_cast<unsigned long long>(Rows::encode(
            d, [&](std::int32_t i) { return row[i]; }, codes, scales,
            kernels::row_state<Rows>(p.state, view, p.layer, kv, h)));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

template <class Rows, class T>
void codec_gather(const kernels::CodecGatherParams<Rows>& p) {
  const CodecPageView& view = p.cache;
  const kernels::PageTableView& table = p.table;
  const std::int32_t d = view.head_dim;
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * d;
  float row[1024];
  [[maybe_unused]] const bool vector =
      (rows::VectorInt8<Rows, T>::value || rows::VectorFp8<Rows, T>::value) && simd::available();
  // Low-rank: the bases transposed once ([R][head_dim] per layer's K/V head).
  [[maybe_unused]] float* bases_t = nullptr;
  [[maybe_unused]] bool low_rank = false;
  if constexpr (rows::VectorLowRank<Rows, T>::value) {
    low_rank = simd::available() && simd::low_rank_vector_dim(d);
    if (low_rank) {
      const std::int64_t per_head = Rows::state_floats(d);
      bases_t = rows::scratch(static_cast<std::size_t>(2 * view.num_heads * per_head));
      for (std::int32_t kv = 0; kv < 2; ++kv) {
        for (std::int32_t h = 0; h < view.num_heads; ++h) {
          simd::transpose_basis<Rows::kRank>(
              kernels::row_state<Rows>(p.state, view, p.layer, kv, h), d,
              bases_t + (std::int64_t{kv} * view.num_heads + h) * per_head);
        }
      }
    }
  }
  kernels::for_each_page(
      table, view.page_size,
      [&](std::int32_t, std::int64_t page, std::int32_t tokens, std::int64_t first_row) {
        for (std::int32_t t = 0; t < tokens; ++t) {
          for (std::int32_t kv = 0; kv < 2; ++kv) {
            auto* out = static_cast<std::byte*>(kv == 0 ? p.out.k : p.out.v);
            for (std::int32_t h = 0; h < view.num_heads; ++h) {
              std::byte* target = out + ((first_row + t) * out_token + std::int64_t{h} * d) *
                                            std::int64_t{sizeof(T)};
              const std::uint8_t* codes = view.row_codes(page, p.layer, kv, t, h);
              const std::uint8_t* scales = view.row_scales(page, p.layer, kv, t, h);
#if KVCACHE_INT8_SIMD
              if constexpr (rows::VectorInt8<Rows, T>::value) {
                if (vector) {
                  simd::int8_decode_f16(reinterpret_cast<const std::int8_t*>(codes), scales, d,
                                        Rows::kGroup, Rows::kScaleBytes,
                                        reinterpret_cast<std::uint16_t*>(target));
                  continue;
                }
              } else if constexpr (rows::VectorFp8<Rows, T>::value) {
                if (vector) {
                  simd::fp8_decode_f16(codes, d,
                                       *kernels::row_state<Rows>(p.state, view, p.layer, kv, h),
                                       reinterpret_cast<std::uint16_t*>(target));
                  continue;
                }
              } else if constexpr (rows::VectorLowRank<Rows, T>::value) {
                if (low_rank) {
                  simd::low_rank_decode_f32<Rows::kRank, Rows::kCoefficientBytes>(
                      codes,
                      bases_t + (std::int64_t{kv} * view.num_heads + h) * Rows::state_floats(d), d,
                      row);
                  simd::floats_to_halves(row, d, reinterpret_cast<std::uint16_t*>(target));
                  continue;
                }
              }
#endif
              Rows::decode(d, codes, scales,
                           kernels::row_state<Rows>(p.state, view, p.layer, kv, h),
                           [&](std::int32_t index, float value) { row[index] = value; });
              rows::from_floats<T>(row, d, target);
            }
          }
        }
      });
}

template <class Rows, class T>
void kivi_flush(const kernels::KiviFlushParams<Rows>& p) {
  const CodecPageView& view = p.cache;
  constexpr std::int32_t kGroup = Rows::kGroup;
  const std::int32_t d = view.head_dim;
  const std::int32_t heads = view.num_heads;
  unsigned long long nonfinite = 0;
  // Every head's group of key rows, [head][token][d]: read token by token, so
  // the source (a token's heads side by side) streams in order.
  float* group_rows = rows::scratch(static_cast<std::size_t>(heads) * kGroup * d);
  auto head_rows = [&](std::int32_t h) { return group_rows + std::int64_t{h} * kGroup * d; };
  [[maybe_unused]] const bool vector = rows::VectorKivi<Rows, T>::value && simd::available();
  for (std::int32_t g = 0; g < p.num_groups; ++g) {
    const std::int64_t page = p.pages[g];
    const std::int64_t* sources = p.sources + static_cast<std::int64_t>(g) * kGroup;
    auto* keys = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 0));
    for (std::int32_t t = 0; t < kGroup; ++t) {
      for (std::int32_t h = 0; h < heads; ++h)
        rows::to_floats<T>(p.source_row(sources[t], 0, h), d, head_rows(h) + std::int64_t{t} * d);
    }
    // Keys: one asymmetric group per channel.
    for (std::int32_t h = 0; h < heads; ++h) {
      const float* key_rows = head_rows(h);
      bool keys_done = false;
#if KVCACHE_INT8_SIMD
      if constexpr (rows::VectorKivi<Rows, T>::value) {
        keys_done = vector && simd::kivi_encode_keys<Rows::kBits, kGroup, Rows::kScaleBytes>(
                                  key_rows, d, view, keys, h);
      }
#endif
      for (std::int32_t c = 0; c < d && !keys_done; ++c) {
        nonfinite += static_cast<unsigned long long>(Rows::encode_key_channel(
            view, [&](std::int32_t t) { return key_rows[std::int64_t{t} * d + c]; }, keys, h, c));
      }
    }
    // Values: per token, token by token.
    for (std::int32_t t = 0; t < kGroup; ++t) {
      for (std::int32_t h = 0; h < heads; ++h) {
#if KVCACHE_INT8_SIMD
        if constexpr (rows::VectorKivi<Rows, T>::value) {
          if (vector && simd::kivi_encode_values_f16<Rows::kBits, kGroup, Rows::kScaleBytes>(
                            reinterpret_cast<const std::uint16_t*>(p.source_row(sources[t], 1, h)),
                            d, view.row_codes(page, p.layer, 1, t, h),
                            view.row_scales(page, p.layer, 1, t, h))) {
            continue;
          }
        }
#endif
        float row[1024];
        rows::to_floats<T>(p.source_row(sources[t], 1, h), d, row);
        nonfinite += static_cast<unsigned long long>(Rows::encode(
            d, [&](std::int32_t i) { return row[i]; }, view.row_codes(page, p.layer, 1, t, h),
            view.row_scales(page, p.layer, 1, t, h), nullptr));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

template <class Rows, class T>
void kivi_gather(const kernels::KiviGatherParams<Rows>& p) {
  const CodecPageView& view = p.cache;
  const kernels::PageTableView& table = p.table;
  const std::int32_t d = view.head_dim;
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * d;
  const std::int64_t ring_size = p.residual.page_size;
  float* page_rows =
      rows::scratch(static_cast<std::size_t>(view.page_size) * static_cast<std::size_t>(d));
  float values[1024];
  [[maybe_unused]] const bool vector = rows::VectorKivi<Rows, T>::value && simd::available();
  auto* k_out = static_cast<std::byte*>(p.out.k);
  auto* v_out = static_cast<std::byte*>(p.out.v);
  auto at = [&](std::byte* out, std::int64_t row, std::int32_t h) {
    return out + (row * out_token + std::int64_t{h} * d) * std::int64_t{sizeof(T)};
  };
  // Pages (each a whole quantized group): keys channel by channel (one scale
  // load per channel), values row by row.
  kernels::for_each_page(
      table, view.page_size,
      [&](std::int32_t, std::int64_t page, std::int32_t, std::int64_t first_row) {
        const auto* keys =
            reinterpret_cast<const std::uint8_t*>(view.region_base(page, p.layer, 0));
#if KVCACHE_INT8_SIMD
        if constexpr (rows::VectorKivi<Rows, T>::value) {
          if (vector && view.page_size == Rows::kGroup) {
            constexpr std::int32_t kB = Rows::kBits, kG = Rows::kGroup, kS = Rows::kScaleBytes;
            for (std::int32_t h = 0; h < view.num_heads; ++h) {
              simd::kivi_decode_keys<kB, kG, kS>(
                  view, keys, h, d, reinterpret_cast<std::uint16_t*>(at(k_out, first_row, h)),
                  out_token);
            }
            // Values token by token: the page's rows and the output's, in order.
            for (std::int32_t t = 0; t < view.page_size; ++t) {
              for (std::int32_t h = 0; h < view.num_heads; ++h) {
                simd::kivi_decode_values<kB, kG, kS>(
                    view.row_codes(page, p.layer, 1, t, h), view.row_scales(page, p.layer, 1, t, h),
                    d, reinterpret_cast<std::uint16_t*>(at(v_out, first_row + t, h)));
              }
            }
            return;
          }
        }
#endif
        for (std::int32_t h = 0; h < view.num_heads; ++h) {
          for (std::int32_t c = 0; c < d; ++c) {
            Rows::decode_key_channel(view, keys, h, c, [&](std::int32_t t, float value) {
              page_rows[std::int64_t{t} * d + c] = value;
            });
          }
          for (std::int32_t t = 0; t < view.page_size; ++t) {
            rows::from_floats<T>(page_rows + std::int64_t{t} * d, d, at(k_out, first_row + t, h));
            Rows::decode(d, view.row_codes(page, p.layer, 1, t, h),
                         view.row_scales(page, p.layer, 1, t, h), nullptr,
                         [&](std::int32_t i, float value) { values[i] = value; });
            rows::from_floats<T>(values, d, at(v_out, first_row + t, h));
          }
        }
      });
  // The rings: plain copies.
  for (std::int32_t b = 0; b < table.batch_size; ++b) {
    for (std::int64_t t = p.side.paged_tokens[b]; t < p.side.total_tokens[b]; ++t) {
      const std::int64_t row = table.out_row_offset[b] + t;
      const std::int64_t slot = p.side.side_slot[b] * ring_size + t % ring_size;
      for (std::int32_t kv = 0; kv < 2; ++kv) {
        for (std::int32_t h = 0; h < view.num_heads; ++h) {
          std::memcpy(at(kv == 0 ? k_out : v_out, row, h),
                      p.residual.data + p.residual.slot_offset(slot, p.layer, kv, h),
                      static_cast<std::size_t>(p.residual.row_bytes()));
        }
      }
    }
  }
}

template <class T>
void abs_max(const kernels::AbsMaxParams& p) {
  const kernels::SampleView& s = p.sample;
  for (std::int32_t h = 0; h < s.num_heads; ++h) {
    float amax = 0.0f;
    for (std::int32_t t = 0; t < s.num_tokens; ++t) {
      const auto* row =
          static_cast<const std::byte*>(s.data) + t * s.token_bytes + h * s.head_bytes;
      for (std::int32_t i = 0; i < s.head_dim; ++i)
        amax = std::max(amax, codec::finite_magnitude(load_element<T>(row, i)));
    }
    p.out[h] = amax;
  }
}

}  // namespace kvcache::detail::cpu
KVCACHE_EXACT_FP_END
