// AVX2 + F16C versions of the fp8 (e4m3) and KIVI row codecs for fp16
// tensors, used by the CPU backend when the processor has them (checked at
// run time, simd::available()). Like the int8 path (int8_simd.hpp) they do
// the scalar codec's IEEE operations on the same operands, eight values a
// vector, so codes, scales and decoded values are bit-identical to
// Fp8Rows / KiviRows (and to the GPU). Where an order matters they keep it or
// step aside:
//   - fp8: every value is coded on its own; float_to_e4m3's branches become
//     masks (the subnormal range rounds with cvtps_epi32, to nearest even).
//   - KIVI keys: eight channels a vector, each channel's minimum and maximum
//     folded over its tokens in order (minps / maxps are the scalar fold's
//     `x < low ? x : low`, ties included).
//   - KIVI values: a group's range is folded across lanes, which can only
//     differ from the scalar fold in the sign of a zero: a group whose
//     minimum or maximum is zero takes the scalar fold.
//   - A row or group with a non-finite value is left to the scalar codec
//     (the functions return false), which also counts it.
#pragma once

#include <cstdint>
#include <cstring>

#include "kvcache/codec/fp8/rows.hpp"
#include "kvcache/codec/kivi/rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/detail/cpu/int8_simd.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu::simd {

// The KIVI vector paths take B-bit codes whose 32-bit words hold whole runs
// of eight values (B of 2 or 4), groups of a multiple of 8 values, and key
// pages whose channel runs are whole words (G x B a multiple of 32).
template <std::int32_t B, std::int32_t G>
inline constexpr bool kKiviVector = (B == 2 || B == 4) && G % 8 == 0 && G* B % 32 == 0;

#if KVCACHE_INT8_SIMD

// ---- fp8 e4m3 ---------------------------------------------------------------

// float_to_e4m3 of eight floats, each code in the low byte of its lane.
__attribute__((target("avx2,f16c"))) inline __m256i e4m3_codes(__m256 value) {
  const __m256i bits = _mm256_castps_si256(value);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
  const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
  // Normal: keep 3 mantissa bits, round half to even, rebias 127 -> 7.
  const __m256i rounded =
      _mm256_add_epi32(_mm256_add_epi32(magnitude, _mm256_set1_epi32(0x7ffff)),
                       _mm256_and_si256(_mm256_srli_epi32(magnitude, 20), _mm256_set1_epi32(1)));
  __m256i code = _mm256_sub_epi32(_mm256_srli_epi32(rounded, 20), _mm256_set1_epi32(120 << 3));
  // Below 2^-6: |value| x 2^9 (exact) rounded to an integer is the code.
  const __m256i subnormal =
      _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(magnitude), _mm256_set1_ps(512.0f)));
  code = _mm256_blendv_epi8(code, subnormal,
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3c800000), magnitude));
  // 448 and beyond (Inf too) saturate.
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7e),
                            _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x43dfffff)));
  code = _mm256_or_si256(code, sign);
  return _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7f),
                            _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000)));
}

// codec::fp8_code(x, inverse) of eight fp16 values: a NaN input codes 0.
__attribute__((target("avx2,f16c"))) inline __m256i fp8_codes_f16(__m128i halves, __m256 inverse) {
  const __m256 values = _mm256_cvtph_ps(halves);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(values, values, _CMP_UNORD_Q));
  return _mm256_andnot_si256(nan, e4m3_codes(_mm256_mul_ps(values, inverse)));
}

