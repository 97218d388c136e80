// AVX2 + F16C versions of the low-rank codec's row math (LowRankRows,
// codec/low_rank/rows.hpp) for fp16 tensors, used by the CPU backend when the
// processor has them (simd::available()). Each coefficient and each decoded
// value is still one sum in index order of unfused products, so codes and
// rows are bit-identical to the scalar path (and to the GPU); the vectors run
// eight of those sums side by side:
//   - encode: eight coefficients a vector (the basis row i, B[i][j..j+7], is
//     contiguous), two rows of one head at a time sharing each basis load; a
//     row with a non-finite value is left to the scalar codec (which skips
//     and counts it), as is a row whose sums are not all numbers.
//   - decode: eight values of the row a vector, over the basis transposed
//     once per call (transpose_basis), since B[i..i+7][j] is strided.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#include "kvcache/codec/quant_math.hpp"
#include "kvcache/detail/cpu/int8_simd.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu::simd {

// The vector paths take a rank that is a multiple of 8 and a head_dim that is
// a multiple of 8, at most 1024 (the CPU kernels' row buffers).
template <std::int32_t R>
inline constexpr bool kLowRankVector = R % 8 == 0;

inline bool low_rank_vector_dim(std::int32_t head_dim) {
  return head_dim % 8 == 0 && head_dim <= 1024;
}

// The basis [head_dim][R] as [R][head_dim].
template <std::int32_t R>
void transpose_basis(const float* basis, std::int32_t head_dim, float* out) {
  for (std::int32_t i = 0; i < head_dim; ++i) {
    for (std::int32_t j = 0; j < R; ++j)
      out[std::int64_t{j} * head_dim + i] = basis[std::int64_t{i} * R + j];
  }
}

#if KVCACHE_INT8_SIMD

// `count` fp16 values as floats; false if one of them is Inf or NaN.
__attribute__((target("avx2,f16c"))) inline bool finite_halves_to_floats(const std::uint16_t* in,
                                                                         std::int32_t count,
                                                                         float* out) {
  const __m128i exponent = _mm_set1_epi16(0x7c00);
  __m128i bad = _mm_setzero_si128();
  for (std::int32_t i = 0; i < count; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  return _mm_testz_si128(bad, bad) != 0;
}

// Coefficients j0 .. j0 + 8 x Blocks - 1 of N (1 or 2) rows (as floats, all
// finite): each sum over i in order, sum + x_i x B[i][j]. The blocks are
// unrolled by fold expressions so the sums stay in registers.
template <std::int32_t R, std::int32_t N, std::size_t... Block>
__attribute__((target("avx2,f16c"))) inline void low_rank_sums(const float* const* rows,
                                                               std::int32_t head_dim,
                                                               const float* basis, std::int32_t j0,
                                                               __m256 (&first)[sizeof...(Block)],
                                                               __m256 (&second)[sizeof...(Block)],
                                                               std::index_sequence<Block...>) {
  ((first[Block] = _mm256_setzero_ps()), ...);
  ((second[Block] = _mm256_setzero_ps()), ...);
  for (std::int32_t i = 0; i < head_dim; ++i) {
    const float* row_of_basis = basis + std::int64_t{i} * R + j0;
    const __m256 column[] = {_mm256_loadu_ps(row_of_basis + 8 * Block)...};
    const __m256 x = _mm256_broadcast_ss(rows[0] + i);
    ((first[Block] = _mm256_add_ps(first[Block], _mm256_mul_ps(x, column[Block]))), ...);
    if constexpr (N == 2) {
      const __m256 y = _mm256_broadcast_ss(rows[1] + i);
      ((second[Block] = _mm256_add_ps(second[Block], _mm256_mul_ps(y, column[Block]))), ...);
    }
  }
}

// Stores eight coefficients as codec::store_scale does (clamped to the
// storage's finite range, then fp16 or fp32); false if one is NaN.
template <std::int32_t C>
__attribute__((target("avx2,f16c"))) inline bool store_coefficients(__m256 sum,
                                                                    std::uint8_t* codes) {
  if (_mm256_movemask_ps(_mm256_cmp_ps(sum, sum, _CMP_UNORD_Q)) != 0) return false;
  const __m256 bound = _mm256_set1_ps(codec::storage_max(C));
  const __m256 clamped =
      _mm256_min_ps(_mm256_max_ps(sum, _mm256_sub_ps(_mm256_setzero_ps(), bound)), bound);
  if constexpr (C == 2) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes),
                     _mm256_cvtps_ph(clamped, _MM_FROUND_TO_NEAREST_INT));
  } else {
    _mm256_storeu_ps(reinterpret_cast<float*>(codes), clamped);
  }
  return true;
}

