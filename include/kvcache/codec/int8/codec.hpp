// Int8Codec<G, S>: symmetric int8 with one scale per G values along head_dim
// (per token and head), S-byte scales (2: fp16, 4: fp32) stored in the page.
// G == head_dim gives one scale per (token, head).
//
//   code = round_half_even(clamp(x / s, -127, 127)),  s = amax / 127 (stored as S bytes)
//
// The row math (Int8Rows) is host-device code shared by the CPU and CUDA
// kernels, which therefore write the same codes and scales bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "kvcache/codec/int8/rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/codec/storage.hpp"
#include "kvcache/codec/token_codec.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

template <std::int32_t Group = 32, std::int32_t ScaleBytes = 2>
struct Int8Codec : codec::TokenCodec<Int8Rows<Group, ScaleBytes>> {
  static_assert(ScaleBytes == 2 || ScaleBytes == 4, "scales are fp16 (2) or fp32 (4)");
  static_assert(Group >= 1, "a group holds at least one value");
  static_assert(codec::lane_compatible(Group), "the group is 1, 2, 4 or a multiple of 8");
  static constexpr CodecKind kKind = CodecKind::kInt8;
  template <class Backend>
  using Calibration = codec::NoCalibration<Backend>;
  template <class Backend>
  using Storage = codec::TokenCodecStorage<Int8Codec, Backend>;

  static std::string name() {
    return fmt::format("int8-g{}{}", Group, ScaleBytes == 4 ? "-f32" : "");
  }

  static void validate(const CacheConfig& config) {
    codec::require_nhd(config.layout, name());
    if (config.shape.head_dim % Group != 0) {
      detail::raise<InvalidArgument>("{}: group size {} does not divide head_dim {}", name(), Group,
                                     config.shape.head_dim);
    }
  }
};

}  // namespace kvcache