// Fp8Rows::encode of a row of `count` fp16 values with the scale's inverse;
// returns the non-finite inputs met.
__attribute__((target("avx2,f16c"))) inline std::int32_t fp8_encode_f16(const std::uint16_t* x,
                                                                        std::int32_t count,
                                                                        float inverse,
                                                                        std::uint8_t* codes) {
  const __m256 inv = _mm256_set1_ps(inverse);
  const __m256i exponent = _mm256_set1_epi16(0x7c00);
  const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  std::int32_t nonfinite = 0;
  std::int32_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m256i h0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i h1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 16));
    const __m256i bad0 = _mm256_cmpeq_epi16(_mm256_and_si256(h0, exponent), exponent);
    const __m256i bad1 = _mm256_cmpeq_epi16(_mm256_and_si256(h1, exponent), exponent);
    nonfinite += (__builtin_popcount(static_cast<unsigned>(_mm256_movemask_epi8(bad0))) +
                  __builtin_popcount(static_cast<unsigned>(_mm256_movemask_epi8(bad1)))) /
                 2;
    const __m256i a = fp8_codes_f16(_mm256_castsi256_si128(h0), inv);
    const __m256i b = fp8_codes_f16(_mm256_extracti128_si256(h0, 1), inv);
    const __m256i c = fp8_codes_f16(_mm256_castsi256_si128(h1), inv);
    const __m256i d = fp8_codes_f16(_mm256_extracti128_si256(h1, 1), inv);
    const __m256i packed =
        _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                        _mm256_permutevar8x32_epi32(packed, lane_order));
  }
  for (; i < count; ++i) {
    const float value = half_bits_to_float(x[i]);
    nonfinite += codec::is_finite(value) ? 0 : 1;
    codes[i] = codec::fp8_code(value, inverse);
  }
  return nonfinite;
}

// e4m3_to_float of eight codes (the low byte of each lane): the magnitude's
// bits shifted into a float's and scaled by 2^120 (exact, subnormals too).
__attribute__((target("avx2,f16c"))) inline __m256 e4m3_values(__m256i codes) {
  const __m256i magnitude = _mm256_and_si256(codes, _mm256_set1_epi32(0x7f));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x80)), 24);
  const __m256 value = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(magnitude, 20)),
                                     _mm256_set1_ps(0x1p120f));
  const __m256i nan = _mm256_cmpeq_epi32(magnitude, _mm256_set1_epi32(0x7f));
  return _mm256_castsi256_ps(
      _mm256_blendv_epi8(_mm256_or_si256(_mm256_castps_si256(value), sign),
                         _mm256_or_si256(_mm256_set1_epi32(0x7fc00000), sign), nan));
}

// Fp8Rows::decode of eight codes: the value times the scale.
__attribute__((target("avx2,f16c"))) inline __m256 fp8_values(const std::uint8_t* codes,
                                                              __m256 scale) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
  return _mm256_mul_ps(e4m3_values(_mm256_cvtepu8_epi32(bytes)), scale);
}

__attribute__((target("avx2,f16c"))) inline void fp8_decode_f16(const std::uint8_t* codes,
                                                                std::int32_t count, float scale,
                                                                std::uint16_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  std::int32_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), to_halves(fp8_values(codes + i, s)));
  for (; i < count; ++i)
    out[i] = float_to_half_bits(codec::mul_exact(codec::fp8_decode(codes[i]), scale));
}

__attribute__((target("avx2,f16c"))) inline void fp8_decode_f32(const std::uint8_t* codes,
                                                                std::int32_t count, float scale,
                                                                float* out) {
  const __m256 s = _mm256_set1_ps(scale);
  std::int32_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(out + i, fp8_values(codes + i, s));
  for (; i < count; ++i)
    out[i] = codec::mul_exact(codec::fp8_decode(codes[i]), scale);
}

// ---- KIVI -------------------------------------------------------------------

// True when every one of `count` floats is finite.
__attribute__((target("avx2,f16c"))) inline bool all_finite(const float* x, std::int64_t count) {
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent));
  }
  bool finite = _mm256_testz_si256(bad, bad) != 0;
  for (; i < count; ++i)
    finite = finite && codec::is_finite(x[i]);
  return finite;
}

// codec::asymmetric_code of eight finite values: round(clamp((x - zero) x
// inverse, 0, levels)); a NaN product (0 x an infinite inverse) codes 0, as
// maxps gives its second operand for an unordered pair.
__attribute__((target("avx2,f16c"))) inline __m256i asymmetric_codes(__m256 x, __m256 minus_zero,
                                                                     __m256 inverse,
                                                                     __m256 levels) {
  const __m256 scaled = _mm256_mul_ps(_mm256_add_ps(x, minus_zero), inverse);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(scaled, _mm256_setzero_ps()), levels));
}

