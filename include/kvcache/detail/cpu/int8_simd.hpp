// AVX2 + F16C versions of the int8 row codec for fp16 tensors, used by the
// CPU backend when the processor has them (checked at run time). They do the
// same IEEE operations in the same order as Int8Rows::encode / decode, so
// codes, scales and outputs are bit-identical to the scalar path (and to the
// GPU): abs-max is order-free, q = round(clamp(x * (1 / s))) per element.
#pragma once

#include <cstdint>
#include <cstring>

#include "kvcache/codec/quant_math.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define KVCACHE_INT8_SIMD 1
#else
#define KVCACHE_INT8_SIMD 0
#endif

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu::simd {

#if KVCACHE_INT8_SIMD

// AVX2 (with the OS saving its registers) and F16C (CPUID leaf 1, ECX bit 29:
// not every compiler's __builtin_cpu_supports knows the name).
inline bool available() {
  static const bool supported = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    return (ecx & (1u << 29)) != 0 && __builtin_cpu_supports("avx2");
  }();
  return supported;
}

__attribute__((target("avx2,f16c"))) inline float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Encodes `head_dim` fp16 values in groups of `group` (a multiple of 8),
// element by element checking for non-finite values. Returns how many it met.
__attribute__((target("avx2,f16c"))) inline std::int32_t int8_encode_f16_checked(
    const std::uint16_t* x, std::int32_t head_dim, std::int32_t group, std::int8_t* codes,
    std::uint8_t* scales, std::int32_t scale_bytes) {
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m128i exponent = _mm_set1_epi16(0x7c00);
  std::int32_t nonfinite = 0;
  for (std::int32_t g = 0; g < head_dim; g += group) {
    __m256 amax = _mm256_setzero_ps();
    for (std::int32_t i = 0; i < group; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + g + i));
      const __m128i bad = _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent);
      nonfinite += __builtin_popcount(static_cast<unsigned>(_mm_movemask_epi8(bad))) / 2;
      const __m256 keep =
          _mm256_castsi256_ps(_mm256_cvtepi16_epi32(bad));  // all-ones where non-finite
      const __m256 a = _mm256_andnot_ps(keep, _mm256_and_ps(_mm256_cvtph_ps(h), magnitude_mask));
      amax = _mm256_max_ps(amax, a);
    }
    const float scale =
        codec::round_to_storage(codec::div_exact(horizontal_max(amax), 127.0f), scale_bytes);
    codec::store_scale(scales + (g / group) * scale_bytes, scale, scale_bytes);
    const float inverse = scale > 0.0f ? codec::div_exact(1.0f, scale) : 0.0f;
    const __m256 inv = _mm256_set1_ps(inverse);
    const __m256 low = _mm256_set1_ps(-127.0f), high = _mm256_set1_ps(127.0f),
                 magic = _mm256_set1_ps(12582912.0f);
    const __m256 zero = _mm256_setzero_ps();
    for (std::int32_t i = 0; i < group; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + g + i));
      const __m256 v = _mm256_cvtph_ps(h);
      __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, inv), low), high);
      q = _mm256_sub_ps(_mm256_add_ps(q, magic), magic);
      // Non-finite lanes: +Inf -> 127, -Inf -> -127, NaN -> 0 (as the scalar codec).
      const __m256 bad = _mm256_castsi256_ps(
          _mm256_cvtepi16_epi32(_mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent)));
      const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
      const __m256 saturated =
          _mm256_andnot_ps(nan, _mm256_blendv_ps(low, high, _mm256_cmp_ps(v, zero, _CMP_GT_OQ)));
      q = _mm256_blendv_ps(q, saturated, bad);
      const __m256i integers = _mm256_cvtps_epi32(q);
      const __m128i words =
          _mm_packs_epi32(_mm256_castsi256_si128(integers), _mm256_extracti128_si256(integers, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + g + i), _mm_packs_epi16(words, words));
    }
  }
  return nonfinite;
}

