// The row math of codecs that quantize a row in groups of G values, each
// group with its own scale bytes (int8: one symmetric scale; KIVI values: a
// scale and a zero point). GroupedRows<Codec, G> walks the groups of a whole
// row (encode / decode, the CPU kernels) or of one lane (encode_lane /
// decode_lane, the CUDA kernels' split of a row over threads: values [lane x
// N, lane x N + N)); Codec supplies the group's own math:
//
//   kGroupScaleBytes                           scale bytes of one group
//   Partial stat(const float* x, count)        the statistic of some of a group's values
//   Partial combine(Partial, Partial)          of the union of two parts
//   int32 encode_part(x, count, Partial group, codes, first, scale_at)
//                                              codes of values [first, first + count) of a
//                                              row; scale_at non-null for the group's first part
//   GroupScale group_scale(scale_at)          a group's scale bytes, read once
//   float decode_value(codes, index, GroupScale)
//
// When a group spans several lanes (kGroupSpansLanes<N>), the kernel combines
// the lanes' lane_partial() over the group and hands the result to
// encode_lane; the group's first lane stores the scale. Lane and row paths
// therefore write the same codes and scales, bit for bit (tested).
#pragma once

#include <cstdint>

#include "kvcache/codec/lane_bytes.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::codec {

template <class Codec, std::int32_t G>
struct GroupedRows {
  static constexpr std::int32_t kGroup = G;
  static constexpr bool kLaneCodec = true;
  KVCACHE_HD static constexpr std::int64_t state_floats(std::int32_t) { return 0; }

  // Encodes a row of head_dim values read through load(i); returns the
  // non-finite inputs met.
  template <class Load>
  KVCACHE_HD static std::int32_t encode(std::int32_t head_dim, Load load, std::uint8_t* codes,
                                        std::uint8_t* scales, const float*) {
    std::int32_t nonfinite = 0;
    float x[G];
    for (std::int32_t g = 0; g * G < head_dim; ++g) {
      for (std::int32_t i = 0; i < G; ++i) {
        x[i] = load(g * G + i);
        nonfinite += is_finite(x[i]) ? 0 : 1;
      }
      Codec::encode_part(x, G, Codec::stat(x, G), codes, g * G,
                         scales + g * Codec::kGroupScaleBytes);
    }
    return nonfinite;
  }

  // Decodes a row, handing value i to store(i, value).
  template <class Store>
  KVCACHE_HD static void decode(std::int32_t head_dim, const std::uint8_t* codes,
                                const std::uint8_t* scales, const float*, Store store) {
    for (std::int32_t g = 0; g < head_dim / G; ++g) {
      const auto scale = Codec::group_scale(scales + g * Codec::kGroupScaleBytes);
      for (std::int32_t i = g * G; i < (g + 1) * G; ++i)
        store(i, Codec::decode_value(codes, i, scale));
    }
  }

  template <std::int32_t N>
  static constexpr bool kGroupSpansLanes = G > N;

  template <std::int32_t N>
  KVCACHE_HD static auto lane_partial(const float (&x)[N]) {
    return Codec::stat(x, N);
  }

  // What one lane of N values moves, each as a single access
  // (codec/lane_bytes.hpp): its codes, and the scale bytes of the groups it
  // holds (G < N: N / G groups) or of the group it is part of (G >= N; only
  // the group's first lane writes them, every lane of it reads them).
  template <std::int32_t N>
  static constexpr std::int32_t kLaneCodeBytes = N* Codec::kBits / 8;
  template <std::int32_t N>
  static constexpr std::int32_t kLaneScaleBytes = (G >= N ? 1 : N / G) * Codec::kGroupScaleBytes;
  template <std::int32_t N>
  KVCACHE_HD static std::int64_t lane_scale_offset(std::int32_t lane) {
    return std::int64_t{lane} * N / G * Codec::kGroupScaleBytes;
  }

  template <std::int32_t N, class Partial>
  KVCACHE_HD static std::int32_t encode_lane(std::int32_t lane, const float (&x)[N],
                                             const Partial& group, std::uint8_t* codes,
                                             std::uint8_t* scales, const float*) {
    static_assert(N % G == 0 || G % N == 0, "a lane holds whole groups or a part of one");
    std::int32_t nonfinite = 0;
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < N; ++i)
      nonfinite += is_finite(x[i]) ? 0 : 1;
    constexpr std::int32_t kParts = G >= N ? 1 : N / G;
    constexpr std::int32_t kValues = G >= N ? N : G;
    // Codes and scales are built in registers, then stored once each.
    std::uint8_t lane_codes[kLaneCodeBytes<N>];
    std::uint8_t lane_scales[kLaneScaleBytes<N>];
    const bool writes_scales = (lane * N) % G == 0;
    KVCACHE_UNROLL
    for (std::int32_t part = 0; part < kParts; ++part) {
      const float* values = x + part * kValues;
      const std::int32_t first = part * kValues;  // in the lane
      std::uint8_t* scale_at = lane_scales + first / G * Codec::kGroupScaleBytes;
      if constexpr (kGroupSpansLanes<N>) {
        Codec::encode_part(values, kValues, group, lane_codes, first, scale_at);
      } else {
        Codec::encode_part(values, kValues, Codec::stat(values, kValues), lane_codes, first,
                           scale_at);
      }
    }
    LaneBytes<kLaneCodeBytes<N>>::of(lane_codes).store(codes + lane * kLaneCodeBytes<N>);
    if (writes_scales)
      LaneBytes<kLaneScaleBytes<N>>::of(lane_scales).store(scales + lane_scale_offset<N>(lane));
    return nonfinite;
  }

  template <std::int32_t N>
  KVCACHE_HD static void decode_lane(std::int32_t lane, const std::uint8_t* codes,
                                     const std::uint8_t* scales, const float*, float (&out)[N]) {
    std::uint8_t lane_codes[kLaneCodeBytes<N>];
    std::uint8_t lane_scales[kLaneScaleBytes<N>];
    LaneBytes<kLaneCodeBytes<N>>::load(codes + lane * kLaneCodeBytes<N>).to(lane_codes);
    LaneBytes<kLaneScaleBytes<N>>::load(scales + lane_scale_offset<N>(lane)).to(lane_scales);
    auto scale = Codec::group_scale(lane_scales);
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < N; ++i) {
      if (i > 0 && i % G == 0)
        scale = Codec::group_scale(lane_scales + i / G * Codec::kGroupScaleBytes);
      out[i] = Codec::decode_value(lane_codes, i, scale);
    }
  }
};

}  // namespace kvcache::codec
KVCACHE_EXACT_FP_END