// The eight 32-bit lanes' B-bit codes packed into one word, lane l at bits l x B.
template <std::int32_t B>
__attribute__((target("avx2,f16c"))) inline std::uint32_t pack_codes(__m256i codes) {
  const __m256i shifts = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
  const __m256i placed = _mm256_sllv_epi32(codes, shifts);
  __m128i r = _mm_or_si128(_mm256_castsi256_si128(placed), _mm256_extracti128_si256(placed, 1));
  r = _mm_or_si128(r, _mm_unpackhi_epi64(r, r));
  r = _mm_or_si128(r, _mm_srli_epi64(r, 32));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(r));
}

// Eight B-bit codes starting at code `index` (a multiple of 8) as floats.
template <std::int32_t B>
__attribute__((target("avx2,f16c"))) inline __m256 unpack_codes(const std::uint8_t* codes,
                                                                std::int32_t index) {
  std::uint32_t word = 0;
  std::memcpy(&word, codes + index * B / 8, B);  // 8 codes: B bytes, little-endian
  const __m256i shifts = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
  const __m256i values =
      _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                       _mm256_set1_epi32((1 << B) - 1));
  return _mm256_cvtepi32_ps(values);
}

// The scale (S = 2: rounded to fp16) of eight groups or channels, clamped to the
// storage's range: codec::round_to_storage.
template <std::int32_t S>
__attribute__((target("avx2,f16c"))) inline __m256 round_to_storage(__m256 value) {
  const __m256 bound = _mm256_set1_ps(codec::storage_max(S));
  const __m256 minus_bound = _mm256_set1_ps(-codec::storage_max(S));
  value = _mm256_blendv_ps(value, bound, _mm256_cmp_ps(value, bound, _CMP_GT_OQ));
  value = _mm256_blendv_ps(value, minus_bound, _mm256_cmp_ps(value, minus_bound, _CMP_LT_OQ));
  if constexpr (S == 2) value = _mm256_cvtph_ps(_mm256_cvtps_ph(value, _MM_FROUND_TO_NEAREST_INT));
  return value;
}

