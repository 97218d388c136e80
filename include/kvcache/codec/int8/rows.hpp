// Int8Rows<G, S>: the row math of Int8Codec (codec/int8/codec.hpp), host-device
// code shared by the CPU and CUDA kernels: groups of G values along head_dim,
// each with an S-byte symmetric scale (see codec/grouped_rows.hpp).
//
//   code = round_half_even(clamp(x / s, -127, 127)),  s = amax / 127 (stored as S bytes)
#pragma once

#include <cstdint>

#include "kvcache/codec/grouped_rows.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache {

template <std::int32_t G, std::int32_t S>
struct Int8Rows : codec::GroupedRows<Int8Rows<G, S>, G> {
  static constexpr std::int32_t kBits = 8;
  static constexpr std::int32_t kScaleBytes = S;
  static constexpr std::int32_t kGroupScaleBytes = S;

  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t head_dim) { return head_dim; }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim / G} * S;
  }

  using Partial = float;  // the largest finite magnitude
  KVCACHE_HD static Partial stat(const float* x, std::int32_t count) {
    float amax = 0.0f;
    for (std::int32_t i = 0; i < count; ++i) {
      const float magnitude = codec::finite_magnitude(x[i]);
      amax = magnitude > amax ? magnitude : amax;
    }
    return amax;
  }
  KVCACHE_HD static Partial combine(Partial a, Partial b) { return a > b ? a : b; }

  KVCACHE_HD static void encode_part(const float* x, std::int32_t count, Partial amax,
                                     std::uint8_t* codes, std::int32_t first,
                                     std::uint8_t* scale_at) {
    const float scale = codec::int8_scale(amax, S);
    if (scale_at != nullptr) codec::store_scale(scale_at, scale, S);
    const float inverse = codec::inverse_of(scale);
    for (std::int32_t i = 0; i < count; ++i)
      codes[first + i] = static_cast<std::uint8_t>(codec::int8_code(x[i], inverse));
  }
  using GroupScale = float;
  KVCACHE_HD static GroupScale group_scale(const std::uint8_t* scale_at) {
    return codec::load_scale(scale_at, S);
  }
  KVCACHE_HD static float decode_value(const std::uint8_t* codes, std::int32_t index,
                                       GroupScale scale) {
    return codec::int8_decode(static_cast<std::int8_t>(codes[index]), scale);
  }
};

}  // namespace kvcache
KVCACHE_EXACT_FP_END