// Lane g of the result is the minimum (Max: maximum) of the eight lanes of
// v[g], for g < count (at most 8; the lanes past count repeat the last). The
// eight reductions run as one transpose, so the result is a vector in
// registers: storing each as a scalar and loading them back as a vector
// stalls on store forwarding. min / max are order-free (a zero's sign aside,
// which the callers settle themselves).
template <bool Max>
__attribute__((target("avx2,f16c"))) inline __m256 min_or_max(__m256 a, __m256 b) {
  return Max ? _mm256_max_ps(a, b) : _mm256_min_ps(a, b);
}
template <bool Max>
__attribute__((target("avx2,f16c"))) inline __m256 reduce_eight(const __m256* v,
                                                                std::int32_t count) {
  constexpr auto op = min_or_max<Max>;
  __m256 w[8];
  for (std::int32_t g = 0; g < 8; ++g)
    w[g] = v[g < count ? g : count - 1];
  const __m256 t0 = op(_mm256_unpacklo_ps(w[0], w[1]), _mm256_unpackhi_ps(w[0], w[1]));
  const __m256 t1 = op(_mm256_unpacklo_ps(w[2], w[3]), _mm256_unpackhi_ps(w[2], w[3]));
  const __m256 t2 = op(_mm256_unpacklo_ps(w[4], w[5]), _mm256_unpackhi_ps(w[4], w[5]));
  const __m256 t3 = op(_mm256_unpacklo_ps(w[6], w[7]), _mm256_unpackhi_ps(w[6], w[7]));
  // Per 128-bit half: [w0, w1, w2, w3] and [w4, w5, w6, w7] of that half.
  const __m256 u0 = op(_mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 u1 = op(_mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(3, 2, 3, 2)));
  return op(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// round_even(clamp(x * inverse, -127, 127)) of eight finite values as int32
// (cvtps_epi32 rounds to nearest even).
__attribute__((target("avx2,f16c"))) inline __m256i int8_codes(__m256 x, __m256 inverse) {
  return _mm256_cvtps_epi32(_mm256_min_ps(
      _mm256_max_ps(_mm256_mul_ps(x, inverse), _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f)));
}

// Encodes `count` rows of `head_dim` fp16 values (rows[r] to codes[r] and
// scales[r]) in groups of `group` (a multiple of 8). Returns the non-finite
// inputs met. The common case (groups of a multiple of 32, every value of the
// row finite) converts each value once, computes the scales and inverses of
// eight groups of the batch (of any of its rows) with two vector divisions,
// and writes 32 codes a store; a row with a non-finite value goes through
// int8_encode_f16_checked. Batching the rows (a token's heads) shares the
// divisions, whose latency dominated a single row of few groups.
__attribute__((target("avx2,f16c"))) inline std::int32_t int8_encode_f16_rows(
    std::int32_t count, const std::uint16_t* const* rows, std::int32_t head_dim, std::int32_t group,
    std::int8_t* const* codes, std::uint8_t* const* scales, std::int32_t scale_bytes) {
  constexpr std::int32_t kMaxValues = 1024;  // of a batch, converted and kept in registers' memory
  if (group % 32 != 0 || head_dim < 1 || head_dim > kMaxValues || head_dim % group != 0) {
    std::int32_t nonfinite = 0;
    for (std::int32_t r = 0; r < count; ++r)
      nonfinite +=
          int8_encode_f16_checked(rows[r], head_dim, group, codes[r], scales[r], scale_bytes);
    return nonfinite;
  }
  const std::int32_t batch = kMaxValues / head_dim;  // rows sharing the buffers
  if (count > batch) {
    std::int32_t nonfinite = 0;
    for (std::int32_t r = 0; r < count; r += batch) {
      const std::int32_t n = count - r < batch ? count - r : batch;
      nonfinite +=
          int8_encode_f16_rows(n, rows + r, head_dim, group, codes + r, scales + r, scale_bytes);
    }
    return nonfinite;
  }
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i exponent = _mm256_set1_epi16(0x7c00);
  const std::int32_t groups = head_dim / group, total = groups * count;
  __m256 partial[kMaxValues / 32];  // each group's eight partial maxima
  alignas(32) float inverse[kMaxValues / 32 + 8];
  __m256 values[kMaxValues / 8];
  bool checked[kMaxValues / 32];  // rows left to int8_encode_f16_checked
  std::int32_t nonfinite_count = 0;
  for (std::int32_t r = 0; r < count; ++r) {
    const std::uint16_t* x = rows[r];
    __m256* row_values = values + r * (head_dim / 8);
    __m256i nonfinite = _mm256_setzero_si256();
    for (std::int32_t g = 0; g < groups; ++g) {
      __m256 m = _mm256_setzero_ps();
      for (std::int32_t i = g * group; i < (g + 1) * group; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
        nonfinite =
            _mm256_or_si256(nonfinite, _mm256_cmpeq_epi16(_mm256_and_si256(h, exponent), exponent));
        const __m256 a = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        const __m256 b = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
        row_values[i / 8] = a;
        row_values[i / 8 + 1] = b;
        m = _mm256_max_ps(
            m, _mm256_max_ps(_mm256_and_ps(a, magnitude_mask), _mm256_and_ps(b, magnitude_mask)));
      }
      partial[r * groups + g] = m;
    }
    checked[r] = !_mm256_testz_si256(nonfinite, nonfinite);
    if (checked[r]) {
      nonfinite_count +=
          int8_encode_f16_checked(x, head_dim, group, codes[r], scales[r], scale_bytes);
    }
  }
  // scale = amax / 127 rounded to its storage, inverse = 1 / scale (0 for an
  // all-zero group): the scalar codec's operations, eight groups at a time.
  alignas(32) float stored[kMaxValues / 32 + 8];
  for (std::int32_t g = 0; g < total; g += 8) {
    const __m256 amax = reduce_eight<true>(partial + g, total - g < 8 ? total - g : 8);
    __m256 scale = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
    if (scale_bytes == 2)
      scale = _mm256_cvtph_ps(_mm256_cvtps_ph(scale, _MM_FROUND_TO_NEAREST_INT));
    _mm256_store_ps(stored + g, scale);
    const __m256 positive = _mm256_cmp_ps(scale, _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_store_ps(inverse + g,
                    _mm256_and_ps(positive, _mm256_div_ps(_mm256_set1_ps(1.0f), scale)));
  }
  const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (std::int32_t r = 0; r < count; ++r) {
    if (checked[r]) continue;
    const __m256* row_values = values + r * (head_dim / 8);
    for (std::int32_t g = 0; g < groups; ++g)
      codec::store_scale(scales[r] + g * scale_bytes, stored[r * groups + g], scale_bytes);
    for (std::int32_t g = 0; g < groups; ++g) {
      const __m256 inv = _mm256_set1_ps(inverse[r * groups + g]);
      for (std::int32_t i = g * group; i < (g + 1) * group; i += 32) {
        // Written out, not looped: -O2 keeps a looped q[4] on the stack.
        const __m256i q0 = int8_codes(row_values[i / 8], inv),
                      q1 = int8_codes(row_values[i / 8 + 1], inv);
        const __m256i q2 = int8_codes(row_values[i / 8 + 2], inv),
                      q3 = int8_codes(row_values[i / 8 + 3], inv);
        const __m256i packed =
            _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes[r] + i),
                            _mm256_permutevar8x32_epi32(packed, lane_order));
      }
    }
  }
  return nonfinite_count;
}

// One row: int8_encode_f16_rows of a batch of one.
__attribute__((target("avx2,f16c"))) inline std::int32_t int8_encode_f16(
    const std::uint16_t* x, std::int32_t head_dim, std::int32_t group, std::int8_t* codes,
    std::uint8_t* scales, std::int32_t scale_bytes) {
  return int8_encode_f16_rows(1, &x, head_dim, group, &codes, &scales, scale_bytes);
}

// Eight floats as fp16 bits, rounded to nearest even like float_to_half_bits,
// a NaN stored as the canonical one (F16C alone keeps its sign and payload).
__attribute__((target("avx2,f16c"))) inline __m128i to_halves(__m256 values) {
  const __m256 nan = _mm256_cmp_ps(values, values, _CMP_UNORD_Q);
  const __m256 canonical = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
  return _mm256_cvtps_ph(_mm256_blendv_ps(values, canonical, nan), _MM_FROUND_TO_NEAREST_INT);
}

// Decodes `head_dim` int8 codes (groups of `group`, a multiple of 8) to fp16.
__attribute__((target("avx2,f16c"))) inline void int8_decode_f16(
    const std::int8_t* codes, const std::uint8_t* scales, std::int32_t head_dim, std::int32_t group,
    std::int32_t scale_bytes, std::uint16_t* out) {
  for (std::int32_t g = 0; g < head_dim; g += group) {
    const __m256 scale =
        _mm256_set1_ps(codec::load_scale(scales + (g / group) * scale_bytes, scale_bytes));
    for (std::int32_t i = 0; i < group; i += 8) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + g + i));
      const __m256 values = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), scale);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + g + i), to_halves(values));
    }
  }
}

