// The bytes one thread of a codec kernel writes or reads as a single access:
// a lane's codes (8 int8 codes of 8 fp16 values: 8 bytes; 4 int4 codes: 2
// bytes), the scales of the groups it holds, a KIVI key channel's packed
// codes. They are built in registers (set) and stored with one 1-, 2-, 4-, 8-
// or 16-byte access on the device, or loaded with one and read back (get).
// The address must be aligned to the width: the codecs' page layouts make
// every stride a multiple of it, and the launch checks refuse a view that
// does not. On the host the same words go through memcpy, so the CPU tests
// run the packing the device runs. Little-endian, as the pages are.
#pragma once

#include <cstdint>
#include <cstring>

#include "kvcache/config.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::codec {

// W bytes moved in chunks of the largest power of two (up to 16) dividing W:
// one access for the widths lanes use (1, 2, 4, 8, 16), a few for a KIVI
// key channel of, say, 24 values of 2 bits (6 bytes: three 2-byte accesses).
template <std::int32_t W>
struct LaneBytes {
  static_assert(W >= 1, "at least one byte");
  // The access size, and so the alignment the address needs.
  static constexpr std::int32_t kChunk =
      W % 16 == 0 ? 16 : (W % 8 == 0 ? 8 : (W % 4 == 0 ? 4 : (W % 2 == 0 ? 2 : 1)));
  static constexpr std::int32_t kWords = (W + 3) / 4;
  std::uint32_t words[kWords] = {};

  // Byte i (< W) is `byte` (< 256); bytes are set once each.
  KVCACHE_HD void set(std::int32_t i, std::uint32_t byte) { words[i / 4] |= byte << (8 * (i % 4)); }
  KVCACHE_HD std::uint32_t get(std::int32_t i) const {
    return (words[i / 4] >> (8 * (i % 4))) & 0xffu;
  }

  KVCACHE_HD void store(std::uint8_t* at) const {
#if defined(__CUDA_ARCH__)
    KVCACHE_UNROLL
    for (std::int32_t c = 0; c < W / kChunk; ++c) {
      if constexpr (kChunk == 16) {
        reinterpret_cast<uint4*>(at)[c] =
            make_uint4(words[4 * c], words[4 * c + 1], words[4 * c + 2], words[4 * c + 3]);
      } else if constexpr (kChunk == 8) {
        reinterpret_cast<uint2*>(at)[c] = make_uint2(words[2 * c], words[2 * c + 1]);
      } else if constexpr (kChunk == 4) {
        reinterpret_cast<std::uint32_t*>(at)[c] = words[c];
      } else if constexpr (kChunk == 2) {
        reinterpret_cast<std::uint16_t*>(at)[c] =
            static_cast<std::uint16_t>(words[c / 2] >> (16 * (c % 2)));
      } else {
        at[c] = static_cast<std::uint8_t>(get(c));
      }
    }
#else
    std::memcpy(at, words, W);
#endif
  }

  KVCACHE_HD static LaneBytes load(const std::uint8_t* at) {
    LaneBytes b;
#if defined(__CUDA_ARCH__)
    KVCACHE_UNROLL
    for (std::int32_t c = 0; c < W / kChunk; ++c) {
      if constexpr (kChunk == 16) {
        const uint4 v = reinterpret_cast<const uint4*>(at)[c];
        b.words[4 * c] = v.x;
        b.words[4 * c + 1] = v.y;
        b.words[4 * c + 2] = v.z;
        b.words[4 * c + 3] = v.w;
      } else if constexpr (kChunk == 8) {
        const uint2 v = reinterpret_cast<const uint2*>(at)[c];
        b.words[2 * c] = v.x;
        b.words[2 * c + 1] = v.y;
      } else if constexpr (kChunk == 4) {
        b.words[c] = reinterpret_cast<const std::uint32_t*>(at)[c];
      } else if constexpr (kChunk == 2) {
        b.words[c / 2] |= static_cast<std::uint32_t>(reinterpret_cast<const std::uint16_t*>(at)[c])
                          << (16 * (c % 2));
      } else {
        b.set(c, at[c]);
      }
    }
#else
    std::memcpy(b.words, at, W);
#endif
    return b;
  }

  // From (and to) W bytes in a local array, one set (get) per byte.
  KVCACHE_HD static LaneBytes of(const std::uint8_t (&bytes)[W]) {
    LaneBytes b;
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < W; ++i)
      b.set(i, bytes[i]);
    return b;
  }
  KVCACHE_HD void to(std::uint8_t (&bytes)[W]) const {
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < W; ++i)
      bytes[i] = static_cast<std::uint8_t>(get(i));
  }
};

// The alignment an access of `width` bytes (a LaneBytes<width>) needs.
constexpr std::int64_t access_alignment(std::int64_t width) {
  return width % 16 == 0 ? 16
                         : (width % 8 == 0 ? 8 : (width % 4 == 0 ? 4 : (width % 2 == 0 ? 2 : 1)));
}

}  // namespace kvcache::codec
KVCACHE_EXACT_FP_END
