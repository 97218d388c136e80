// LowRankRows<R, C>: the row math of LowRankCodec (codec/low_rank/codec.hpp),
// host-device code shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache {

template <std::int32_t R, std::int32_t C>
struct LowRankRows {
  static constexpr std::int32_t kRank = R;
  static constexpr std::int32_t kCoefficientBytes = C;
  static constexpr bool kLaneCodec = false;  // a coefficient reads the whole row

  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t) { return std::int64_t{R} * C; }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t) { return 0; }
  KVCACHE_HD static constexpr std::int64_t state_floats(std::int32_t head_dim) {
    return std::int64_t{head_dim} * R;  // the basis [head_dim][rank]
  }

  // Coefficient j of a row (non-finite values count as 0).
  template <class Load>
  KVCACHE_HD static float coefficient(std::int32_t head_dim, Load load, const float* basis,
                                      std::int32_t j) {
    float sum = 0.0f;
    for (std::int32_t i = 0; i < head_dim; ++i) {
      const float value = load(i);
      if (codec::is_finite(value))
        sum = codec::add_exact(sum, codec::mul_exact(value, basis[i * R + j]));
    }
    return sum;
  }
  // Value i of a decoded row from its stored coefficients.
  KVCACHE_HD static float value(const std::uint8_t* codes, const float* basis, std::int32_t i) {
    float sum = 0.0f;
    for (std::int32_t j = 0; j < R; ++j) {
      sum = codec::add_exact(
          sum, codec::mul_exact(codec::load_scale(codes + j * C, C), basis[i * R + j]));
    }
    return sum;
  }

  template <class Load>
  KVCACHE_HD static std::int32_t encode(std::int32_t head_dim, Load load, std::uint8_t* codes,
                                        std::uint8_t*, const float* basis) {
    for (std::int32_t j = 0; j < R; ++j)
      codec::store_scale(codes + j * C, coefficient(head_dim, load, basis, j), C);
    std::int32_t nonfinite = 0;
    for (std::int32_t i = 0; i < head_dim; ++i)
      nonfinite += codec::is_finite(load(i)) ? 0 : 1;
    return nonfinite;
  }
  template <class Store>
  KVCACHE_HD static void decode(std::int32_t head_dim, const std::uint8_t* codes,
                                const std::uint8_t*, const float* basis, Store store) {
    for (std::int32_t i = 0; i < head_dim; ++i)
      store(i, value(codes, basis, i));
  }
};

}  // namespace kvcache
KVCACHE_EXACT_FP_END
