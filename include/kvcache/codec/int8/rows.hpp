// Int8Rows<G, S>: the row math of Int8Codec (codec/int8/codec.hpp), host-device
// code shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

namespace kvcache {

template <std::int32_t G, std::int32_t S>
struct Int8Rows {
  static constexpr std::int32_t kGroup = G;
  static constexpr std::int32_t kScaleBytes = S;
  static constexpr bool kLaneCodec = true;  // the CUDA kernels split a row into lanes

  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t head_dim) { return head_dim; }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim / G} * S;
  }
  KVCACHE_HD static constexpr std::int64_t state_floats(std::int32_t) { return 0; }

  // Encodes a row of head_dim values read through load(i); returns the
  // non-finite inputs met.
  template <class Load>
  KVCACHE_HD static std::int32_t encode(std::int32_t head_dim, Load load, std::uint8_t* codes,
                                        std::uint8_t* scales, const float*) {
    std::int32_t nonfinite = 0;
    for (std::int32_t g = 0; g * G < head_dim; ++g) {
      nonfinite +=
          codec::int8_encode([&](std::int32_t i) { return load(g * G + i); }, G,
                             reinterpret_cast<std::int8_t*>(codes) + g * G, scales + g * S, S);
    }
    return nonfinite;
  }

  // Decodes a row, handing value i to store(i, value).
  template <class Store>
  KVCACHE_HD static void decode(std::int32_t head_dim, const std::uint8_t* codes,
                                const std::uint8_t* scales, const float*, Store store) {
    for (std::int32_t g = 0; g * G < head_dim; ++g) {
      const float scale = codec::load_scale(scales + g * S, S);
      for (std::int32_t i = g * G; i < (g + 1) * G; ++i)
        store(i, codec::int8_decode(static_cast<std::int8_t>(codes[i]), scale));
    }
  }

  // One lane of a row: values [lane x N, lane x N + N) (the CUDA kernels'
  // split of a row over threads). When a group spans several lanes
  // (kGroupSpansLanes), the kernel combines the lanes' lane_partial() over the
  // group and hands the result to encode_lane; the group's first lane stores
  // the scale. The codes and scales equal encode()'s bit for bit.
  template <std::int32_t N>
  static constexpr bool kGroupSpansLanes = G > N;
  using Partial = float;  // the largest finite magnitude
  template <std::int32_t N>
  KVCACHE_HD static Partial lane_partial(const float (&x)[N]) {
    float amax = 0.0f;
    for (std::int32_t i = 0; i < N; ++i) {
      const float magnitude = codec::finite_magnitude(x[i]);
      amax = magnitude > amax ? magnitude : amax;
    }
    return amax;
  }
  KVCACHE_HD static Partial combine(Partial a, Partial b) { return a > b ? a : b; }

  template <std::int32_t N>
  KVCACHE_HD static std::int32_t encode_lane(std::int32_t lane, const float (&x)[N], Partial group,
                                             std::uint8_t* codes, std::uint8_t* scales,
                                             const float*) {
    static_assert(N % G == 0 || G % N == 0, "a lane holds whole groups or a part of one");
    std::int32_t nonfinite = 0;
    for (std::int32_t i = 0; i < N; ++i)
      nonfinite += codec::is_finite(x[i]) ? 0 : 1;
    constexpr std::int32_t kGroupsInLane = G >= N ? 1 : N / G;
    constexpr std::int32_t kValues = G >= N ? N : G;
    for (std::int32_t g = 0; g < kGroupsInLane; ++g) {
      float amax = group;
      if constexpr (!kGroupSpansLanes<N>) {
        amax = 0.0f;
        for (std::int32_t i = 0; i < kValues; ++i) {
          const float magnitude = codec::finite_magnitude(x[g * kValues + i]);
          amax = magnitude > amax ? magnitude : amax;
        }
      }
      const float scale = codec::int8_scale(amax, S);
      const std::int32_t first = lane * N + g * kValues;
      if (first % G == 0) codec::store_scale(scales + first / G * S, scale, S);
      const float inverse = codec::inverse_of(scale);
      for (std::int32_t i = 0; i < kValues; ++i)
        codes[first + i] = static_cast<std::uint8_t>(codec::int8_code(x[g * kValues + i], inverse));
    }
    return nonfinite;
  }

  template <std::int32_t N>
  KVCACHE_HD static void decode_lane(std::int32_t lane, const std::uint8_t* codes,
                                     const std::uint8_t* scales, const float*, float (&out)[N]) {
    for (std::int32_t i = 0; i < N; ++i) {
      const std::int32_t index = lane * N + i;
      out[i] = codec::int8_decode(static_cast<std::int8_t>(codes[index]),
                                  codec::load_scale(scales + index / G * S, S));
    }
  }
};

}  // namespace kvcache
