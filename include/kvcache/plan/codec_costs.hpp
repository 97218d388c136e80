// What each codec costs in memory, for sizing a cache before building one:
// bytes of a block of N tokens, and bytes a codec keeps beside the blocks per
// live sequence (KIVI's ring of recent tokens). One table, used by the
// planner (plan/planner.hpp) and kvcache-replay's --budget-gib.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "kvcache/codec/codecs.hpp"
#include "kvcache/error.hpp"
#include "kvcache/model_shape.hpp"

namespace kvcache::plan {

struct CodecCost {
  std::string_view name;
  std::string_view help;
  // Bytes of one block of `block_tokens` tokens (KVCacheManager's block).
  std::int64_t (*block_bytes)(const ModelShape& shape, std::int32_t block_tokens);
  // Bytes kept outside the blocks for `sequences` live sequences.
  std::int64_t (*fixed_bytes)(const ModelShape& shape, std::int64_t sequences);
};

namespace detail_costs {

// KIVI pages hold one group of G tokens: a block of N tokens is N / G pages.
template <class Codec>
std::int64_t block_bytes(const ModelShape& shape, std::int32_t block_tokens) {
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    if (block_tokens < Codec::kGroup || block_tokens % Codec::kGroup != 0) {
      kvcache::detail::raise<InvalidArgument>(
          "codec {} needs blocks of a multiple of {} tokens, not {}", Codec::name(), Codec::kGroup,
          block_tokens);
    }
    return Codec::block_bytes(shape, Codec::kGroup) * (block_tokens / Codec::kGroup);
  } else {
    return Codec::block_bytes(shape, block_tokens);
  }
}

// KIVI keeps each live sequence's R + G most recent tokens in the model dtype.
template <class Codec>
std::int64_t fixed_bytes(const ModelShape& shape, std::int64_t sequences) {
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    return sequences * (Codec::kResidualTokens + Codec::kGroup) * shape.bytes_per_token();
  } else {
    return 0;
  }
}

template <class Codec>
constexpr CodecCost row(std::string_view name, std::string_view help) {
  return CodecCost{name, help, &block_bytes<Codec>, &fixed_bytes<Codec>};
}

inline constexpr CodecCost kCodecs[] = {
    row<PlainCodec>("plain", "the model dtype"),
    row<Int8Codec<32>>("int8", "int8, a scale per 32 values"),
    row<Fp8Codec<>>("fp8", "fp8 e4m3, a scale per head"),
    row<KiviCodec<4, 32, 128>>("int4", "KIVI int4, group 32, 128 recent tokens exact"),
    row<KiviCodec<2, 32, 128>>("int2", "KIVI int2, group 32, 128 recent tokens exact"),
    row<LowRankCodec<32>>("low-rank-32", "32 coefficients per row over a fitted basis"),
};

}  // namespace detail_costs

inline std::span<const CodecCost> codec_costs() {
  return detail_costs::kCodecs;
}

}  // namespace kvcache::plan