// Decodes `head_dim` int8 codes (groups of `group`, a multiple of 8) to
// float: code x scale, as codec::int8_decode.
__attribute__((target("avx2,f16c"))) inline void int8_decode_f32(
    const std::int8_t* codes, const std::uint8_t* scales, std::int32_t head_dim, std::int32_t group,
    std::int32_t scale_bytes, float* out) {
  for (std::int32_t g = 0; g < head_dim; g += group) {
    const __m256 scale =
        _mm256_set1_ps(codec::load_scale(scales + (g / group) * scale_bytes, scale_bytes));
    for (std::int32_t i = 0; i < group; i += 8) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + g + i));
      _mm256_storeu_ps(out + g + i,
                       _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), scale));
    }
  }
}

// fp16 rows to and from float with F16C (round to nearest even, as
// float_to_half_bits and half_bits_to_float; a NaN stored canonical).
__attribute__((target("avx2,f16c"))) inline void halves_to_floats(const std::uint16_t* in,
                                                                  std::int32_t count, float* out) {
  std::int32_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
  for (; i < count; ++i)
    out[i] = half_bits_to_float(in[i]);
}

__attribute__((target("avx2,f16c"))) inline void floats_to_halves(const float* in,
                                                                  std::int32_t count,
                                                                  std::uint16_t* out) {
  std::int32_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), to_halves(_mm256_loadu_ps(in + i)));
  }
  for (; i < count; ++i)
    out[i] = float_to_half_bits(in[i]);
}

#else

inline bool available() {
  return false;
}

#endif

}  // namespace kvcache::detail::cpu::simd
KVCACHE_EXACT_FP_END
