// KiviRows<B, G, S>: the row and channel math of KiviCodec (codec/kivi/codec.hpp),
// host-device code shared by the CPU and CUDA kernels: values per token in
// groups of G channels (codec/grouped_rows.hpp), keys per channel over a page
// of G tokens.
#pragma once

#include <cstdint>

#include "kvcache/codec/grouped_rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache {

template <std::int32_t B, std::int32_t G, std::int32_t S>
struct KiviRows : codec::GroupedRows<KiviRows<B, G, S>, G> {
  static_assert(G * B % 8 == 0, "a group's codes fill whole bytes");
  static constexpr std::int32_t kBits = B;
  static constexpr std::int32_t kScaleBytes = S;
  static constexpr std::int32_t kGroupScaleBytes = 2 * S;  // scale, zero point

  // Value rows: codes, then (scale, zero) per group of G channels.
  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim} * B / 8;
  }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t head_dim) {
    return std::int64_t{head_dim / G} * 2 * S;
  }

  using Partial = codec::MinMax;
  KVCACHE_HD static Partial stat(const float* x, std::int32_t count) {
    codec::MinMax range;
    for (std::int32_t i = 0; i < count; ++i)
      range.add(x[i]);
    return range;
  }
  KVCACHE_HD static Partial combine(Partial a, const Partial& b) {
    a.merge(b);
    return a;
  }

  // Codes are written a whole byte at a time, built in a register: no lane
  // touches another lane's bytes.
  KVCACHE_HD static void encode_part(const float* x, std::int32_t count, const Partial& range,
                                     std::uint8_t* codes, std::int32_t first,
                                     std::uint8_t* scale_at) {
    static_assert(8 % B == 0, "codes pack whole into bytes");
    const codec::AsymmetricScale s = codec::asymmetric_scale(range, B, S);
    if (scale_at != nullptr) {
      codec::store_scale(scale_at, s.scale, S);
      codec::store_scale(scale_at + S, s.zero, S);
    }
    for (std::int32_t i = 0; i < count; i += 8 / B) {
      std::uint32_t byte = 0;
      for (std::int32_t j = 0; j < 8 / B; ++j)
        byte |= codec::asymmetric_code(x[i + j], s, B) << (j * B);
      codes[(first + i) * B / 8] = static_cast<std::uint8_t>(byte);
    }
  }
  struct GroupScale {
    float step;
    float zero;
  };
  KVCACHE_HD static GroupScale group_scale(const std::uint8_t* scale_at) {
    return {codec::load_scale(scale_at, S), codec::load_scale(scale_at + S, S)};
  }
  KVCACHE_HD static float decode_value(const std::uint8_t* codes, std::int32_t index,
                                       const GroupScale& s) {
    return codec::asymmetric_decode(codec::get_code(codes, index, B), s.step, s.zero);
  }

  // Keys: channel `channel` of one head over a page of G tokens (load(t));
  // codes go to the channel's packed run (kChannelCodeBytes, one access),
  // scale and zero beside it (one access).
  static constexpr std::int32_t kChannelCodeBytes = G * B / 8;
  KVCACHE_HD static std::uint8_t* key_codes(const CodecPageView& view, std::uint8_t* region,
                                            std::int32_t head, std::int32_t channel) {
    return region + head * view.region[0].code_head_bytes + std::int64_t{channel} * G * B / 8;
  }
  KVCACHE_HD static std::uint8_t* key_scale(const CodecPageView& view, std::uint8_t* region,
                                            std::int32_t head, std::int32_t channel) {
    const RegionLayout& r = view.region[0];
    return region + r.scales_offset + head * r.scale_head_bytes + channel * 2 * S;
  }
  // Two passes over the channel (load(t) is called twice per token): its
  // range, then its codes built in registers; no array of G values is held.
  // The codes and scales are encode_part's, bit for bit.
  template <class Load>
  KVCACHE_HD static std::int32_t encode_key_channel(const CodecPageView& view, Load load,
                                                    std::uint8_t* region, std::int32_t head,
                                                    std::int32_t channel) {
    codec::MinMax range;
    std::int32_t nonfinite = 0;
    for (std::int32_t t = 0; t < G; ++t) {
      const float x = load(t);
      range.add(x);
      nonfinite += codec::is_finite(x) ? 0 : 1;
    }
    const codec::AsymmetricScale s = codec::asymmetric_scale(range, B, S);
    codec::LaneBytes<kChannelCodeBytes> codes;  // unrolled: its words stay in registers
    KVCACHE_UNROLL
    for (std::int32_t t = 0; t < G; t += 8 / B) {
      std::uint32_t byte = 0;
      KVCACHE_UNROLL
      for (std::int32_t j = 0; j < 8 / B; ++j)
        byte |= codec::asymmetric_code(load(t + j), s, B) << (j * B);
      codes.set(t * B / 8, byte);
    }
    codes.store(key_codes(view, region, head, channel));
    std::uint8_t scale_zero[2 * S];
    codec::store_scale(scale_zero, s.scale, S);
    codec::store_scale(scale_zero + S, s.zero, S);
    codec::LaneBytes<2 * S>::of(scale_zero).store(key_scale(view, region, head, channel));
    return nonfinite;
  }
  KVCACHE_HD static float decode_key(const CodecPageView& view, const std::uint8_t* region,
                                     std::int32_t head, std::int32_t channel, std::int32_t token) {
    auto* base = const_cast<std::uint8_t*>(region);
    return decode_value(key_codes(view, base, head, channel), token,
                        group_scale(key_scale(view, base, head, channel)));
  }
  // The whole channel (G tokens, store(t, value)): its codes and its scale
  // and zero are read once, one access each.
  template <class Store>
  KVCACHE_HD static void decode_key_channel(const CodecPageView& view, const std::uint8_t* region,
                                            std::int32_t head, std::int32_t channel, Store store) {
    auto* base = const_cast<std::uint8_t*>(region);
    const auto codes =
        codec::LaneBytes<kChannelCodeBytes>::load(key_codes(view, base, head, channel));
    std::uint8_t scale_zero[2 * S];
    codec::LaneBytes<2 * S>::load(key_scale(view, base, head, channel)).to(scale_zero);
    const GroupScale s = group_scale(scale_zero);
    constexpr std::uint32_t kMask = (1u << B) - 1u;
    KVCACHE_UNROLL
    for (std::int32_t t = 0; t < G; ++t) {
      const std::uint32_t code = (codes.get(t * B / 8) >> ((t % (8 / B)) * B)) & kMask;
      store(t, codec::asymmetric_decode(code, s.step, s.zero));
    }
  }
};

}  // namespace kvcache
KVCACHE_EXACT_FP_END
