// KiviRows<B, G, S>: the row and channel math of KiviCodec (codec/kivi/codec.hpp),
// host-device code shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

namespace kvcache {

template <std::int32_t B, std::int32_t G, std::int32_t S>
struct KiviRows {
  static constexpr std::int32_t kBits = B;
  static constexpr std::int32_t kGroup = G;
  static constexpr std::int32_t kScaleBytes = S;
  static constexpr bool kLaneCodec = true;  // value rows

  // Value rows: codes, then (scale, zero) per group of G channels.
  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim} * B / 8;
  }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim / G} * 2 * S;
  }
  KVCACHE_HD static constexpr std::int64_t state_floats(std::int32_t) { return 0; }

  template <class Load>
  KVCACHE_HD static std::int32_t encode(std::int32_t head_dim, Load load, std::uint8_t* codes,
                                        std::uint8_t* scales, const float*) {
    std::int32_t nonfinite = 0;
    for (std::int32_t g = 0; g * G < head_dim; ++g) {
      std::uint8_t* scale = scales + g * 2 * S;
      nonfinite += codec::asymmetric_encode([&](std::int32_t i) { return load(g * G + i); }, G, B,
                                            codes, g * G, scale, scale + S, S);
    }
    return nonfinite;
  }
  template <class Store>
  KVCACHE_HD static void decode(std::int32_t head_dim, const std::uint8_t* codes,
                                const std::uint8_t* scales, const float*, Store store) {
    for (std::int32_t g = 0; g * G < head_dim; ++g) {
      const float step = codec::load_scale(scales + g * 2 * S, S);
      const float zero = codec::load_scale(scales + g * 2 * S + S, S);
      for (std::int32_t i = g * G; i < (g + 1) * G; ++i)
        store(i, codec::asymmetric_decode(codec::get_code(codes, i, B), step, zero));
    }
  }

  // One lane of a value row (values [lane x N, lane x N + N)); a group
  // spread over several lanes takes its range from the lanes' partials,
  // combined by the kernel (see Int8Rows). Codes are written a whole byte at
  // a time, built in a register: no lane touches another lane's bytes.
  template <std::int32_t N>
  static constexpr bool kGroupSpansLanes = G > N;
  using Partial = codec::MinMax;
  template <std::int32_t N>
  KVCACHE_HD static Partial lane_partial(const float (&x)[N]) {
    codec::MinMax range;
    for (std::int32_t i = 0; i < N; ++i)
      range.add(x[i]);
    return range;
  }
  KVCACHE_HD static Partial combine(Partial a, const Partial& b) {
    a.merge(b);
    return a;
  }

  template <std::int32_t N>
  KVCACHE_HD static std::int32_t encode_lane(std::int32_t lane, const float (&x)[N],
                                             const Partial& group, std::uint8_t* codes,
                                             std::uint8_t* scales, const float*) {
    static_assert(N % G == 0 || G % N == 0, "a lane holds whole groups or a part of one");
    static_assert((N * B) % 8 == 0, "a lane's codes are whole bytes");
    std::int32_t nonfinite = 0;
    for (std::int32_t i = 0; i < N; ++i)
      nonfinite += codec::is_finite(x[i]) ? 0 : 1;
    constexpr std::int32_t kGroupsInLane = G >= N ? 1 : N / G;
    constexpr std::int32_t kValues = G >= N ? N : G;
    for (std::int32_t g = 0; g < kGroupsInLane; ++g) {
      codec::MinMax range = group;
      if constexpr (!kGroupSpansLanes<N>) {
        range = codec::MinMax();
        for (std::int32_t i = 0; i < kValues; ++i)
          range.add(x[g * kValues + i]);
      }
      const codec::AsymmetricScale s = codec::asymmetric_scale(range, B, S);
      const std::int32_t first = lane * N + g * kValues;
      if (first % G == 0) {
        codec::store_scale(scales + first / G * 2 * S, s.scale, S);
        codec::store_scale(scales + first / G * 2 * S + S, s.zero, S);
      }
      for (std::int32_t i = 0; i < kValues; i += 8 / B) {
        std::uint32_t byte = 0;
        for (std::int32_t j = 0; j < 8 / B; ++j)
          byte |= codec::asymmetric_code(x[g * kValues + i + j], s, B) << (j * B);
        codes[(first + i) * B / 8] = static_cast<std::uint8_t>(byte);
      }
    }
    return nonfinite;
  }
  template <std::int32_t N>
  KVCACHE_HD static void decode_lane(std::int32_t lane, const std::uint8_t* codes,
                                     const std::uint8_t* scales, const float*, float (&out)[N]) {
    for (std::int32_t i = 0; i < N; ++i) {
      const std::int32_t index = lane * N + i;
      const std::uint8_t* scale = scales + index / G * 2 * S;
      out[i] =
          codec::asymmetric_decode(codec::get_code(codes, index, B), codec::load_scale(scale, S),
                                   codec::load_scale(scale + S, S));
    }
  }

  // Keys: channel `channel` of one head over a page of G tokens (load(t));
  // codes go to the channel's packed run, scale and zero beside it.
  KVCACHE_HD static std::uint8_t* key_codes(const CodecPageView& view, std::uint8_t* region,
                                            std::int32_t head, std::int32_t channel) {
    return region + head * view.region[0].code_head_bytes + std::int64_t{channel} * G * B / 8;
  }
  KVCACHE_HD static std::uint8_t* key_scale(const CodecPageView& view, std::uint8_t* region,
                                            std::int32_t head, std::int32_t channel) {
    const RegionLayout& r = view.region[0];
    return region + r.scales_offset + head * r.scale_head_bytes + channel * 2 * S;
  }
  template <class Load>
  KVCACHE_HD static std::int32_t encode_key_channel(const CodecPageView& view, Load load,
                                                    std::uint8_t* region, std::int32_t head,
                                                    std::int32_t channel) {
    std::uint8_t* scale = key_scale(view, region, head, channel);
    return codec::asymmetric_encode(load, G, B, key_codes(view, region, head, channel), 0, scale,
                                    scale + S, S);
  }
  KVCACHE_HD static float decode_key(const CodecPageView& view, const std::uint8_t* region,
                                     std::int32_t head, std::int32_t channel, std::int32_t token) {
    auto* base = const_cast<std::uint8_t*>(region);
    const std::uint8_t* scale = key_scale(view, base, head, channel);
    return codec::asymmetric_decode(codec::get_code(key_codes(view, base, head, channel), token, B),
                                    codec::load_scale(scale, S), codec::load_scale(scale + S, S));
  }
};

}  // namespace kvcache