// KiviRows<B, G, S>::encode of a row of fp16 values (value rows). False, and
// nothing written, when the row has a non-finite value.
template <std::int32_t B, std::int32_t G, std::int32_t S>
__attribute__((target("avx2,f16c"))) inline bool kivi_encode_values_f16(const std::uint16_t* x,
                                                                        std::int32_t head_dim,
                                                                        std::uint8_t* codes,
                                                                        std::uint8_t* scales) {
  static_assert(kKiviVector<B, G>);
  using Rows = KiviRows<B, G, S>;
  constexpr std::int32_t kMaxHeadDim = 1024;
  if (head_dim > kMaxHeadDim || head_dim % G != 0) return false;
  const __m256i exponent = _mm256_set1_epi16(0x7c00);
  __m256i bad = _mm256_setzero_si256();
  std::int32_t i = 0;
  for (; i + 16 <= head_dim; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi16(_mm256_and_si256(h, exponent), exponent));
  }
  if (!_mm256_testz_si256(bad, bad)) return false;
  for (; i < head_dim; ++i)
    if ((x[i] & 0x7c00) == 0x7c00) return false;
  // The row as floats, and each group's eight partial minima and maxima.
  constexpr std::int32_t kMaxGroups = kMaxHeadDim / G + 8;
  alignas(32) float values[kMaxHeadDim];
  __m256 low_parts[kMaxGroups], high_parts[kMaxGroups];
  const std::int32_t groups = head_dim / G;
  for (std::int32_t g = 0; g < groups; ++g) {
    const std::int32_t first = g * G;
    __m256 low = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + first)));
    __m256 high = low;
    _mm256_store_ps(values + first, low);
    for (std::int32_t j = first + 8; j < first + G; j += 8) {
      const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + j)));
      _mm256_store_ps(values + j, v);
      low = _mm256_min_ps(v, low);
      high = _mm256_max_ps(v, high);
    }
    low_parts[g] = low;
    high_parts[g] = high;
  }
  // codec::asymmetric_scale of eight groups at a time; (scale, zero) stored
  // per group as store_scale writes them.
  const __m256 levels = _mm256_set1_ps(static_cast<float>((1 << B) - 1));
  alignas(32) float zeros[kMaxGroups], inverses[kMaxGroups];
  for (std::int32_t g = 0; g < groups; g += 8) {
    const std::int32_t count = groups - g < 8 ? groups - g : 8;
    __m256 lows = reduce_eight<false>(low_parts + g, count);
    __m256 highs = reduce_eight<true>(high_parts + g, count);
    const __m256 zero_ends = _mm256_or_ps(_mm256_cmp_ps(lows, _mm256_setzero_ps(), _CMP_EQ_OQ),
                                          _mm256_cmp_ps(highs, _mm256_setzero_ps(), _CMP_EQ_OQ));
    if ((_mm256_movemask_ps(zero_ends) & ((1 << count) - 1)) != 0) {
      // A range ending at a zero: its sign is the scalar fold's.
      alignas(32) float low_values[8], high_values[8];
      _mm256_store_ps(low_values, lows);
      _mm256_store_ps(high_values, highs);
      for (std::int32_t k = 0; k < count; ++k) {
        if (low_values[k] == 0.0f || high_values[k] == 0.0f) {
          const codec::MinMax range = Rows::stat(values + (g + k) * G, G);
          low_values[k] = range.low;
          high_values[k] = range.high;
        }
      }
      lows = _mm256_load_ps(low_values);
      highs = _mm256_load_ps(high_values);
    }
    const __m256 zero = round_to_storage<S>(lows);
    const __m256 scale = round_to_storage<S>(
        _mm256_div_ps(_mm256_add_ps(highs, _mm256_xor_ps(zero, _mm256_set1_ps(-0.0f))), levels));
    _mm256_store_ps(zeros + g, zero);
    _mm256_store_ps(inverses + g,
                    _mm256_and_ps(_mm256_cmp_ps(scale, _mm256_setzero_ps(), _CMP_GT_OQ),
                                  _mm256_div_ps(_mm256_set1_ps(1.0f), scale)));
    if constexpr (S == 2) {
      const __m128i scale_bits = _mm256_cvtps_ph(scale, _MM_FROUND_TO_NEAREST_INT);
      const __m128i zero_bits = _mm256_cvtps_ph(zero, _MM_FROUND_TO_NEAREST_INT);
      alignas(16) std::uint16_t pairs[16];  // scale, zero of each group, little-endian
      _mm_store_si128(reinterpret_cast<__m128i*>(pairs), _mm_unpacklo_epi16(scale_bits, zero_bits));
      _mm_store_si128(reinterpret_cast<__m128i*>(pairs + 8),
                      _mm_unpackhi_epi16(scale_bits, zero_bits));
      std::memcpy(scales + g * Rows::kGroupScaleBytes, pairs, static_cast<std::size_t>(count) * 4);
    } else {
      alignas(32) float scale_values[8], zero_values[8];
      _mm256_store_ps(scale_values, scale);
      _mm256_store_ps(zero_values, zero);
      for (std::int32_t k = 0; k < count; ++k) {
        std::uint8_t* at = scales + (g + k) * Rows::kGroupScaleBytes;
        std::memcpy(at, &scale_values[k], 4);
        std::memcpy(at + 4, &zero_values[k], 4);
      }
    }
  }
  for (std::int32_t g = 0; g < groups; ++g) {
    const __m256 minus_zero = _mm256_set1_ps(-zeros[g]);
    const __m256 inverse = _mm256_set1_ps(inverses[g]);
    for (std::int32_t j = g * G; j < (g + 1) * G; j += 8) {
      const std::uint32_t word =
          pack_codes<B>(asymmetric_codes(_mm256_load_ps(values + j), minus_zero, inverse, levels));
      std::memcpy(codes + j * B / 8, &word, B);  // 8 codes: B bytes, little-endian
    }
  }
  return true;
}