// Coefficients j0 .. j0 + 8 x Blocks - 1 of N rows, stored; written[n] turns
// false where row n's sums were not all numbers.
template <std::int32_t R, std::int32_t C, std::int32_t N, std::int32_t Blocks>
__attribute__((target("avx2,f16c"))) inline void low_rank_chunk(const float* const* rows,
                                                                std::int32_t head_dim,
                                                                const float* basis, std::int32_t j0,
                                                                std::uint8_t* const* codes,
                                                                bool* written) {
  __m256 sums[2][Blocks];
  low_rank_sums<R, N>(rows, head_dim, basis, j0, sums[0], sums[1],
                      std::make_index_sequence<Blocks>());
  for (std::int32_t n = 0; n < N; ++n) {
    for (std::int32_t b = 0; b < Blocks; ++b)
      written[n] = store_coefficients<C>(sums[n][b], codes[n] + (j0 + 8 * b) * C) && written[n];
  }
}

// Encodes N rows (fp16, all finite) of one head into their R coefficients of
// C bytes. Returns, per row, whether it was written (a NaN sum is not: the
// caller re-encodes that row with the scalar codec).
template <std::int32_t R, std::int32_t C, std::int32_t N>
__attribute__((target("avx2,f16c"))) inline void low_rank_encode_rows(const float* const* rows,
                                                                      std::int32_t head_dim,
                                                                      const float* basis,
                                                                      std::uint8_t* const* codes,
                                                                      bool* written) {
  static_assert(kLowRankVector<R>);
  for (std::int32_t n = 0; n < N; ++n)
    written[n] = true;
  // 32 coefficients (four vectors per row) at a time, then the rest.
  constexpr std::int32_t kWhole = R / 32 * 32;
  for (std::int32_t j0 = 0; j0 < kWhole; j0 += 32)
    low_rank_chunk<R, C, N, 4>(rows, head_dim, basis, j0, codes, written);
  if constexpr (R % 32 != 0)
    low_rank_chunk<R, C, N, (R % 32) / 8>(rows, head_dim, basis, kWhole, codes, written);
}

// The R coefficients of a row as floats (codec::load_scale of each).
template <std::int32_t R, std::int32_t C>
__attribute__((target("avx2,f16c"))) inline void load_coefficients(const std::uint8_t* codes,
                                                                   float* out) {
  if constexpr (C == 2) {
    for (std::int32_t j = 0; j < R; j += 8) {
      _mm256_storeu_ps(
          out + j,
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 2 * j))));
    }
  } else {
    std::memcpy(out, codes, sizeof(float) * R);
  }
}

// Values i0 .. i0 + 8 x Blocks - 1 of a decoded row: each the sum over j in
// order of c_j x B[i][j], read from the transposed basis (the blocks unrolled
// by fold expressions, the sums in registers).
template <std::int32_t R, std::size_t... Block>
__attribute__((target("avx2,f16c"))) inline void low_rank_values(const float* coefficients,
                                                                 const float* basis_t,
                                                                 std::int32_t head_dim,
                                                                 std::int32_t i0, float* out,
                                                                 std::index_sequence<Block...>) {
  __m256 sums[sizeof...(Block)];
  ((sums[Block] = _mm256_setzero_ps()), ...);
  for (std::int32_t j = 0; j < R; ++j) {
    const __m256 c = _mm256_broadcast_ss(coefficients + j);
    const float* column = basis_t + std::int64_t{j} * head_dim + i0;
    ((sums[Block] =
          _mm256_add_ps(sums[Block], _mm256_mul_ps(c, _mm256_loadu_ps(column + 8 * Block)))),
     ...);
  }
  (_mm256_storeu_ps(out + i0 + 8 * Block, sums[Block]), ...);
}

// Decodes one row's coefficients to `head_dim` floats (a multiple of 8).
template <std::int32_t R, std::int32_t C>
__attribute__((target("avx2,f16c"))) inline void low_rank_decode_f32(const std::uint8_t* codes,
                                                                     const float* basis_t,
                                                                     std::int32_t head_dim,
                                                                     float* out) {
  static_assert(kLowRankVector<R>);
  alignas(32) float coefficients[R];
  load_coefficients<R, C>(codes, coefficients);
  std::int32_t i0 = 0;
  for (; i0 + 64 <= head_dim; i0 += 64)
    low_rank_values<R>(coefficients, basis_t, head_dim, i0, out, std::make_index_sequence<8>());
  for (; i0 < head_dim; i0 += 8)
    low_rank_values<R>(coefficients, basis_t, head_dim, i0, out, std::make_index_sequence<1>());
}

#endif

}  // namespace kvcache::detail::cpu::simd
KVCACHE_EXACT_FP_END