// KiviRows<B, G, S>::decode of a value row to fp16 (or float).
template <std::int32_t B, std::int32_t G, std::int32_t S, class Out>
__attribute__((target("avx2,f16c"))) inline void kivi_decode_values(const std::uint8_t* codes,
                                                                    const std::uint8_t* scales,
                                                                    std::int32_t head_dim,
                                                                    Out* out) {
  static_assert(kKiviVector<B, G>);
  using Rows = KiviRows<B, G, S>;
  for (std::int32_t g = 0; g < head_dim / G; ++g) {
    const auto s = Rows::group_scale(scales + g * Rows::kGroupScaleBytes);
    const __m256 step = _mm256_set1_ps(s.step), zero = _mm256_set1_ps(s.zero);
    for (std::int32_t i = g * G; i < (g + 1) * G; i += 8) {
      const __m256 value = _mm256_add_ps(_mm256_mul_ps(unpack_codes<B>(codes, i), step), zero);
      if constexpr (sizeof(Out) == 2) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), to_halves(value));
      } else {
        _mm256_storeu_ps(out + i, value);
      }
    }
  }
}

// KiviRows<B, G, S>::encode_key_channel of every channel of one head: `rows`
// holds the group's G tokens x head_dim floats. False, and nothing written,
// when one is non-finite.
template <std::int32_t B, std::int32_t G, std::int32_t S>
__attribute__((target("avx2,f16c"))) inline bool kivi_encode_keys(const float* rows,
                                                                  std::int32_t head_dim,
                                                                  const CodecPageView& view,
                                                                  std::uint8_t* region,
                                                                  std::int32_t head) {
  static_assert(kKiviVector<B, G>);
  using Rows = KiviRows<B, G, S>;
  constexpr std::int32_t kWords = G * B / 32;  // a channel's code words
  constexpr std::int32_t kPerWord = 32 / B;    // tokens a word
  if (head_dim % 8 != 0 || !all_finite(rows, std::int64_t{G} * head_dim)) return false;
  const __m256 levels = _mm256_set1_ps(static_cast<float>((1 << B) - 1));
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (std::int32_t c = 0; c < head_dim; c += 8) {
    // Each channel's range over its tokens, in token order (MinMax::add).
    __m256 low = _mm256_loadu_ps(rows + c), high = low;
    for (std::int32_t t = 1; t < G; ++t) {
      const __m256 x = _mm256_loadu_ps(rows + std::int64_t{t} * head_dim + c);
      low = _mm256_min_ps(x, low);
      high = _mm256_max_ps(x, high);
    }
    // codec::asymmetric_scale, lane by lane.
    const __m256 zero = round_to_storage<S>(low);
    const __m256 minus_zero = _mm256_xor_ps(zero, sign);
    const __m256 scale =
        round_to_storage<S>(_mm256_div_ps(_mm256_add_ps(high, minus_zero), levels));
    const __m256 inverse = _mm256_and_ps(_mm256_cmp_ps(scale, _mm256_setzero_ps(), _CMP_GT_OQ),
                                         _mm256_div_ps(_mm256_set1_ps(1.0f), scale));
    __m256i words[kWords];
    for (std::int32_t w = 0; w < kWords; ++w) {
      words[w] = _mm256_setzero_si256();
      for (std::int32_t k = 0; k < kPerWord; ++k) {
        const std::int32_t t = w * kPerWord + k;
        const __m256i code = asymmetric_codes(
            _mm256_loadu_ps(rows + std::int64_t{t} * head_dim + c), minus_zero, inverse, levels);
        words[w] = _mm256_or_si256(words[w], _mm256_sll_epi32(code, _mm_cvtsi32_si128(k * B)));
      }
    }
    alignas(32) std::uint32_t lanes[kWords][8];
    alignas(32) float scales[8], zeros[8];
    for (std::int32_t w = 0; w < kWords; ++w)
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[w]), words[w]);
    _mm256_store_ps(scales, scale);
    _mm256_store_ps(zeros, zero);
    for (std::int32_t l = 0; l < 8; ++l) {
      std::uint32_t run[kWords];
      for (std::int32_t w = 0; w < kWords; ++w)
        run[w] = lanes[w][l];
      std::memcpy(Rows::key_codes(view, region, head, c + l), run, sizeof(run));
      std::uint8_t* scale_at = Rows::key_scale(view, region, head, c + l);
      codec::store_scale(scale_at, scales[l], S);
      codec::store_scale(scale_at + S, zeros[l], S);
    }
  }
  return true;
}

// KiviRows<B, G, S>::decode_key_channel of every channel of one head of a
// page, token t of channel c to out[t x stride + c] as fp16 (or float).
template <std::int32_t B, std::int32_t G, std::int32_t S, class Out>
__attribute__((target("avx2,f16c"))) inline void kivi_decode_keys(const CodecPageView& view,
                                                                  const std::uint8_t* region,
                                                                  std::int32_t head,
                                                                  std::int32_t head_dim, Out* out,
                                                                  std::int64_t stride) {
  static_assert(kKiviVector<B, G>);
  using Rows = KiviRows<B, G, S>;
  constexpr std::int32_t kWords = G * B / 32;
  constexpr std::int32_t kPerWord = 32 / B;
  auto* base = const_cast<std::uint8_t*>(region);
  const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
  for (std::int32_t c = 0; c < head_dim; c += 8) {
    alignas(32) std::uint32_t lanes[kWords][8];
    alignas(32) float steps[8], zeros[8];
    for (std::int32_t l = 0; l < 8; ++l) {
      std::uint32_t run[kWords];
      std::memcpy(run, Rows::key_codes(view, base, head, c + l), sizeof(run));
      for (std::int32_t w = 0; w < kWords; ++w)
        lanes[w][l] = run[w];
      const auto s = Rows::group_scale(Rows::key_scale(view, base, head, c + l));
      steps[l] = s.step;
      zeros[l] = s.zero;
    }
    const __m256 step = _mm256_load_ps(steps), zero = _mm256_load_ps(zeros);
    for (std::int32_t w = 0; w < kWords; ++w) {
      const __m256i word = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes[w]));
      for (std::int32_t k = 0; k < kPerWord; ++k) {
        const std::int32_t t = w * kPerWord + k;
        const __m256i code =
            _mm256_and_si256(_mm256_srl_epi32(word, _mm_cvtsi32_si128(k * B)), mask);
        const __m256 value = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(code), step), zero);
        Out* at = out + std::int64_t{t} * stride + c;
        if constexpr (sizeof(Out) == 2) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(at), to_halves(value));
        } else {
          _mm256_storeu_ps(at, value);
        }
      }
    }
  }
}

// Every channel of one head of a page as a column of G floats: token t of
// channel c to out[c x G + t] (the attention's keys, a channel's tokens side
// by side); the values of decode_key_channel.
template <std::int32_t B, std::int32_t G, std::int32_t S>
__attribute__((target("avx2,f16c"))) inline void kivi_decode_key_columns(const CodecPageView& view,
                                                                         const std::uint8_t* region,
                                                                         std::int32_t head,
                                                                         std::int32_t head_dim,
                                                                         float* out) {
  static_assert(kKiviVector<B, G>);
  using Rows = KiviRows<B, G, S>;
  auto* base = const_cast<std::uint8_t*>(region);
  for (std::int32_t c = 0; c < head_dim; ++c) {
    const std::uint8_t* run = Rows::key_codes(view, base, head, c);
    const auto s = Rows::group_scale(Rows::key_scale(view, base, head, c));
    const __m256 step = _mm256_set1_ps(s.step), zero = _mm256_set1_ps(s.zero);
    for (std::int32_t t = 0; t < G; t += 8) {
      _mm256_storeu_ps(out + std::int64_t{c} * G + t,
                       _mm256_add_ps(_mm256_mul_ps(unpack_codes<B>(run, t), step), zero));
    }
  }
}

#endif

}  // namespace kvcache::detail::cpu::simd
KVCACHE_EXACT_FP_END
